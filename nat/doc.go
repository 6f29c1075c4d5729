// Package nat is usernat's NAT: the gateway, and the packet layer under it.
//
// [Gateway] (New) is the router port on a bridge, at the subnet's gateway
// address: it answers ARP and ping, forwards between the bridge and an
// [Uplink] with DNAT for published ports, masquerade and hairpin, all
// tracked in a conntrack table, and answers as a router does (time
// exceeded, fragmentation needed, unreachable; rate-limited). The uplink
// is a [LinkUplink] (NewLinkUplink), the gateway's own address on an
// outside Ethernet link such as a TAP device, or a [Terminator], which
// carries the containers' flows itself: nat/hostnet, over host sockets.
//
// The packet layer has no I/O and no goroutines: the gateway calls it for
// every packet that crosses, and it can be used on its own.
//
// The pieces, in the order a packet meets them:
//
//   - [Reassembler] puts IPv4 and IPv6 fragments back together before
//     tracking, within bounds of memory and time; [Fragment] splits an
//     IPv4 packet for a smaller MTU, and [FragNeeded] answers a packet that
//     may not be split, so path MTU discovery works through the gateway.
//   - [Rules] holds the publish (DNAT) and masquerade (SNAT) rules, matched
//     for each new flow ([Rules.MatchPublish], [Rules.MatchMasquerade]) and
//     listed in the `iptables -t nat -L -n` format; [ParsePublish] reads
//     the -p syntax of the command line.
//   - [Allocator] turns the [Mapping] a rule gives into the reply tuple of
//     the new flow's conntrack entry, choosing ports (and ICMP identifiers)
//     the way Linux does; it is the table's [conntrack.Translator].
//   - [Rewrite] and [RewriteICMPError] rewrite a packet in place to the
//     tuple its entry says it must carry, with incremental checksum
//     updates (RFC 1624) of the IPv4 header, TCP, UDP, ICMP and ICMPv6;
//     [DecTTL] and [TimeExceeded] do a router's part, [EchoReply] answers
//     a ping to the gateway.
//
// A gateway's packet path, for a packet pkt entering from the bridge:
//
//	var p conntrack.Packet
//	p.Decode(pkt)                   // KindFragment: reassemble first
//	m, _, _ := rules.MatchMasquerade(p.Tuple, uplinkAddr) // no match: m is empty, nothing translated
//	res, err := table.Track(zone, &p, alloc.Translator(m))
//	if err != nil {                 // errors.Is(err, nat.ErrPortsExhausted): refuse the flow
//		return
//	}
//	to, _ := res.Tuple(1 - res.Dir).Reverse()
//	nat.DecTTL(pkt)                 // false: answer with TimeExceeded
//	nat.Rewrite(pkt, to)            // KindICMPError: RewriteICMPError(pkt, res.Tuple(1-res.Dir))
//
// The per-packet functions (Rewrite, RewriteICMPError, DecTTL, EchoReply,
// the checksum helpers, rule matching) do not allocate and keep no
// reference to the caller's buffers; they return the package's sentinel
// errors (ErrMalformed, ErrFragment, ErrMismatch, ...) wrapped with a
// reason, and leave a packet they refuse unchanged.
package nat
