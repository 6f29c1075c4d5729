package nat

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/testclock"
)

// Addresses that differ from each other in every byte, so a rewrite that
// touches the wrong byte cannot pass by luck.
var (
	cont4   = netip.MustParseAddr("172.17.0.4")
	host4   = netip.MustParseAddr("192.168.2.116")
	client4 = netip.MustParseAddr("203.0.113.99")
	router4 = netip.MustParseAddr("198.51.100.1")
	cont6   = netip.MustParseAddr("fd00:1111:2222:3333:4444:5555:6666:7777")
	host6   = netip.MustParseAddr("2001:db8:89ab:cdef:0123:4567:89ab:cdef")
	client6 = netip.MustParseAddr("2a01:4f8:1:2:3:4:5:6")
	router6 = netip.MustParseAddr("2001:db8:ffff::1")
)

// manualClock is a Clock tests advance by hand.
type manualClock = testclock.Manual

func newClock() *manualClock { return testclock.New() }

func tcpHeader(sport, dport uint16, payload int) []byte {
	b := make([]byte, 20+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x01020304)
	b[12], b[13] = 5<<4, conntrack.TCPAck
	binary.BigEndian.PutUint16(b[14:], 65535)
	for i := 20; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func udpHeader(sport, dport uint16, payload int) []byte {
	b := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	for i := 8; i < len(b); i++ {
		b[i] = byte(i * 13)
	}
	return b
}

func icmpHeader(typ, code uint8, id uint16, body []byte) []byte {
	b := make([]byte, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], 1)
	copy(b[8:], body)
	return b
}

// ipPacket wraps l4 in an IP header and fills in every checksum.
func ipPacket(src, dst netip.Addr, proto conntrack.Proto, l4 []byte) []byte {
	var b []byte
	if src.Is4() {
		b = make([]byte, 20+len(l4))
		b[0], b[8], b[9] = 0x45, 64, byte(proto)
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], 0xbeef)
		s, d := src.As4(), dst.As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		copy(b[20:], l4)
	} else {
		b = make([]byte, 40+len(l4))
		b[0], b[6], b[7] = 0x60, byte(proto), 64
		binary.BigEndian.PutUint16(b[4:], uint16(len(l4)))
		s, d := src.As16(), dst.As16()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
		copy(b[40:], l4)
	}
	fillChecksums(b)
	return b
}

// l4Cksum is the offset of the checksum in a transport header, or -1.
func l4Cksum(p conntrack.Proto) int {
	switch p {
	case conntrack.ProtoTCP:
		return 16
	case conntrack.ProtoUDP:
		return 6
	case conntrack.ProtoICMP, conntrack.ProtoICMPv6:
		return 2
	}
	return -1
}

// pseudoSum is the sum of the pseudo-header of a transport checksum.
func pseudoSum(pkt []byte, h *ipHeader, n int) uint16 {
	if h.proto == conntrack.ProtoICMP {
		return 0
	}
	so, do, an := h.addrOffs()
	s := Sum(pkt[so:so+an], 0)
	s = Sum(pkt[do:do+an], s)
	var w [4]byte
	binary.BigEndian.PutUint16(w[0:], uint16(h.proto))
	binary.BigEndian.PutUint16(w[2:], uint16(n))
	return Sum(w[:], s)
}

// fillChecksums computes the IPv4 header and transport checksums of pkt
// from scratch.
func fillChecksums(pkt []byte) {
	h, err := parseIP(pkt, false)
	if err != nil {
		panic(err)
	}
	if !h.v6 {
		putCksum(pkt, 10, 0)
		putCksum(pkt, 10, Checksum(pkt[:h.l4]))
	}
	l4 := pkt[h.l4:h.end]
	ck := l4Cksum(h.proto)
	if ck < 0 || len(l4) < ck+2 {
		return
	}
	putCksum(l4, ck, 0)
	c := ^Sum(l4, pseudoSum(pkt, &h, len(l4)))
	if h.proto == conntrack.ProtoUDP && c == 0 {
		c = 0xffff
	}
	putCksum(l4, ck, c)
}

// verify checks from scratch every checksum of pkt that can be checked,
// including those of the packet an ICMP error quotes.
func verify(pkt []byte) error {
	h, err := parseIP(pkt, false)
	if err != nil {
		return err
	}
	if !h.v6 && Sum(pkt[:h.l4], 0) != 0xffff {
		return fmt.Errorf("bad IPv4 header checksum %#04x", cksumAt(pkt, 10))
	}
	if h.frag {
		return nil
	}
	if err := verifyL4(pkt, &h, h.end); err != nil {
		return err
	}
	l4 := pkt[h.l4:h.end]
	if (h.proto == conntrack.ProtoICMP || h.proto == conntrack.ProtoICMPv6) && len(l4) >= 8 && isICMPError(h.proto, l4[0]) {
		quote := l4[8:]
		q, err := parseIP(quote, true)
		if err != nil {
			return nil
		}
		if !q.v6 && Sum(quote[:q.l4], 0) != 0xffff {
			return fmt.Errorf("bad quoted IPv4 header checksum")
		}
		if full, err := parseIP(quote, false); err == nil && full.end == len(quote) && !full.frag {
			if err := verifyL4(quote, &full, full.end); err != nil {
				return fmt.Errorf("quoted: %w", err)
			}
		}
	}
	return nil
}

func verifyL4(pkt []byte, h *ipHeader, end int) error {
	l4 := pkt[h.l4:end]
	ck := l4Cksum(h.proto)
	if ck < 0 || len(l4) < ck+2 {
		return nil
	}
	if h.proto == conntrack.ProtoUDP && !h.v6 && cksumAt(l4, ck) == 0 {
		return nil
	}
	if s := Sum(l4, pseudoSum(pkt, h, len(l4))); s != 0xffff {
		return fmt.Errorf("bad %v checksum %#04x (sum %#04x)", h.proto, cksumAt(l4, ck), s)
	}
	return nil
}

// canonical reports whether pkt's checksums verify and have the form a
// computation from scratch gives (never 0xffff except a UDP checksum that
// is not zero), the condition for a rewrite and its reverse to give back
// the same bytes.
func canonical(pkt []byte) bool {
	if verify(pkt) != nil {
		return false
	}
	ok := true
	check := func(b []byte, h *ipHeader, quote bool) {
		if !h.v6 && cksumAt(b, 10) == 0xffff {
			ok = false
		}
		ck := l4Cksum(h.proto)
		if ck < 0 || h.end-h.l4 < ck+2 {
			return
		}
		c := cksumAt(b[h.l4:], ck)
		switch {
		case h.proto == conntrack.ProtoUDP && h.v6 && c == 0:
			ok = false
		case h.proto == conntrack.ProtoICMP && c == 0xffff && !quote && allZero(b[h.l4:h.end], ck):
			// The one message whose checksum from scratch is 0xffff.
		case h.proto != conntrack.ProtoUDP && c == 0xffff:
			ok = false
		}
	}
	h, _ := parseIP(pkt, false)
	check(pkt, &h, false)
	l4 := pkt[h.l4:h.end]
	if (h.proto == conntrack.ProtoICMP || h.proto == conntrack.ProtoICMPv6) && len(l4) >= 8 && isICMPError(h.proto, l4[0]) {
		if q, err := parseIP(l4[8:], true); err == nil {
			check(l4[8:], &q, true)
		}
	}
	return ok
}

func decode(pkt []byte) conntrack.Packet {
	var p conntrack.Packet
	if err := p.Decode(pkt); err != nil {
		panic(err)
	}
	return p
}

// recSink is a bridge.Port that keeps a copy of every frame written to it.
type recSink struct {
	sink
	frames [][]byte
}

func (s *recSink) WriteFrames(b [][]byte) (int, error) {
	for _, f := range b {
		s.frames = append(s.frames, append([]byte(nil), f...))
	}
	return s.sink.WriteFrames(b)
}

// recGateway is sinkGateway with the frames it sends to the bridge kept
// too: the router port's writes go to bridgeOut instead of the bridge. The
// container ctrIP and the uplink neighbours clientIP and 192.168.2.1 are
// resolved.
func recGateway(t *testing.T) (gw *Gateway, uplinkOut, bridgeOut *recSink) {
	t.Helper()
	uplinkOut = &recSink{sink: sink{done: make(chan struct{})}}
	gw = sinkGateway(t, uplinkOut, 1500)
	up := gw.uplink.(*LinkUplink)
	up.l.neigh.learn(netip.MustParseAddr("192.168.2.1"), bridge.MustParseMAC("0a:00:00:00:00:01"), up.now(), true)
	bridgeOut = &recSink{sink: sink{done: make(chan struct{})}}
	t.Cleanup(func() { close(bridgeOut.done) })
	gw.inside.port, gw.inside.off = bridgeOut, nil
	gw.inside.neigh.learn(ctrIP, ctrMAC, gw.now(), true)
	return gw, uplinkOut, bridgeOut
}

// fromBridgeIP sends the IP packet pkt from the container (ctrMAC).
func fromBridgeIP(gw *Gateway, pkt []byte) {
	gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt), true, bridge.Offload{})
}

// fromUplinkIP sends the IP packet pkt from outside.
func fromUplinkIP(gw *Gateway, pkt []byte) {
	up := gw.uplink.(*LinkUplink)
	gw.forward(frame(up.MAC(), clientMAC, etherTypeIP4, pkt), false, bridge.Offload{})
}

// lastIP is the IP packet of the last frame s got, or nil.
func lastIP(s *recSink) []byte {
	if len(s.frames) == 0 {
		return nil
	}
	return s.frames[len(s.frames)-1][Headroom:]
}
