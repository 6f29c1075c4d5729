package conntrack

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestDecode(t *testing.T) {
	c4, s4 := ap("192.0.2.10:40000"), ap("198.51.100.200:443")
	c6, s6 := ap("[2001:db8:1:2::3]:40000"), ap("[fd12:3456:789a::42]:443")
	tcp4 := Tuple{Src: c4.Addr(), Dst: s4.Addr(), SrcPort: 40000, DstPort: 443, Proto: ProtoTCP}
	tcp6 := Tuple{Src: c6.Addr(), Dst: s6.Addr(), SrcPort: 40000, DstPort: 443, Proto: ProtoTCP}

	synOpts := []byte{2, 4, 5, 0xb4, 1, 3, 3, 9, 4, 2} // MSS, NOP, window scale 9, SACK-permitted
	sack := []byte{1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 50, 0, 0, 0, 60, 0, 0, 0, 99}

	withExt := func(b []byte, ext ...byte) []byte {
		// Insert extension headers after the IPv6 header; ext starts
		// with the next-header value the fixed header should carry, and
		// 0xff in ext stands for the transport protocol.
		out := append([]byte{}, b[:40]...)
		next := out[6]
		out[6] = ext[0]
		body := append([]byte{}, ext[1:]...)
		for i, v := range body {
			if v == 0xff {
				body[i] = next
			}
		}
		out = append(out, body...)
		out = append(out, b[40:]...)
		binary.BigEndian.PutUint16(out[4:], uint16(len(out)-40))
		return out
	}
	padded := append(udpPacket(c4, s4, 3), 0, 0, 0, 0) // Ethernet padding

	for _, tc := range []struct {
		name   string
		b      []byte
		kind   Kind
		tuple  Tuple
		quoted Tuple
		check  func(*testing.T, *Packet)
	}{
		{name: "ipv4 syn with options", b: tcpPacket(c4, s4, seg{flags: TCPSyn, seq: 7, opts: synOpts}), kind: KindFlow, tuple: tcp4,
			check: func(t *testing.T, p *Packet) {
				if p.TCP.WScale != 9 || !p.TCP.SACKPerm || p.TCP.Seq != 7 || p.Len != 52 || p.L4Off != 20 {
					t.Fatalf("%+v", p.TCP)
				}
			}},
		{name: "ipv4 ack with sack", b: tcpPacket(c4, s4, seg{flags: TCPAck, seq: 8, ack: 1, opts: sack, data: 10}), kind: KindFlow, tuple: tcp4,
			check: func(t *testing.T, p *Packet) {
				if !p.TCP.HasSACK || p.TCP.SACKMax != 99 || p.TCP.WScale != -1 || p.TCP.DataLen != 10 {
					t.Fatalf("%+v", p.TCP)
				}
			}},
		{name: "ipv4 udp with padding", b: padded, kind: KindFlow,
			tuple: Tuple{Src: c4.Addr(), Dst: s4.Addr(), SrcPort: 40000, DstPort: 443, Proto: ProtoUDP},
			check: func(t *testing.T, p *Packet) {
				if p.Len != 31 {
					t.Fatalf("Len %d, want 31", p.Len)
				}
			}},
		{name: "ipv4 echo", b: icmpPacket(c4.Addr(), s4.Addr(), 8, 0, 99, nil), kind: KindFlow, tuple: ICMPTuple(c4.Addr(), s4.Addr(), 8, 0, 99)},
		{name: "ipv6 tcp after hop-by-hop and destination options", kind: KindFlow, tuple: tcp6,
			b: withExt(tcpPacket(c6, s6, seg{flags: TCPSyn}), 0, 60, 0, 1, 4, 0, 0, 0, 0, 0xff, 0, 1, 4, 0, 0, 0, 0)},
		{name: "ipv6 atomic fragment", kind: KindFlow, tuple: tcp6,
			b: withExt(tcpPacket(c6, s6, seg{flags: TCPSyn}), 44, 0xff, 0, 0, 0, 0, 0, 0, 1)},
		{name: "ipv6 fragment", kind: KindFragment, tuple: Tuple{Src: c6.Addr(), Dst: s6.Addr(), Proto: ProtoTCP},
			b: withExt(tcpPacket(c6, s6, seg{flags: TCPSyn}), 44, 0xff, 0, 0, 1, 0, 0, 0, 1)},
		{name: "ipv4 later fragment", kind: KindFragment, tuple: Tuple{Src: c4.Addr(), Dst: s4.Addr(), Proto: ProtoUDP},
			b: func() []byte { b := udpPacket(c4, s4, 8); b[7] = 1; return b }()},
		{name: "ipv6 echo", b: icmpPacket(c6.Addr(), s6.Addr(), 128, 0, 5, nil), kind: KindFlow, tuple: ICMPTuple(c6.Addr(), s6.Addr(), 128, 0, 5)},
		{name: "ipv4 unreachable quoting tcp", kind: KindICMPError, quoted: tcp4,
			tuple: Tuple{Src: s4.Addr(), Dst: c4.Addr(), Proto: ProtoICMP},
			b:     icmpPacket(s4.Addr(), c4.Addr(), 3, 1, 0, tcpPacket(c4, s4, seg{flags: TCPSyn})[:28])},
		{name: "ipv6 too big quoting tcp", kind: KindICMPError, quoted: tcp6,
			tuple: Tuple{Src: s6.Addr(), Dst: c6.Addr(), Proto: ProtoICMPv6},
			b:     icmpPacket(s6.Addr(), c6.Addr(), 2, 0, 0, tcpPacket(c6, s6, seg{flags: TCPSyn})[:48])},
		{name: "ipv4 time exceeded quoting echo", kind: KindICMPError, quoted: ICMPTuple(c4.Addr(), s4.Addr(), 8, 0, 3),
			tuple: Tuple{Src: s4.Addr(), Dst: c4.Addr(), Proto: ProtoICMP},
			b:     icmpPacket(s4.Addr(), c4.Addr(), 11, 0, 0, icmpPacket(c4.Addr(), s4.Addr(), 8, 0, 3, nil))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Packet
			if err := p.Decode(tc.b); err != nil {
				t.Fatal(err)
			}
			if p.Kind != tc.kind || p.Tuple != tc.tuple || p.Quoted != tc.quoted {
				t.Fatalf("got %v %v quoting %v\nwant %v %v quoting %v", p.Kind, p.Tuple, p.Quoted, tc.kind, tc.tuple, tc.quoted)
			}
			if tc.check != nil {
				tc.check(t, &p)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	c4, s4 := ap("192.0.2.10:40000"), ap("198.51.100.200:443")
	c6, s6 := ap("[2001:db8:1:2::3]:40000"), ap("[fd12:3456:789a::42]:443")
	set := func(b []byte, i int, v ...byte) []byte { copy(b[i:], v); return b }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version 5", set(udpPacket(c4, s4, 1), 0, 0x55)},
		{"short ipv4", udpPacket(c4, s4, 1)[:19]},
		{"ihl below 5", set(udpPacket(c4, s4, 1), 0, 0x44)},
		{"ihl beyond the packet", set(udpPacket(c4, s4, 0)[:24], 0, 0x4f)},
		{"total length beyond the packet", set(udpPacket(c4, s4, 1), 2, 0, 200)},
		{"total length below the header", set(udpPacket(c4, s4, 1), 2, 0, 10)},
		{"short ipv6", udpPacket(c6, s6, 1)[:39]},
		{"ipv6 payload beyond the packet", set(udpPacket(c6, s6, 1), 4, 1, 0)},
		{"ipv6 extension header overflow", set(ipPacket(c6.Addr(), s6.Addr(), 0, []byte{17, 200, 0, 0, 0, 0, 0, 0}), 0, 0x60)},
		{"ipv6 extension loop", ipPacket(c6.Addr(), s6.Addr(), 0, make([]byte, 8*10))},
		{"two ipv6 fragment headers", ipPacket(c6.Addr(), s6.Addr(), 44, []byte{44, 0, 0, 0, 0, 0, 0, 1, 17, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 2, 0, 8, 0, 0})},
		{"truncated tcp", tcpPacket(c4, s4, seg{flags: TCPSyn})[:39]},
		{"tcp data offset below 5", set(tcpPacket(c4, s4, seg{flags: TCPSyn}), 32, 0x40)},
		{"tcp data offset beyond the segment", set(tcpPacket(c4, s4, seg{flags: TCPSyn}), 32, 0xf0)},
		{"tcp syn+fin", tcpPacket(c4, s4, seg{flags: TCPSyn | TCPFin})},
		{"tcp no flags", tcpPacket(c4, s4, seg{})},
		{"tcp fin without ack", tcpPacket(c4, s4, seg{flags: TCPFin})},
		{"udp length beyond the datagram", set(udpPacket(c4, s4, 1), 24, 0, 100)},
		{"udp length below 8", set(udpPacket(c4, s4, 1), 24, 0, 7)},
		{"short icmp", ipPacket(c4.Addr(), s4.Addr(), ProtoICMP, []byte{8, 0, 0, 0})},
		{"icmp router advertisement", icmpPacket(c4.Addr(), s4.Addr(), 9, 0, 0, nil)},
		{"icmp in ipv6", ipPacket(c6.Addr(), s6.Addr(), ProtoICMP, make([]byte, 8))},
		{"icmpv6 in ipv4", ipPacket(c4.Addr(), s4.Addr(), ProtoICMPv6, make([]byte, 8))},
		{"error quoting an error", icmpPacket(s4.Addr(), c4.Addr(), 3, 0, 0, icmpPacket(c4.Addr(), s4.Addr(), 3, 0, 0, nil)[:28])},
		{"error quoting too little", icmpPacket(s4.Addr(), c4.Addr(), 3, 0, 0, udpPacket(c4, s4, 0)[:24])},
		{"error quoting ipv6 in icmp", icmpPacket(s4.Addr(), c4.Addr(), 3, 0, 0, udpPacket(c6, s6, 0))},
		{"ipv4-mapped ipv6 source", udpPacket(ap("[::ffff:192.0.2.10]:1"), s6, 1)},
		{"ipv4-mapped ipv6 destination", udpPacket(c6, ap("[::ffff:198.51.100.200]:1"), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Packet
			err := p.Decode(tc.b)
			if !errors.Is(err, ErrMalformed) || p.Kind != KindInvalid {
				t.Fatalf("Decode: %v, kind %v", err, p.Kind)
			}
		})
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	bs := [][]byte{
		tcpPacket(ap("192.0.2.10:1"), ap("198.51.100.200:2"), seg{flags: TCPSyn, opts: []byte{3, 3, 7}}),
		udpPacket(ap("[2001:db8::1]:1"), ap("[fd00::2]:2"), 10),
		icmpPacket(ip("198.51.100.200"), ip("192.0.2.10"), 3, 3, 0, udpPacket(ap("192.0.2.10:1"), ap("198.51.100.200:2"), 0)),
	}
	var p Packet
	if n := testing.AllocsPerRun(100, func() {
		for _, b := range bs {
			p.Decode(b)
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestTupleReverse(t *testing.T) {
	for _, tp := range []Tuple{
		udpTuple("192.0.2.1:1", "198.51.100.2:2"),
		ICMPTuple(ip("192.0.2.1"), ip("198.51.100.2"), 13, 0, 9),
		ICMPTuple(ip("2001:db8::1"), ip("fd00::2"), 128, 0, 9),
		{Src: ip("192.0.2.1"), Dst: ip("198.51.100.2"), Proto: 132},
	} {
		r, ok := tp.Reverse()
		rr, ok2 := r.Reverse()
		if !ok || !ok2 || rr != tp || r.Src != tp.Dst {
			t.Errorf("%v reversed %v, back %v", tp, r, rr)
		}
	}
	if _, ok := ICMPTuple(ip("192.0.2.1"), ip("198.51.100.2"), 9, 0, 0).Reverse(); ok {
		t.Error("a router advertisement has no reply")
	}
	if got := ICMPTuple(ip("192.0.2.1"), ip("198.51.100.2"), 8, 0, 9).String(); got != "src=192.0.2.1 dst=198.51.100.2 type=8 code=0 id=9" {
		t.Error(got)
	}
}

// An ICMPv6 error may quote the first fragment of a fragmented datagram:
// RFC 8200 section 4.5 has the receiver that gives up reassembly send Time
// Exceeded (code 1, fragment reassembly time exceeded) quoting the
// fragment with offset zero, and a router whose next link is narrower than
// a first fragment sends Packet Too Big quoting it. That fragment holds the
// whole transport header, so the error is RELATED to its flow, as for
// IPv4 (decodeQuoted accepts a quoted IPv4 first fragment, MF set) and as
// in Linux: ipv6_get_l4proto, which nf_ct_get_tuplepr uses on the quoted
// packet, refuses a fragment header only when its offset is non-zero
// (frag_off & ~0x7), ignoring the M flag. A later fragment (no ports)
// stays unusable.
func TestICMPv6ErrorQuotingFirstFragment(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	c, s := ap("[2001:db8:1:2::3]:50001"), ap("[fd12:3456:789a::42]:9999")
	flow := track(t, tbl, udpPacket(c, s, 2000))

	// The datagram's first fragment as c sent it: IPv6 header, fragment
	// header (next header UDP, offset 0, M set), UDP header and data.
	quote := func(off uint16, more bool) []byte {
		udp := udpBytes(c.Port(), s.Port(), 2000)[:1200]
		fh := make([]byte, 8+len(udp))
		fh[0] = byte(ProtoUDP)
		fo := off << 3
		if more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], 0x12345678)
		copy(fh[8:], udp)
		q := ipPacket(c.Addr(), s.Addr(), 44, fh)
		return q[:1232-48] // what fits in a 1280-byte ICMPv6 error
	}
	for _, tc := range []struct {
		name string
		typ  uint8
		code uint8
	}{
		{"reassembly time exceeded", 3, 1},
		{"packet too big", 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Packet
			// From s (reassembly timeout) or a router (too big), to c.
			if err := p.Decode(icmpPacket(s.Addr(), c.Addr(), tc.typ, tc.code, 0, quote(0, true))); err != nil {
				t.Fatalf("error quoting a first fragment: %v; want it decoded as an ICMP error", err)
			}
			if p.Kind != KindICMPError || p.Quoted != udpTuple(c.String(), s.String()) {
				t.Fatalf("decoded %v quoting %v", p.Kind, p.Quoted)
			}
			res, err := tbl.Track(0, &p, nil)
			if err != nil || res.Class != ClassRelated || res.ID != flow.ID || res.Dir != Reply {
				t.Fatalf("classified %+v, %v; want RELATED to entry %d, reply direction", res, err, flow.ID)
			}
		})
	}
	// A later fragment quoted carries no ports: still unusable.
	var p Packet
	if err := p.Decode(icmpPacket(s.Addr(), c.Addr(), 3, 1, 0, quote(150, false))); err == nil {
		t.Fatalf("error quoting a later fragment decoded as %v quoting %v", p.Kind, p.Quoted)
	}
}

// A quote whose protocol is the other family's ICMP (IPv6 next header 1,
// IPv4 protocol 58) is no usable quote: Decode refuses such packets
// outside a quote (errVersion), and must not report an ICMP tuple of the
// wrong protocol for them inside one.
func TestDecodeQuotedICMPOfOtherFamily(t *testing.T) {
	c4, s4 := ap("192.0.2.10:40000"), ap("198.51.100.200:443")
	c6, s6 := ap("[2001:db8:1:2::3]:40000"), ap("[fd12:3456:789a::42]:443")
	echo4 := []byte{8, 0, 0, 0, 0, 7, 0, 1}   // ICMP echo request, id 7
	echo6 := []byte{128, 0, 0, 0, 0, 7, 0, 1} // ICMPv6 echo request, id 7
	for name, b := range map[string][]byte{
		"ipv6 quoting next header 1": icmpPacket(s6.Addr(), c6.Addr(), 1, 4, 0, ipPacket(c6.Addr(), s6.Addr(), ProtoICMP, echo4)),
		"ipv4 quoting protocol 58":   icmpPacket(s4.Addr(), c4.Addr(), 3, 3, 0, ipPacket(c4.Addr(), s4.Addr(), ProtoICMPv6, echo6)),
	} {
		var p Packet
		if err := p.Decode(b); err == nil {
			t.Errorf("%s: decodes as %v quoting %v (%v)", name, p.Kind, p.Quoted, p.Quoted.Proto)
		}
	}
}
