package conntrack

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func fuzzSeeds(f *testing.F) [][]byte {
	c4, s4 := ap("192.0.2.10:40000"), ap("198.51.100.200:443")
	c6, s6 := ap("[2001:db8:1:2::3]:40000"), ap("[fd12:3456:789a::42]:443")
	return [][]byte{
		tcpPacket(c4, s4, seg{flags: TCPSyn, seq: 1, opts: []byte{3, 3, 7, 4, 2}}),
		tcpPacket(s4, c4, seg{flags: TCPSyn | TCPAck, seq: 9, ack: 2}),
		tcpPacket(c4, s4, seg{flags: TCPAck, seq: 2, ack: 10, data: 5}),
		tcpPacket(c4, s4, seg{flags: TCPFin | TCPAck, seq: 7, ack: 10}),
		tcpPacket(s4, c4, seg{flags: TCPRst, seq: 10}),
		tcpPacket(c6, s6, seg{flags: TCPSyn, seq: 1}),
		udpPacket(c4, s4, 4),
		udpPacket(s4, c4, 4),
		udpPacket(c6, s6, 4),
		icmpPacket(c4.Addr(), s4.Addr(), 8, 0, 3, nil),
		icmpPacket(s4.Addr(), c4.Addr(), 0, 0, 3, nil),
		icmpPacket(c6.Addr(), s6.Addr(), 128, 0, 3, nil),
		icmpPacket(s4.Addr(), c4.Addr(), 3, 3, 0, udpPacket(c4, s4, 4)[:28]),
		icmpPacket(s6.Addr(), c6.Addr(), 2, 0, 0, udpPacket(c6, s6, 4)[:48]),
		ipPacket(c4.Addr(), s4.Addr(), 47, make([]byte, 4)),
	}
}

// FuzzDecode: no panic, and what decodes is consistent.
func FuzzDecode(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		err := p.Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || p.Kind != KindInvalid {
				t.Fatalf("error %v with kind %v", err, p.Kind)
			}
			return
		}
		if p.Len > len(b) || p.L4Off > p.Len || !p.Tuple.IsValid() {
			t.Fatalf("decoded %+v from %d bytes", p, len(b))
		}
		if p.Kind == KindFlow && p.Tuple.Proto != ProtoICMP && p.Tuple.Proto != ProtoICMPv6 {
			if r, ok := p.Tuple.Reverse(); !ok {
				t.Fatalf("%v has no reverse", p.Tuple)
			} else if rr, _ := r.Reverse(); rr != p.Tuple {
				t.Fatalf("reverse of reverse %v != %v", rr, p.Tuple)
			}
		}
		if p.Kind == KindICMPError && !p.Quoted.IsValid() {
			t.Fatalf("error quoting %v", p.Quoted)
		}
	})
}

// FuzzTrack feeds a stream of packets, with clock steps, zones and NAT
// choices taken from the input, into a small table, and checks after every
// packet that the cap holds, every entry is found by both its tuples, and
// no tuple belongs to two entries.
func FuzzTrack(f *testing.F) {
	seeds := fuzzSeeds(f)
	var all []byte
	for i, b := range seeds {
		all = append(all, byte(i), byte(len(b)))
		all = append(all, b...)
	}
	f.Add(all)
	for i, b := range seeds {
		f.Add(append([]byte{byte(i * 37), byte(len(b))}, b...))
	}
	f.Fuzz(runFuzzTrack)
}

func runFuzzTrack(t *testing.T, in []byte) {
	{
		tbl, clk := newTable(t, Config{Max: 16})
		gw := netip.MustParseAddr("203.0.113.1")
		nats := []Translator{nil, &snat{gw: gw}, FixedReply{Reply: udpTuple("198.51.100.200:443", "203.0.113.1:1"), Status: SrcNAT}, dnat{}}
		for len(in) >= 2 {
			ctl, n := in[0], int(in[1])
			in = in[2:]
			if n > len(in) {
				n = len(in)
			}
			pkt := in[:n]
			in = in[n:]
			clk.Advance(time.Duration(ctl>>4) * 7 * time.Second)
			var p Packet
			p.Decode(pkt)
			_, err := tbl.Track(Zone(ctl&1), &p, nats[ctl>>1&3])
			if err != nil && !errors.Is(err, ErrTableFull) && !errors.Is(err, ErrReplyInUse) &&
				!errors.Is(err, ErrBadReply) && !errors.Is(err, ErrFragment) && err.Error() != "ports exhausted" {
				t.Fatal(err)
			}
			if ctl&0x0f == 0x0f {
				tbl.Expire(3)
			}
			checkInvariants(t, tbl)
		}
	}
}
