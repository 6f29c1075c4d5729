package nat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/conntrack"
)

func TestFragNeeded(t *testing.T) {
	gw4, gw6 := netip.MustParseAddr("172.17.0.1"), netip.MustParseAddr("fd00:1111::1")
	big4 := ipPacket(cont4, client4, conntrack.ProtoTCP, tcpHeader(40000, 443, 1460))
	big4[6] |= 0x40
	fillChecksums(big4)
	big6 := ipPacket(cont6, client6, conntrack.ProtoTCP, tcpHeader(40000, 443, 1440))
	for _, tc := range []struct {
		name      string
		build     func([]byte) ([]byte, error)
		offending []byte
		typ, code uint8
		info      uint32
		from      netip.Addr
		size      int
	}{
		{"frag needed", func(b []byte) ([]byte, error) { return FragNeeded(b, big4, gw4, 1400) }, big4, 3, 4, 1400, gw4, 576},
		{"packet too big", func(b []byte) ([]byte, error) { return FragNeeded(b, big6, gw6, 1280) }, big6, 2, 0, 1280, gw6, 1280},
		{"time exceeded v4", func(b []byte) ([]byte, error) { return TimeExceeded(b, big4, gw4) }, big4, 11, 0, 0, gw4, 576},
		{"time exceeded v6", func(b []byte) ([]byte, error) { return TimeExceeded(b, big6, gw6) }, big6, 3, 0, 0, gw6, 1280},
		{"port unreachable v4", func(b []byte) ([]byte, error) { return Unreachable(b, big4, gw4, 3) }, big4, 3, 3, 0, gw4, 576},
		{"a router's parameter problem", func(b []byte) ([]byte, error) { return ICMPError(b, big4, router4, 12, 0, 9<<24) }, big4, 12, 0, 9 << 24, router4, 576},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, 0, 1500)
			out, err := tc.build(buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) > tc.size {
				t.Errorf("%d bytes, at most %d allowed", len(out), tc.size)
			}
			if err := verify(out); err != nil {
				t.Fatal(err)
			}
			var p conntrack.Packet
			if err := p.Decode(out); err != nil || p.Kind != conntrack.KindICMPError {
				t.Fatalf("decodes as %v, %v", p.Kind, err)
			}
			want := decode(tc.offending).Tuple
			if p.Quoted != want || p.Tuple.Src != tc.from || p.Tuple.Dst != want.Src {
				t.Errorf("error %v → %v quoting %v", p.Tuple.Src, p.Tuple.Dst, p.Quoted)
			}
			icmp := out[p.L4Off:]
			if icmp[0] != tc.typ || icmp[1] != tc.code || binary.BigEndian.Uint32(icmp[4:]) != tc.info {
				t.Errorf("type %d code %d info %d", icmp[0], icmp[1], binary.BigEndian.Uint32(icmp[4:]))
			}
			if !bytes.HasPrefix(tc.offending, icmp[8:]) {
				t.Errorf("quote is not the packet's beginning")
			}
			if &out[0] != &buf[:1][0] {
				t.Errorf("not built in the caller's buffer")
			}
		})
	}
	out := make([]byte, 0, 1500)
	if n := testing.AllocsPerRun(50, func() { FragNeeded(out, big4, gw4, 1400) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func TestICMPErrorRefused(t *testing.T) {
	gw := netip.MustParseAddr("172.17.0.1")
	icmpErr := ipPacket(router4, cont4, conntrack.ProtoICMP, icmpHeader(3, 3, 0, make([]byte, 28)))
	later := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 20))
	binary.BigEndian.PutUint16(later[6:], 100)
	mcast := ipPacket(cont4, netip.MustParseAddr("224.0.0.251"), conntrack.ProtoUDP, udpHeader(5353, 5353, 0))
	bcast := ipPacket(cont4, netip.MustParseAddr("255.255.255.255"), conntrack.ProtoUDP, udpHeader(68, 67, 0))
	unspec := ipPacket(netip.IPv4Unspecified(), client4, conntrack.ProtoUDP, udpHeader(68, 67, 0))
	mcast6 := ipPacket(cont6, netip.MustParseAddr("ff02::fb"), conntrack.ProtoUDP, udpHeader(5353, 5353, 0))
	icmp6Err := ipPacket(router6, cont6, conntrack.ProtoICMPv6, icmpHeader(1, 4, 0, make([]byte, 48)))
	for _, tc := range []struct {
		name string
		err  error
		fn   func() ([]byte, error)
	}{
		{"about an icmp error", ErrNoICMP, func() ([]byte, error) { return TimeExceeded(nil, icmpErr, gw) }},
		{"about an icmpv6 error", ErrNoICMP, func() ([]byte, error) { return TimeExceeded(nil, icmp6Err, host6) }},
		{"later fragment", ErrNoICMP, func() ([]byte, error) { return TimeExceeded(nil, later, gw) }},
		{"multicast destination", ErrNoICMP, func() ([]byte, error) { return TimeExceeded(nil, mcast, gw) }},
		{"broadcast destination", ErrNoICMP, func() ([]byte, error) { return FragNeeded(nil, bcast, gw, 576) }},
		{"unspecified source", ErrNoICMP, func() ([]byte, error) { return TimeExceeded(nil, unspec, gw) }},
		{"ipv6 multicast time exceeded", ErrNoICMP, func() ([]byte, error) { return TimeExceeded(nil, mcast6, host6) }},
		{"ipv6 multicast too big is allowed", nil, func() ([]byte, error) { return FragNeeded(nil, mcast6, host6, 1280) }},
		{"family", ErrMismatch, func() ([]byte, error) { return TimeExceeded(nil, mcast6, gw) }},
		{"ICMPError is IPv4's", ErrMismatch, func() ([]byte, error) { return ICMPError(nil, mcast6, host6, 3, 1, 0) }},
		{"malformed", ErrMalformed, func() ([]byte, error) { return TimeExceeded(nil, later[:15], gw) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.fn()
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
		})
	}
}

func TestEchoReply(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"ipv4", ipPacket(client4, host4, conntrack.ProtoICMP, icmpHeader(8, 0, 0x4242, []byte("0123456789")))},
		{"ipv6", ipPacket(client6, host6, conntrack.ProtoICMPv6, icmpHeader(128, 0, 0x4242, []byte("0123456789")))},
		// Identifier, sequence and data all zero: the reply's message sums
		// to zero, and only a checksum of 0xffff verifies.
		{"ipv4 all zeros", ipPacket(client4, host4, conntrack.ProtoICMP, []byte{8, 0, 0, 0, 0, 0, 0, 0})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := decode(tc.pkt).Tuple
			orig := bytes.Clone(tc.pkt)
			pkt := tc.pkt
			if n := testing.AllocsPerRun(10, func() {
				copy(pkt, orig)
				if err := EchoReply(pkt); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("%v allocations", n)
			}
			want, _ := req.Reverse()
			if got := decode(pkt).Tuple; got != want {
				t.Errorf("reply %v, want %v", got, want)
			}
			if err := verify(pkt); err != nil {
				t.Error(err)
			}
			if err := EchoReply(pkt); !errors.Is(err, ErrMismatch) {
				t.Errorf("reply to a reply: %v", err)
			}
		})
	}
	udp := ipPacket(client4, host4, conntrack.ProtoUDP, udpHeader(1, 2, 0))
	if err := EchoReply(udp); !errors.Is(err, ErrMismatch) {
		t.Errorf("udp: %v", err)
	}
}

// An ICMP error about a packet the gateway itself sent (its echo reply, a
// RST) is RELATED to the gateway's own flow and is for the gateway: Linux
// delivers it to the local stack (icmp_rcv), nothing leaves. (It was
// "forwarded" to the gateway's own uplink address, ARPing for itself.)
func TestRelatedErrorAboutOwnFlowNotForwarded(t *testing.T) {
	gw, up, br := recGateway(t)
	router := netip.MustParseAddr("192.168.2.1")
	req := ipPacket(clientIP, hostIP, conntrack.ProtoICMP, icmpHeader(8, 0, 99, []byte("ping")))
	fromUplinkIP(gw, req)
	if len(up.frames) != 1 {
		t.Fatalf("%d frames for a ping, want the echo reply", len(up.frames))
	}
	rep := append([]byte(nil), lastIP(up)...)
	// A router cannot deliver the reply and says so to the gateway.
	msg, err := Unreachable(nil, rep, router, 1)
	if err != nil {
		t.Fatal(err)
	}
	fromUplinkIP(gw, msg)
	if len(up.frames) != 1 || len(br.frames) != 0 {
		t.Errorf("the error about the gateway's own echo reply went on: %d frames out of the uplink (last % x), %d to the bridge; want none",
			len(up.frames)-1, up.frames[len(up.frames)-1], len(br.frames))
	}
}
