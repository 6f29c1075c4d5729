package nat

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
)

// naiveSum is RFC 1071 word by word, the reference.
func naiveSum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestSumReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1501)
	for n := 0; n <= 1500; n++ {
		for _, fill := range []string{"random", "ones", "zeros"} {
			b := buf[:n]
			for i := range b {
				switch fill {
				case "random":
					b[i] = byte(r.Uint32())
				case "ones":
					b[i] = 0xff
				default:
					b[i] = 0
				}
			}
			initial := uint16(r.Uint32())
			if got, want := Sum(b, initial), naiveSum(b, initial); got != want {
				t.Fatalf("len %d %s: Sum = %#04x, want %#04x", n, fill, got, want)
			}
			// An unaligned start must not matter either.
			if n > 0 {
				if got, want := Sum(buf[1:n], 0), naiveSum(buf[1:n], 0); got != want {
					t.Fatalf("len %d %s offset 1: Sum = %#04x, want %#04x", n-1, fill, got, want)
				}
			}
			if got, want := Checksum(b), ^naiveSum(b, 0); got != want {
				t.Fatalf("len %d %s: Checksum = %#04x, want %#04x", n, fill, got, want)
			}
			// Chained over an even split.
			if k := n / 2 &^ 1; Sum(b[k:], Sum(b[:k], initial)) != naiveSum(b, initial) {
				t.Fatalf("len %d %s: chained sum differs", n, fill)
			}
		}
	}
}

// withField returns the checksum of b computed from scratch with its
// checksum field (at ck) zeroed.
func scratch(b []byte, ck int) uint16 {
	c := make([]byte, len(b))
	copy(c, b)
	binary.BigEndian.PutUint16(c[ck:], 0)
	return Checksum(c)
}

func TestUpdateChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{2, 4, 16} {
		for i := range 20000 {
			n := 2 * (size/2 + 1 + r.IntN(40))
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			if i%7 == 0 { // sums near zero find the representation bugs
				clear(b)
				b[n-1] = byte(r.IntN(3))
			}
			const ck = 0
			binary.BigEndian.PutUint16(b[ck:], scratch(b, ck))
			orig := binary.BigEndian.Uint16(b[ck:])
			off := 2 + 2*r.IntN((n-2-size)/2+1)
			old := make([]byte, size)
			copy(old, b[off:off+size])
			nw := make([]byte, size)
			for j := range nw {
				nw[j] = byte(r.Uint32())
			}
			if i%5 == 0 {
				clear(nw)
			}
			copy(b[off:], nw)
			var got uint16
			switch size {
			case 2:
				got = UpdateChecksum16(orig, binary.BigEndian.Uint16(old), binary.BigEndian.Uint16(nw))
			case 4:
				got = UpdateChecksum32(orig, binary.BigEndian.Uint32(old), binary.BigEndian.Uint32(nw))
			case 16:
				got = UpdateChecksumAddr(orig, [16]byte(old), [16]byte(nw))
			}
			// Only all-zero data has a from-scratch checksum of 0xffff;
			// the update gives the other zero, which verifies the same.
			if want := scratch(b, ck); got != want && !(want == 0xffff && got == 0) {
				t.Fatalf("size %d: update %x→%x: got %#04x, want %#04x", size, old, nw, got, want)
			}
			// And back.
			var back uint16
			switch size {
			case 2:
				back = UpdateChecksum16(got, binary.BigEndian.Uint16(nw), binary.BigEndian.Uint16(old))
			case 4:
				back = UpdateChecksum32(got, binary.BigEndian.Uint32(nw), binary.BigEndian.Uint32(old))
			case 16:
				back = UpdateChecksumAddr(got, [16]byte(nw), [16]byte(old))
			}
			if back != orig && orig != 0xffff { // 0xffff (all-zero data) comes back as 0x0000, documented

				t.Fatalf("size %d: update and back gave %#04x, want %#04x", size, back, orig)
			}
		}
	}
}

func TestChecksumAllocs(t *testing.T) {
	b := make([]byte, 1500)
	if n := testing.AllocsPerRun(100, func() {
		_ = Sum(b, 0)
		_ = UpdateChecksumAddr(1, [16]byte{1}, [16]byte{2})
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func BenchmarkSum(b *testing.B) {
	for _, n := range []int{20, 64, 1500, 65535} {
		buf := make([]byte, n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				Sum(buf, 0)
			}
		})
	}
}
