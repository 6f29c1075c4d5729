package nat

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// A pending checksum must be the transport header's own: one that starts
// before the IP header made the GSO size check read outside the packet
// (a panic, the whole gateway down), and one that points into the IP
// header was written over the masqueraded source address. Both are
// dropped as malformed.
func TestForwardPendingChecksumWhereItBelongs(t *testing.T) {
	port := &offloadSink{sink: sink{done: make(chan struct{})}}
	gw := sinkGateway(t, port, 1500)
	f, off := gsoPacket(gw.MAC(), 4*1448, 1448)
	off.CsumStart = 0
	if !off.Valid(len(f)) {
		t.Fatal("the offload is not valid for its frame: the test tests nothing")
	}
	gw.forward(f, true, off) // panicked
	pkt := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 10))
	gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt), true, bridge.Offload{Flags: bridge.OffloadNeedsCsum, CsumStart: Headroom, CsumOffset: 12})
	if st := gw.Stats(); st.DropMalformed != 2 || port.sent != 0 {
		t.Errorf("DropMalformed %d, %d sent; want both dropped", st.DropMalformed, port.sent)
	}
	// The transport header's own still goes.
	gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt), true, bridge.Offload{Flags: bridge.OffloadNeedsCsum, CsumStart: Headroom + 20, CsumOffset: 6})
	if port.sent != 1 {
		t.Errorf("a UDP packet whose checksum is pending at its place: %d sent, want 1", port.sent)
	}
}

// Addresses no router forwards (multicast, the limited broadcast and the
// subnet's, 0.0.0.0/8, 127.0.0.0/8) are neither forwarded nor, at TTL 1,
// answered: Linux's routing drops them (martians; no multicast routing;
// no ICMP error about a broadcast, RFC 1122 3.2.2).
func TestMartiansNotForwarded(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	dsts := []string{"224.0.0.251", "239.1.2.3", "255.255.255.255", "127.0.0.1", "0.0.0.0", "0.1.2.3", "172.17.255.255"}
	for _, dst := range dsts {
		for _, ttl := range []byte{64, 1} {
			pkt := ipPacket(ctrIP, netip.MustParseAddr(dst), conntrack.ProtoUDP, udpHeader(5353, 5353, 10))
			pkt[8] = ttl
			fillChecksums(pkt)
			gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt), true, bridge.Offload{})
		}
	}
	st := gw.Stats()
	if port.sent != 0 || st.Forwarded != 0 || st.ICMPSent != 0 || st.DropMartian != uint64(2*len(dsts)) {
		t.Errorf("%d sent, stats %+v; want each dropped as martian, nothing sent", port.sent, st)
	}
	if gw.Table().Len() != 0 {
		t.Errorf("%d entries for martians", gw.Table().Len())
	}
}

// A packet to a published port whose TTL runs out once translated (it is
// routed on to the container) draws time exceeded, as Linux's ip_forward
// after DNAT, and leaves no entry: it was dropped with no answer, and its
// entry stayed.
func TestPublishedTTLExpires(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	if _, err := gw.Rules().AddPublish(Publish{Proto: conntrack.ProtoUDP, HostPorts: PortRange{8080, 8080}, ContainerAddr: ctrIP, ContainerPorts: PortRange{80, 80}}); err != nil {
		t.Fatal(err)
	}
	pkt := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, 8080, 10))
	pkt[8] = 1
	fillChecksums(pkt)
	gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, pkt), false, bridge.Offload{})
	st := gw.Stats()
	if st.ICMPSent != 1 || st.DropTTL != 1 || gw.Table().Len() != 0 {
		t.Fatalf("stats %+v, %d entries; want time exceeded sent, no entry", st, gw.Table().Len())
	}
	if msg := port.last[Headroom:]; msg[9] != byte(conntrack.ProtoICMP) || msg[20] != 11 {
		t.Errorf("sent protocol %d type %d, want ICMP time exceeded", msg[9], msg[20])
	}
}

// An ICMP error about a flow (RELATED) loses a hop as any forwarded
// packet does, and one whose TTL runs out is dropped, with no error about
// it: it went on with its TTL untouched.
func TestRelatedLosesHop(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	if _, err := gw.Rules().AddPublish(Publish{Proto: conntrack.ProtoUDP, HostPorts: PortRange{8080, 8080}, ContainerAddr: ctrIP, ContainerPorts: PortRange{80, 80}}); err != nil {
		t.Fatal(err)
	}
	in := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, 8080, 10))
	gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, in), false, bridge.Offload{})
	// The container's port unreachable, about the datagram as it got it.
	got := ipPacket(clientIP, ctrIP, conntrack.ProtoUDP, udpHeader(5000, 80, 10))
	for _, ttl := range []byte{1, 64} {
		msg, err := Unreachable(nil, got, ctrIP, 3)
		if err != nil {
			t.Fatal(err)
		}
		msg[8] = ttl
		putIPv4Checksum(msg)
		before := port.sent
		gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, msg), true, bridge.Offload{})
		switch {
		case ttl == 1 && port.sent != before:
			t.Errorf("an error with TTL 1 was forwarded with TTL %d", port.last[Headroom+8])
		case ttl == 64 && (port.sent != before+1 || port.last[Headroom+8] != 63):
			t.Errorf("an error with TTL 64: %d sent, TTL %d; want one, 63", port.sent-before, port.last[Headroom+8])
		}
	}
	if st := gw.Stats(); st.ICMPSent != 0 {
		t.Errorf("%d ICMP messages sent about an error", st.ICMPSent)
	}
}

// A frame of EtherType IPv4 to the gateway's MAC that holds an IPv6 header
// decodes as IPv6, and is dropped as malformed: the martian check, before
// the IPv6 one, read its addresses as IPv4 and panicked the gateway.
func TestForwardIPv6InIPv4Frame(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	pkt := make([]byte, 40+8)
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:], 8) // payload length
	pkt[6] = 17                            // UDP
	pkt[7] = 64
	copy(pkt[8:24], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
	copy(pkt[24:40], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 2})
	binary.BigEndian.PutUint16(pkt[40:], 5000)
	binary.BigEndian.PutUint16(pkt[42:], 53)
	binary.BigEndian.PutUint16(pkt[44:], 8)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("gateway panicked on an IPv6 packet: %v", r)
		}
	}()
	gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt), true, bridge.Offload{})
	if st := gw.Stats(); st.DropMalformed != 1 {
		t.Errorf("DropMalformed %d, want 1", st.DropMalformed)
	}
}

// A new flow's first packet that the gateway drops as too big (DF, over
// the uplink MTU: fragmentation needed sent) leaves no entry, as in
// Linux, where ip_forward drops the packet before POSTROUTING confirms its
// conntrack entry; the gateway already takes back the entry of a packet
// whose TTL runs out after translation (untrack).
func TestTooBigFirstPacketLeavesNoEntry(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	pkt := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 1600))
	pkt[6] |= 0x40 // DF
	fillChecksums(pkt)
	gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt), true, bridge.Offload{})
	st := gw.Stats()
	if st.DropTooBig != 1 || st.ICMPSent != 1 {
		t.Fatalf("stats %+v, want one too big, fragmentation needed sent", st)
	}
	if n := gw.Table().Len(); n != 0 {
		t.Errorf("%d entries after the flow's only packet was dropped as too big; want 0 (Linux never confirms it)", n)
	}
}

// An IPv4 packet with a source route option (LSRR, SSRR) is dropped, as
// Linux's ip_rcv_options drops it while accept_source_route is 0, its
// default (RFC 7126 4.3.3.1 recommends dropping them).
func TestSourceRoutedNotForwarded(t *testing.T) {
	for _, typ := range []byte{131, 137} { // LSRR, SSRR
		gw, up, _ := recGateway(t)
		l4 := udpHeader(5000, 53, 10)
		pkt := make([]byte, 28+len(l4))
		pkt[0], pkt[8], pkt[9] = 0x47, 64, byte(conntrack.ProtoUDP)
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		a, c := ctrIP.As4(), clientIP.As4()
		copy(pkt[12:], a[:])
		copy(pkt[16:], c[:])
		copy(pkt[20:], []byte{typ, 7, 4, 10, 9, 8, 7, 0}) // one hop, then end of options
		copy(pkt[28:], l4)
		fillChecksums(pkt)
		fromBridgeIP(gw, pkt)
		if len(up.frames) != 0 {
			t.Errorf("option %d: source-routed packet forwarded: % x", typ, lastIP(up))
		}
	}
}

// A TCP segment with a bad checksum must not change the state of the
// flow it seems to belong to: Linux's conntrack verifies it at
// PRE_ROUTING (nf_conntrack_checksum, 1 by default; tcp_error) and leaves
// the entry alone. Here a corrupted RST from the server ended an
// established, masqueraded connection's entry (CLOSE, 10 s), while both
// ends drop the RST and go on.
func TestBadChecksumRSTKeepsFlow(t *testing.T) {
	gw, up, _ := recGateway(t)
	syn := tcpHeader(40000, 443, 0)
	syn[13] = conntrack.TCPSyn
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoTCP, syn))
	sport := binary.BigEndian.Uint16(lastIP(up)[20:])
	sa := tcpHeader(443, sport, 0)
	sa[13] = conntrack.TCPSyn | conntrack.TCPAck
	binary.BigEndian.PutUint32(sa[4:], 0x50000000)
	binary.BigEndian.PutUint32(sa[8:], 0x01020305)
	fromUplinkIP(gw, ipPacket(clientIP, hostIP, conntrack.ProtoTCP, sa))
	ack := tcpHeader(40000, 443, 0)
	binary.BigEndian.PutUint32(ack[4:], 0x01020305)
	binary.BigEndian.PutUint32(ack[8:], 0x50000001)
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoTCP, ack))

	orig := conntrack.Tuple{Proto: conntrack.ProtoTCP, Src: ctrIP, Dst: clientIP, SrcPort: 40000, DstPort: 443}
	if e, _, ok := gw.Table().Get(0, orig); !ok || e.TCPState != conntrack.TCPEstablished {
		t.Fatalf("entry %+v %v, want established", e, ok)
	}
	rst := tcpHeader(443, sport, 0)
	rst[13] = conntrack.TCPRst
	binary.BigEndian.PutUint32(rst[4:], 0x50000001)
	bad := ipPacket(clientIP, hostIP, conntrack.ProtoTCP, rst)
	bad[20+16] ^= 0x55 // corrupt the TCP checksum
	fromUplinkIP(gw, bad)
	if e, _, ok := gw.Table().Get(0, orig); !ok || e.TCPState != conntrack.TCPEstablished {
		t.Errorf("after a RST with a bad checksum: entry state %v (found %v), want established", e.TCPState, ok)
	}
}

// A host with no listener answers every TCP segment but a RST with a RST
// (RFC 793 3.4, "If the connection does not exist (CLOSED)"; RFC 9293
// 3.10.7.1), as Linux does: a SYN|ACK or a FIN to a closed port is
// invalid for conntrack (tcp_new refuses to open an entry), and goes to
// the stack untracked, which resets it. The gateway resets SYNs and
// plain ACKs but dropped these silently.
func TestClosedPortResetsEverySegment(t *testing.T) {
	for _, fl := range []uint8{conntrack.TCPSyn | conntrack.TCPAck, conntrack.TCPFin | conntrack.TCPAck} {
		gw, up, br := recGateway(t)
		seg := tcpHeader(40000, 22, 0)
		seg[13] = fl
		fromUplinkIP(gw, ipPacket(clientIP, hostIP, conntrack.ProtoTCP, seg))
		fromBridgeIP(gw, ipPacket(ctrIP, gwIP, conntrack.ProtoTCP, seg))
		for _, side := range []struct {
			name string
			s    *recSink
		}{{"uplink", up}, {"bridge", br}} {
			p := lastIP(side.s)
			if p == nil || p[9] != byte(conntrack.ProtoTCP) || p[33]&conntrack.TCPRst == 0 {
				t.Errorf("flags %#02x from the %s: got % x, want a RST", fl, side.name, p)
				continue
			}
			if err := verify(p); err != nil {
				t.Errorf("flags %#02x from the %s: %v", fl, side.name, err)
			}
			// With ACK set, the RST's sequence number is the ACK's.
			if got := binary.BigEndian.Uint32(p[24:]); got != binary.BigEndian.Uint32(seg[8:]) {
				t.Errorf("flags %#02x: RST seq %#x, want %#x", fl, got, binary.BigEndian.Uint32(seg[8:]))
			}
		}
		if n := gw.Table().Len(); n != 0 {
			t.Errorf("flags %#02x: %d entries", fl, n)
		}
	}
}

// The port unreachable for a datagram to one of the gateway's addresses
// comes from that address, as Linux's __icmp_send takes saddr =
// iph->daddr for a packet it delivered locally (RTCF_LOCAL): a container
// sending to the host address 192.168.2.116 hears from 192.168.2.116,
// not from 172.17.0.1.
func TestPortUnreachableFromAddressSentTo(t *testing.T) {
	gw, up, br := recGateway(t)
	fromBridgeIP(gw, ipPacket(ctrIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, 9999, 10)))
	fromUplinkIP(gw, ipPacket(clientIP, gwIP, conntrack.ProtoUDP, udpHeader(5000, 9999, 10)))
	for _, c := range []struct {
		name string
		s    *recSink
		want netip.Addr
	}{{"bridge", br, hostIP}, {"uplink", up, gwIP}} {
		p := lastIP(c.s)
		if p == nil || p[9] != byte(conntrack.ProtoICMP) || p[20] != 3 || p[21] != 3 {
			t.Fatalf("%s: got % x, want port unreachable", c.name, p)
		}
		if src := netip.AddrFrom4([4]byte(p[12:16])); src != c.want {
			t.Errorf("port unreachable to the %s from %v, want %v (the address the datagram was sent to)", c.name, src, c.want)
		}
	}
}

// An ICMP redirect about a translated flow is dropped, as Linux's NAT
// drops it (nf_nat_icmp_reply_translation): the better first hop it names
// is one for the gateway's uplink address, on a link the container is not
// on. It went to the container, translated. Other errors about the flow
// still go.
func TestRedirectAboutTranslatedFlowDropped(t *testing.T) {
	gw, up, br := recGateway(t)
	router := netip.MustParseAddr("192.168.2.1")
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 10)))
	if len(up.frames) != 1 {
		t.Fatalf("%d frames out for a masqueraded datagram, want 1", len(up.frames))
	}
	sent := append([]byte(nil), lastIP(up)...)
	hop := netip.MustParseAddr("192.168.2.254").As4()
	redirect, err := ICMPError(nil, sent, router, icmpRedirect, 1, binary.BigEndian.Uint32(hop[:]))
	if err != nil {
		t.Fatal(err)
	}
	fromUplinkIP(gw, redirect)
	if len(br.frames) != 0 {
		t.Fatalf("a redirect about a masqueraded flow went to the bridge: % x", lastIP(br))
	}
	if st := gw.Stats(); st.DropRewrite != 1 {
		t.Errorf("DropRewrite %d, want the redirect counted", st.DropRewrite)
	}
	unreachable, err := Unreachable(nil, sent, router, 1)
	if err != nil {
		t.Fatal(err)
	}
	fromUplinkIP(gw, unreachable)
	if len(br.frames) != 1 {
		t.Fatalf("%d frames to the bridge for host unreachable, want 1", len(br.frames))
	}
}

// One client port to two published ports of one container port (two
// rules, or a host port range to one port) would be the same flow for
// the container: the second's reply tuple is taken. Linux's NAT gives it
// another source port (the null binding of POSTROUTING, whose unique
// tuple search moves the port within its class), so a UDP socket that
// queries both ports hears from both, each answer from the port its
// query went to; it is not refused.
func TestPublishedClashRemapsClientPort(t *testing.T) {
	gw, up, br := recGateway(t)
	for _, spec := range []string{"8080:172.17.0.4:80/udp", "8081:172.17.0.4:80/udp"} {
		p, err := ParsePublish(spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gw.Rules().AddPublish(p); err != nil {
			t.Fatal(err)
		}
	}
	shown := make([]uint16, 2)
	for i, hp := range []uint16{8080, 8081} {
		fromUplinkIP(gw, ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, hp, 4)))
		if len(br.frames) != i+1 {
			t.Fatalf("datagram to port %d: %d frames to the bridge, want %d (stats %+v)", hp, len(br.frames), i+1, gw.Stats())
		}
		p := lastIP(br)
		if err := verify(p); err != nil {
			t.Fatal(err)
		}
		if src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])); src != clientIP || dst != ctrIP || binary.BigEndian.Uint16(p[22:]) != 80 {
			t.Fatalf("datagram to port %d reached the bridge as % x", hp, p)
		}
		shown[i] = binary.BigEndian.Uint16(p[20:])
	}
	if shown[0] != 5000 || shown[1] == 5000 || shown[1] < 1024 {
		t.Fatalf("client port shown as %d and %d; want 5000, then another from 1024-65535", shown[0], shown[1])
	}
	for i, want := range []uint16{8080, 8081} {
		fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(80, shown[i], 4)))
		p := lastIP(up)
		if len(up.frames) != i+1 || verify(p) != nil {
			t.Fatalf("answer %d: %d frames out, want %d", i, len(up.frames), i+1)
		}
		if src, sp, dp := netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(p[20:]), binary.BigEndian.Uint16(p[22:]); src != hostIP || sp != want || dp != 5000 {
			t.Errorf("answer to %d left from %v:%d to port %d, want %v:%d to 5000", shown[i], src, sp, dp, hostIP, want)
		}
	}
}

// A publish rule applies to packets for the gateway's own addresses only,
// as Docker's DOCKER chain, which PREROUTING enters for dst-type LOCAL: a
// rule naming an address that is not the gateway's (a neighbour's on the
// uplink's link) must not take the containers' own traffic to that
// address. It went to the container of the rule, hairpinned, and never
// reached the neighbour.
func TestPublishOtherHostAddressLeavesTrafficAlone(t *testing.T) {
	gw, up, br := recGateway(t)
	p, err := ParsePublish("192.168.2.104:53:172.17.0.4:53/udp") // clientIP, a neighbour on the uplink's link
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Rules().AddPublish(p); err != nil {
		t.Fatal(err)
	}
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 4)))
	if len(br.frames) != 0 {
		t.Errorf("a container's datagram to %v:53 came back to the bridge: % x", clientIP, lastIP(br))
	}
	pkt := lastIP(up)
	if len(up.frames) != 1 || pkt == nil {
		t.Fatalf("%d frames out of the uplink, want the datagram masqueraded", len(up.frames))
	}
	if src, dst := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])); src != hostIP || dst != clientIP || binary.BigEndian.Uint16(pkt[22:]) != 53 {
		t.Errorf("left as % x, want %v to %v:53", pkt, hostIP, clientIP)
	}
}

// A packet the uplink has no route for (no next hop, a destination off
// its link) draws net unreachable, as Linux's ip_error answers a packet
// ip_route_input found no route for, so the container's connection fails
// at once; and it leaves no entry (nor a masquerade port held), as Linux
// never confirms it. It was dropped without a word, its entry kept.
func TestNoRouteNetUnreachable(t *testing.T) {
	gw, up, br := recGateway(t) // the uplink 192.168.2.116/24 has no next hop
	sent := ipPacket(ctrIP, router4, conntrack.ProtoUDP, udpHeader(5000, 53, 4))
	fromBridgeIP(gw, append([]byte(nil), sent...))
	if len(up.frames) != 0 {
		t.Errorf("%d frames out of the uplink for an unroutable destination", len(up.frames))
	}
	if n := gw.Table().Len(); n != 0 {
		t.Errorf("%d entries for a packet that had no route, want none", n)
	}
	p := lastIP(br)
	if p == nil || p[9] != byte(conntrack.ProtoICMP) || p[20] != 3 || p[21] != 0 {
		t.Fatalf("to the bridge: % x, want net unreachable", p)
	}
	if err := verify(p); err != nil {
		t.Fatal(err)
	}
	if src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])); src != gwIP || dst != ctrIP {
		t.Errorf("net unreachable from %v to %v, want %v to %v", src, dst, gwIP, ctrIP)
	}
	if q := p[28:]; len(q) < 28 || netip.AddrFrom4([4]byte(q[12:16])) != ctrIP || binary.BigEndian.Uint16(q[20:]) != 5000 {
		t.Errorf("quote % x, want the datagram as the container sent it", q)
	}
	// On its link, the uplink reaches it.
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 4)))
	if len(up.frames) != 1 {
		t.Errorf("%d frames out for an on-link destination, want 1", len(up.frames))
	}
}

// A packet to one of the gateway's addresses of a protocol it has no
// handler for (SCTP, GRE, ...) draws protocol unreachable from the address
// it was sent to, as Linux's ip_protocol_deliver_rcu answers one that no
// protocol and no raw socket takes: an SCTP client learns at once that
// nothing listens. It was dropped without a word.
func TestProtocolUnreachable(t *testing.T) {
	gw, up, br := recGateway(t)
	for _, c := range []struct {
		name   string
		proto  conntrack.Proto
		inside bool
		to     netip.Addr
		s      *recSink
	}{
		{"sctp from the bridge", 132, true, gwIP, br},
		{"gre from outside", 47, false, hostIP, up},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := ctrIP
			if !c.inside {
				src = clientIP
			}
			pkt := ipPacket(src, c.to, c.proto, make([]byte, 16))
			if c.inside {
				fromBridgeIP(gw, pkt)
			} else {
				fromUplinkIP(gw, pkt)
			}
			p := lastIP(c.s)
			if p == nil || p[9] != byte(conntrack.ProtoICMP) || p[20] != 3 || p[21] != 2 {
				t.Fatalf("got % x, want protocol unreachable", p)
			}
			if err := verify(p); err != nil {
				t.Fatal(err)
			}
			if from, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])); from != c.to || dst != src {
				t.Errorf("protocol unreachable from %v to %v, want %v to %v", from, dst, c.to, src)
			}
		})
	}
}

// With NoMasquerade (Docker's --ip-masq=false), a container's flows leave
// with its own address, and their replies come back to it: Docker's
// FORWARD rules accept ESTABLISHED and RELATED traffic to the bridge (and
// nothing new). They were dropped, as if only the gateway's addresses
// could be reached from outside, so no flow of a container worked.
func TestNoMasqueradeRepliesReachContainer(t *testing.T) {
	br, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	up := &recSink{sink: sink{done: make(chan struct{})}}
	link, err := NewLinkUplink(LinkUplinkConfig{Port: up, Addr: netip.MustParsePrefix("192.168.2.116/24")})
	if err != nil {
		t.Fatal(err)
	}
	link.l.neigh.learn(clientIP, clientMAC, link.now(), true)
	gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix("172.17.0.1/16"), Uplink: link, NoMasquerade: true,
		Conntrack: conntrack.Config{ExpireInterval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	bo := &recSink{sink: sink{done: make(chan struct{})}}
	t.Cleanup(func() { close(bo.done) })
	gw.inside.port, gw.inside.off = bo, nil
	gw.inside.neigh.learn(ctrIP, ctrMAC, gw.now(), true)

	// Nothing new gets in.
	fromUplinkIP(gw, ipPacket(clientIP, ctrIP, conntrack.ProtoUDP, udpHeader(53, 5000, 4)))
	if len(bo.frames) != 0 || gw.Table().Len() != 0 {
		t.Fatalf("a new flow from outside to a container: %d frames to the bridge, %d entries; want none", len(bo.frames), gw.Table().Len())
	}
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 4)))
	if p := lastIP(up); p == nil || netip.AddrFrom4([4]byte(p[12:16])) != ctrIP {
		t.Fatalf("out: % x, want the container's own address", p)
	}
	fromUplinkIP(gw, ipPacket(clientIP, ctrIP, conntrack.ProtoUDP, udpHeader(53, 5000, 4)))
	if len(bo.frames) != 1 {
		t.Fatalf("the reply: %d frames to the bridge, want 1 (stats %+v)", len(bo.frames), gw.Stats())
	}
	if p := lastIP(bo); verify(p) != nil || netip.AddrFrom4([4]byte(p[16:20])) != ctrIP || p[8] != 63 {
		t.Errorf("reply reached the bridge as % x", p)
	}
}

// An ICMP error from the bridge about a masqueraded flow, sent by another
// address than the quoted packet's destination (a router on the bridge
// side), leaves from the masquerade address, as Linux's SRC manip sets the
// outer source (nf_nat_icmp_reply_translation): never from a bridge
// address.
func TestErrorFromBridgeRouterMasqueraded(t *testing.T) {
	gw, up, _ := recGateway(t)
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 4)))
	pub := binary.BigEndian.Uint16(lastIP(up)[20:])
	got := ipPacket(clientIP, ctrIP, conntrack.ProtoUDP, udpHeader(53, 5000, 4)) // the reply as delivered
	src, qdst, qdport := errorFromBridgeRouter(t, gw, up, got)
	if src != hostIP || qdst != hostIP || qdport != pub {
		t.Fatalf("error from %v quoting %v:%d, want from %v quoting %v:%d", src, qdst, qdport, hostIP, hostIP, pub)
	}
}

// The same for a published port's flow: an error from a router on the
// bridge about the client's packet, on its way to the client, leaves
// from the published address, quoting the packet as the client sent it.
func TestErrorFromBridgeRouterPublished(t *testing.T) {
	gw, up, br := recGateway(t)
	if _, err := gw.Rules().AddPublish(Publish{Proto: conntrack.ProtoUDP, HostPorts: PortRange{8080, 8080}, ContainerAddr: ctrIP, ContainerPorts: PortRange{80, 80}}); err != nil {
		t.Fatal(err)
	}
	fromUplinkIP(gw, ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(4000, 8080, 4)))
	got := lastIP(br) // the client's packet as delivered
	if got == nil || netip.AddrFrom4([4]byte(got[16:20])) != ctrIP {
		t.Fatalf("the client's packet was not delivered: %+v", gw.Stats())
	}
	src, qdst, qdport := errorFromBridgeRouter(t, gw, up, got)
	if src != hostIP || qdst != hostIP || qdport != 8080 {
		t.Fatalf("error from %v quoting %v:%d, want from %v quoting %v:8080", src, qdst, qdport, hostIP, hostIP)
	}
}

// errorFromBridgeRouter has a router on the bridge (172.17.0.5) send a
// time exceeded about the packet got, as delivered to the bridge, and
// returns the outer source, and the quoted destination and port, of the
// error the gateway forwards on the uplink.
func errorFromBridgeRouter(t *testing.T, gw *Gateway, up *recSink, got []byte) (src, qdst netip.Addr, qdport uint16) {
	t.Helper()
	e, err := TimeExceeded(make([]byte, 600), got, netip.MustParseAddr("172.17.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	n := len(up.frames)
	fromBridgeIP(gw, append([]byte(nil), e...))
	if len(up.frames) != n+1 {
		t.Fatalf("not forwarded: %+v", gw.Stats())
	}
	out := lastIP(up)
	if err := verify(out); err != nil {
		t.Fatal(err)
	}
	return netip.AddrFrom4([4]byte(out[12:16])), netip.AddrFrom4([4]byte(out[28+16 : 28+20])), binary.BigEndian.Uint16(out[28+22:])
}
