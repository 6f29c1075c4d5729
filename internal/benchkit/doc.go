// Package benchkit is the shared machinery of the bench/ programs
// (bench/nat, bench/rootless): the client and server that measure traffic
// through a network namespace, the processes the harness starts and
// stops, the usernat binary it builds, the re-execution into private
// namespaces, and the pieces of the report both print.
//
// It is for programs that run as root inside namespaces they created;
// nothing here creates a namespace or touches the machine's own. Progress
// lines and warnings go to the standard logger, which each program sets up
// with its name as the prefix and no flags.
package benchkit
