// Package rtnl is the little rtnetlink the usernat command needs to set up
// the inside of a container namespace: find a link by name, bring it up,
// give it an address, and add a route — what `ip link set up`, `ip addr
// add` and `ip route add` do, without running ip.
//
// A route netlink socket belongs to the network namespace it was created
// in, whichever thread uses it later; Open creates it inside the namespace
// named by a path (on an OS thread locked and setns'd there for the one
// socket call), so every request on the Conn acts on that namespace.
//
// It covers IPv4 and IPv6 addresses and routes in the main table, nothing
// more; requests are acknowledged one at a time, and a kernel error comes
// back as an *OpError wrapping the errno (so errors.Is(err, unix.EEXIST)
// works).
package rtnl
