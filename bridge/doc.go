// Package bridge is usernat's docker0: a learning Ethernet switch in
// userspace. Containers (a network namespace with a TAP device), VMs (a TAP
// handed to QEMU), the gateway and other bridges are its ports; two ports on
// the same bridge talk to each other directly, with ARP and frames, and no
// NAT.
//
// # Ports
//
// A Port is anything that reads and writes Ethernet frames in batches. The
// package has two kinds: TAP, a Linux TAP device created by name (in the
// caller's network namespace or one given by path) or handed in as an open
// file descriptor; and Pipe, an in-memory link whose two ends are the veth
// pair of this world. Users may implement Port themselves; its
// documentation states the contract (buffer ownership, Close, errors).
//
// # Forwarding
//
// The bridge learns each frame's source MAC on the port it came in on,
// refreshing it on every frame and moving it when it shows up on another
// port. Unicast to a known MAC goes out of that one port; broadcast,
// multicast and unknown unicast are flooded to every other port. A frame
// never goes back out of the port it came in on unless that port is in
// hairpin mode.
//
// The forwarding database (FDB) ages entries out after Config.AgeingTime
// (300 s by default, as Linux) measured on an injectable Clock, holds at
// most Config.MaxFDBEntries (8192) entries, evicting the least recently seen
// learned entry when full, accepts static entries, and lists itself as
// `bridge fdb show` does (Bridge.WriteFDB).
//
// Each port has a receive goroutine, which forwards, and a transmit
// goroutine fed by a bounded queue: a slow or dead port fills its own queue
// and drops what overflows, counted, without holding up the others.
// Forwarding a frame to a known MAC takes no write lock and allocates
// nothing.
//
// # Observing
//
// Every port counts frames and bytes each way and drops by reason
// (Attachment.Counters). Any port, or the whole bridge, can be captured to
// a pcap stream that tcpdump and Wireshark read (Attachment.Capture,
// Bridge.Capture); with no capture running this costs one atomic load per
// frame.
//
// # Port security
//
// A port may be pinned to a MAC and, once known, its IP addresses
// (PortSecurity): frames from other sources are dropped and counted. It is
// off by default.
//
// Closing a port or the bridge stops its goroutines and closes its devices;
// closing twice is harmless.
package bridge
