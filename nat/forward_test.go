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
