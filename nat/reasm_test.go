package nat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/usernat/usernat/conntrack"
)

func newReassembler(t *testing.T, cfg ReassemblerConfig) (*Reassembler, *manualClock) {
	t.Helper()
	clk := newClock()
	cfg.Clock = clk
	r, err := NewReassembler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, clk
}

// fragment4 splits an IPv4 packet with Fragment and returns copies.
func fragment4(t testing.TB, pkt []byte, mtu int) [][]byte {
	var out [][]byte
	if err := Fragment(pkt, mtu, nil, func(f []byte) { out = append(out, bytes.Clone(f)) }); err != nil {
		t.Fatal(err)
	}
	return out
}

// fragment6 splits an IPv6 packet whose unfragmentable part is its first
// unfrag bytes into fragments of size bytes of data (a multiple of 8).
func fragment6(pkt []byte, unfrag, size int, id uint32) [][]byte {
	var nextOff int
	next := pkt[6]
	if unfrag == 40 {
		nextOff = 6
	} else {
		nextOff = 40 // one extension header in the tests
		next = pkt[40]
	}
	data := pkt[unfrag:]
	var out [][]byte
	for pos := 0; pos < len(data); pos += size {
		n := min(size, len(data)-pos)
		f := make([]byte, unfrag+8+n)
		copy(f, pkt[:unfrag])
		f[nextOff] = 44
		fh := f[unfrag:]
		fh[0] = next
		fo := uint16(pos)
		if pos+n < len(data) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		copy(f[unfrag+8:], data[pos:pos+n])
		binary.BigEndian.PutUint16(f[4:], uint16(len(f)-40))
		out = append(out, f)
	}
	return out
}

// withHopByHop inserts an 8-byte hop-by-hop options header in an IPv6
// packet.
func withHopByHop(pkt []byte) []byte {
	b := make([]byte, len(pkt)+8)
	copy(b, pkt[:40])
	b[40], b[41] = pkt[6], 0 // next header, length 0: 8 bytes of padding
	b[42], b[43] = 1, 4      // PadN
	b[6] = 0
	copy(b[48:], pkt[40:])
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	return b
}

func TestReassemble(t *testing.T) {
	udp4 := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1000, 2000, 3001))
	udp6 := ipPacket(cont6, client6, conntrack.ProtoUDP, udpHeader(1000, 2000, 3001))
	hbh6 := withHopByHop(udp6)
	for _, tc := range []struct {
		name  string
		pkt   []byte
		frags [][]byte
	}{
		{"ipv4", udp4, fragment4(t, udp4, 1000)},
		{"ipv4 tiny", udp4, fragment4(t, udp4, 68)},
		{"ipv6", udp6, fragment6(udp6, 40, 1232, 7)},
		{"ipv6 hop-by-hop", hbh6, fragment6(hbh6, 48, 512, 8)},
	} {
		for _, order := range []string{"in order", "reversed", "shuffled"} {
			t.Run(tc.name+" "+order, func(t *testing.T) {
				r, _ := newReassembler(t, ReassemblerConfig{})
				frags := slicesClone(tc.frags)
				switch order {
				case "reversed":
					for i, j := 0, len(frags)-1; i < j; i, j = i+1, j-1 {
						frags[i], frags[j] = frags[j], frags[i]
					}
				case "shuffled":
					rand.New(rand.NewPCG(5, 6)).Shuffle(len(frags), func(i, j int) { frags[i], frags[j] = frags[j], frags[i] })
				}
				buf := make([]byte, 0, 65536)
				for i, f := range frags {
					out, err := r.Add(f, buf)
					if err != nil {
						t.Fatalf("fragment %d: %v", i, err)
					}
					if (out != nil) != (i == len(frags)-1) {
						t.Fatalf("fragment %d of %d: complete=%v", i, len(frags), out != nil)
					}
					if out == nil {
						continue
					}
					if !bytes.Equal(out, tc.pkt) {
						t.Fatalf("reassembled\n%x\nwant\n%x", out, tc.pkt)
					}
					if &out[0] != &buf[:1][0] {
						t.Errorf("result not in the caller's buffer")
					}
				}
				st := r.Stats()
				if st.Reassembled != 1 || st.InProgress != 0 || st.Bytes != 0 {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}

func slicesClone(s [][]byte) [][]byte {
	out := make([][]byte, len(s))
	for i := range s {
		out[i] = bytes.Clone(s[i])
	}
	return out
}

func TestReassembleOverlap(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		var frags [][]byte
		if v6 {
			frags = fragment6(ipPacket(cont6, client6, conntrack.ProtoUDP, udpHeader(1, 2, 2000)), 40, 512, 9)
		} else {
			frags = fragment4(t, ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 2000)), 532)
		}
		r, clk := newReassembler(t, ReassemblerConfig{})
		if _, err := r.Add(frags[0], nil); err != nil {
			t.Fatal(err)
		}
		// The same fragment again is ignored.
		if out, err := r.Add(frags[0], nil); out != nil || err != nil {
			t.Fatalf("v6=%v duplicate: %v", v6, err)
		}
		// A fragment starting inside the first overlaps it.
		bad := bytes.Clone(frags[1])
		if v6 {
			binary.BigEndian.PutUint16(bad[42:], 504|1)
		} else {
			binary.BigEndian.PutUint16(bad[6:], 0x2000|(504/8))
			putCksum(bad, 10, 0)
			putCksum(bad, 10, Checksum(bad[:20]))
		}
		if _, err := r.Add(bad, nil); !errors.Is(err, ErrOverlap) {
			t.Fatalf("v6=%v overlap: %v", v6, err)
		}
		// RFC 5722: the rest of the datagram is dropped too.
		for _, f := range frags[1:] {
			if out, err := r.Add(f, nil); out != nil || !errors.Is(err, ErrOverlap) {
				t.Fatalf("v6=%v after overlap: %v", v6, err)
			}
		}
		st := r.Stats()
		if st.Overlaps != 1 || st.Duplicates != 1 || st.Bytes != 0 {
			t.Errorf("v6=%v stats %+v", v6, st)
		}
		// After the timeout the datagram may come again.
		clk.Advance(31 * time.Second)
		var out []byte
		for _, f := range frags {
			o, err := r.Add(f, nil)
			if err != nil {
				t.Fatalf("v6=%v after timeout: %v", v6, err)
			}
			out = o
		}
		if out == nil {
			t.Fatalf("v6=%v: not reassembled after the dead datagram expired", v6)
		}
	}
}

func TestReassembleTimeout(t *testing.T) {
	frags := fragment4(t, ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 2000)), 1000)
	r, clk := newReassembler(t, ReassemblerConfig{Timeout: 10 * time.Second})
	if _, err := r.Add(frags[0], nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(9 * time.Second)
	r.Expire()
	if st := r.Stats(); st.InProgress != 1 {
		t.Fatalf("expired early: %+v", st)
	}
	clk.Advance(time.Second)
	r.Expire()
	if st := r.Stats(); st.InProgress != 0 || st.Timeouts != 1 || st.Bytes != 0 {
		t.Fatalf("stats after timeout %+v", st)
	}
	// The rest alone does not complete it.
	for _, f := range frags[1:] {
		if out, err := r.Add(f, nil); out != nil || err != nil {
			t.Fatalf("%x, %v", out, err)
		}
	}
}

func TestReassembleLimits(t *testing.T) {
	pkt := func(id uint16) [][]byte {
		p := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 2000))
		binary.BigEndian.PutUint16(p[4:], id)
		fillChecksums(p)
		return fragment4(t, p, 1000)
	}
	t.Run("datagrams", func(t *testing.T) {
		r, _ := newReassembler(t, ReassemblerConfig{MaxDatagrams: 2})
		for id := range uint16(3) {
			_, err := r.Add(pkt(id)[0], nil)
			if want := id == 2; errors.Is(err, ErrReassemblyFull) != want {
				t.Fatalf("datagram %d: %v", id, err)
			}
		}
		if st := r.Stats(); st.Full != 1 || st.InProgress != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		r, _ := newReassembler(t, ReassemblerConfig{MaxBytes: 2500})
		f := pkt(1)
		if _, err := r.Add(f[0], nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Add(f[1], nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Add(pkt(2)[0], nil); !errors.Is(err, ErrReassemblyFull) {
			t.Fatalf("over MaxBytes: %v", err)
		}
		if st := r.Stats(); st.Bytes > 2500 || st.InProgress != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestReassembleMalformed(t *testing.T) {
	whole := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 100))
	odd := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 101))
	binary.BigEndian.PutUint16(odd[6:], 0x2000)
	huge := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 100))
	binary.BigEndian.PutUint16(huge[6:], 0x1fff) // offset 65528
	for _, tc := range []struct {
		name string
		pkt  []byte
		err  error
	}{
		{"not a fragment", whole, ErrNotFragment},
		{"length not a multiple of 8", odd, ErrMalformed},
		{"beyond 65535", huge, ErrMalformed},
		{"truncated", whole[:10], ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newReassembler(t, ReassemblerConfig{})
			if _, err := r.Add(tc.pkt, nil); !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
		})
	}
	t.Run("ends disagree", func(t *testing.T) {
		frags := fragment4(t, ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 2000)), 1000)
		r, _ := newReassembler(t, ReassemblerConfig{})
		last := frags[len(frags)-1]
		if _, err := r.Add(last, nil); err != nil {
			t.Fatal(err)
		}
		short := bytes.Clone(last[:len(last)-8])
		binary.BigEndian.PutUint16(short[2:], uint16(len(short)))
		if _, err := r.Add(short, nil); !errors.Is(err, ErrMalformed) {
			t.Fatalf("second last fragment with another end: %v", err)
		}
	})
}

func TestFragment(t *testing.T) {
	// Options: record route (not copied) and a copied security option.
	opts := []byte{7, 7, 4, 0, 0, 0, 0, 0x82, 4, 0xaa, 0xbb, 1}
	base := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 3000))
	pkt := make([]byte, len(base)+len(opts))
	copy(pkt, base[:20])
	copy(pkt[20:], opts)
	copy(pkt[20+len(opts):], base[20:])
	pkt[0] = 0x45 + byte(len(opts)/4)
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	fillChecksums(pkt)

	frags := fragment4(t, pkt, 1500)
	if len(frags) != 3 {
		t.Fatalf("%d fragments", len(frags))
	}
	var payload []byte
	for i, f := range frags {
		if len(f) > 1500 {
			t.Errorf("fragment %d: %d bytes", i, len(f))
		}
		if Sum(f[:int(f[0]&15)*4], 0) != 0xffff {
			t.Errorf("fragment %d: bad header checksum", i)
		}
		ihl := int(f[0]&15) * 4
		want := 20 + len(opts)
		if i > 0 {
			want = 24 // only the 4-byte copied option
			if !bytes.Equal(f[20:24], []byte{0x82, 4, 0xaa, 0xbb}) {
				t.Errorf("fragment %d options %x", i, f[20:ihl])
			}
		}
		if ihl != want {
			t.Errorf("fragment %d: header %d bytes, want %d", i, ihl, want)
		}
		fo := binary.BigEndian.Uint16(f[6:])
		if int(fo&0x1fff)*8 != len(payload) || (fo&0x2000 != 0) != (i < 2) {
			t.Errorf("fragment %d: offset/flags %#04x at %d", i, fo, len(payload))
		}
		payload = append(payload, f[ihl:]...)
	}
	if !bytes.Equal(payload, pkt[20+len(opts):]) {
		t.Error("payload differs")
	}
	// And they reassemble to the packet.
	r, _ := newReassembler(t, ReassemblerConfig{})
	var out []byte
	for _, f := range frags {
		var err error
		if out, err = r.Add(f, nil); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out, pkt) {
		t.Errorf("reassembled differs")
	}

	// A fragment splits into fragments of the original datagram.
	sub := fragment4(t, frags[1], 600)
	for i, f := range sub {
		fo := binary.BigEndian.Uint16(f[6:])
		if fo&0x2000 == 0 {
			t.Errorf("sub-fragment %d lost MF", i)
		}
	}
	if binary.BigEndian.Uint16(sub[0][6:])&0x1fff != binary.BigEndian.Uint16(frags[1][6:])&0x1fff {
		t.Errorf("sub-fragment offset does not start at the fragment's")
	}

	df := bytes.Clone(pkt)
	df[6] |= 0x40
	if err := Fragment(df, 1500, nil, func([]byte) {}); !errors.Is(err, ErrDontFragment) {
		t.Errorf("DF: %v", err)
	}
	v6 := ipPacket(cont6, client6, conntrack.ProtoUDP, udpHeader(1, 2, 3000))
	if err := Fragment(v6, 1500, nil, func([]byte) {}); !errors.Is(err, ErrDontFragment) {
		t.Errorf("IPv6: %v", err)
	}
	n := 0
	if err := Fragment(v6, 9000, nil, func([]byte) { n++ }); err != nil || n != 1 {
		t.Errorf("a packet that fits: %v, %d emitted", err, n)
	}
	buf := make([]byte, 1500)
	if a := testing.AllocsPerRun(20, func() { Fragment(pkt, 1500, buf, func([]byte) {}) }); a != 0 {
		t.Errorf("%v allocations with a buffer", a)
	}
}

// FuzzReassemble: no panic and memory within bounds, whatever arrives.
func FuzzReassemble(f *testing.F) {
	udp4 := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 300))
	udp6 := ipPacket(cont6, client6, conntrack.ProtoUDP, udpHeader(1, 2, 300))
	var seed []byte
	for _, fr := range append(fragment4(f, udp4, 128), fragment6(udp6, 40, 128, 1)...) {
		seed = binary.BigEndian.AppendUint16(seed, uint16(len(fr)))
		seed = append(seed, fr...)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		clk := newClock()
		r, _ := NewReassembler(ReassemblerConfig{MaxDatagrams: 4, MaxBytes: 4096, Clock: clk})
		for len(b) >= 2 {
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if n > len(b) {
				n = len(b)
			}
			out, err := r.Add(b[:n], nil)
			if out != nil {
				if err != nil {
					t.Fatal(err)
				}
				var n int
				if out[0]>>4 == 4 {
					n = int(binary.BigEndian.Uint16(out[2:]))
				} else {
					n = 40 + int(binary.BigEndian.Uint16(out[4:]))
				}
				if n != len(out) {
					t.Fatalf("reassembled %d bytes, header says %d", len(out), n)
				}
			}
			b = b[n:]
			clk.Advance(time.Second)
			if st := r.Stats(); st.Bytes > 4096 || st.InProgress > 4 || st.Bytes < 0 {
				t.Fatalf("limits exceeded: %+v", st)
			}
		}
	})
}
