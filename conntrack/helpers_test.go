package conntrack

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/internal/testclock"
)

// manualClock is a Clock that tests advance by hand.
type manualClock = testclock.Manual

func newClock() *manualClock { return testclock.New() }

// newTable returns a table on a manual clock with no background reaper.
func newTable(t testing.TB, cfg Config) (*Table, *manualClock) {
	t.Helper()
	clk := newClock()
	cfg.Clock = clk
	if cfg.ExpireInterval == 0 {
		cfg.ExpireInterval = -1
	}
	tbl, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tbl.Close() })
	return tbl, clk
}

// ipPacket wraps l4 in an IPv4 or IPv6 header from src to dst.
func ipPacket(src, dst netip.Addr, proto Proto, l4 []byte) []byte {
	if src.Is4() {
		b := make([]byte, 20+len(l4))
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[8] = 64
		b[9] = byte(proto)
		s, d := src.As4(), dst.As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		binary.BigEndian.PutUint16(b[10:], ^ipSum(b[:20]))
		copy(b[20:], l4)
		return b
	}
	b := make([]byte, 40+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(l4)))
	b[6] = byte(proto)
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], l4)
	return b
}

func ipSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

type seg struct {
	flags    uint8
	seq, ack uint32
	win      uint16
	data     int
	opts     []byte
}

func tcpBytes(sport, dport uint16, s seg) []byte {
	optLen := (len(s.opts) + 3) &^ 3
	b := make([]byte, 20+optLen+s.data)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], s.seq)
	binary.BigEndian.PutUint32(b[8:], s.ack)
	b[12] = byte((20+optLen)/4) << 4
	b[13] = s.flags
	w := s.win
	if w == 0 {
		w = 65535
	}
	binary.BigEndian.PutUint16(b[14:], w)
	copy(b[20:], s.opts)
	return b
}

func tcpPacket(src, dst netip.AddrPort, s seg) []byte {
	return ipPacket(src.Addr(), dst.Addr(), ProtoTCP, tcpBytes(src.Port(), dst.Port(), s))
}

func udpBytes(sport, dport uint16, payload int) []byte {
	b := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	return b
}

func udpPacket(src, dst netip.AddrPort, payload int) []byte {
	return ipPacket(src.Addr(), dst.Addr(), ProtoUDP, udpBytes(src.Port(), dst.Port(), payload))
}

func icmpPacket(src, dst netip.Addr, typ, code uint8, id uint16, rest []byte) []byte {
	b := make([]byte, 8+len(rest))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	copy(b[8:], rest)
	p := ProtoICMP
	if !src.Is4() {
		p = ProtoICMPv6
	}
	return ipPacket(src, dst, p, b)
}

func decode(t testing.TB, b []byte) *Packet {
	t.Helper()
	var p Packet
	if err := p.Decode(b); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return &p
}

// track decodes b and tracks it in zone 0 with no translation.
func track(t testing.TB, tbl *Table, b []byte) Result {
	t.Helper()
	res, err := tbl.Track(0, decode(t, b), nil)
	if err != nil {
		t.Fatalf("track: %v", err)
	}
	return res
}

func mustGet(t testing.TB, tbl *Table, tp Tuple) Entry {
	t.Helper()
	e, _, ok := tbl.Get(0, tp)
	if !ok {
		t.Fatalf("no entry for %v", tp)
	}
	return e
}

var (
	ap = netip.MustParseAddrPort
	ip = netip.MustParseAddr
)
