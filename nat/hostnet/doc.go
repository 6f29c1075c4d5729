// Package hostnet is the rootless uplink of a usernat gateway: it carries
// the containers' flows over the host's own sockets, as slirp4netns, pasta
// and gvisor-tap-vsock do, so a process without privileges gives its
// containers the outside world and published ports.
//
// Uplink implements nat.Terminator. Each TCP connection is spliced
// between a host socket and the container, as pasta does: the uplink
// speaks TCP to the container itself, the bytes from the host staying in
// the host socket until the container acknowledges them, with no
// goroutine per connection (one poller watches every host socket). A
// container's SYN opens a host connection to its destination, and is
// answered once that connection is made; a refused host connection
// reaches the container as a reset, an unreachable destination as ICMP
// unreachable, a silent one as nothing. UDP flows are carried over a host
// UDP socket each, and ICMP echo over unprivileged ICMP sockets where the
// host allows them (net.ipv4.ping_group_range), which the same poller
// reads (no goroutine per flow, nor per published UDP port); the ICMP
// errors the network sends about them reach the container from their
// sender, about the container's own datagram. Published ports
// (Uplink.Publish) listen on the host; each client is carried into the
// container from its own address, for TCP and UDP, so the container sees
// who connects; a client on the host's loopback is presented as the
// gateway's address.
//
// Every flow has one entry in the gateway's conntrack table, whose reply
// tuple is the host socket's (so `usernat conntrack -L` shows the source
// translation the host performed), and whose state and counters follow
// the container's side. When the entry leaves the table — idle past its
// timeout, flushed, evicted — the flow's host socket and timers are
// released.
//
// The uplink speaks IPv4, as the gateway does. By default a container
// cannot reach the host's loopback; Config.HostLoopback maps an address
// (slirp4netns's 10.0.2.2) to it.
package hostnet
