// Package api is usernat's control socket: the JSON protocol of the
// slirp4netns API socket, which RootlessKit speaks, and usernat's own
// inspection commands on the same socket.
//
// A client connects to the unix socket, writes one JSON request, and reads
// one JSON response; then the server closes the connection. A request names
// a command and its arguments:
//
//	{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0",
//	    "host_port": 8080, "guest_addr": "172.17.0.4", "guest_port": 80}}
//
// and the response carries either what the command returns or an error:
//
//	{"return": {"id": 1}}
//	{"error": {"desc": "bad request: unknown command \"frobnicate\""}}
//
// The slirp4netns commands are add_hostfwd, list_hostfwd and
// remove_hostfwd (see HostFwd). usernat adds conntrack_list,
// conntrack_flush, nat_list, fdb_list and stats, served when the Backend
// also implements Inspector. add_hostfwd and list_hostfwd take two optional
// fields slirp4netns lacks, host_port_end and guest_port_end, for port
// ranges; a slirp4netns client never sends them and never sees them for a
// single port.
//
// Server serves a Backend on a socket it creates with mode 0600, so only
// its owner can connect; it bounds the size of a request, the time to read
// it and the connections served at once. Client calls a server, or
// slirp4netns itself.
package api
