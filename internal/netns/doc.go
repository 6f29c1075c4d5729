// Package netns makes throwaway Linux network namespaces for tests and
// benchmarks: create one, run Go code or a command inside it on a locked
// OS thread, give it veth links and addresses, and close it.
//
// Everything it creates lives in namespaces it created, so a test that
// uses it sends no packet into the machine's own namespace. The project's
// tests run under `unshare --net` besides (see .ci/test), and
// CheckPrivate lets a test refuse to run anywhere else.
//
// It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the ip command from
// iproute2 for links and addresses.
package netns
