package bridge

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// naiveSum16 is RFC 1071's definition, 16 bits at a time.
func naiveSum16(b []byte) uint16 {
	var s uint32
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

// sum16 agrees with the definition over every length up to 2 KiB and
// every alignment, on random bytes and on all-ones (the carry worst case).
func TestSum16(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2048+8)
	ones := make([]byte, len(buf))
	for i := range buf {
		buf[i] = byte(rng.Uint32())
		ones[i] = 0xff
	}
	for _, b := range [][]byte{buf, ones} {
		for off := range 8 {
			for n := 0; off+n <= 2048; n++ {
				if got, want := sum16(b[off:off+n]), naiveSum16(b[off:off+n]); got != want {
					t.Fatalf("sum16(%d bytes at %d) = %#04x, want %#04x", n, off, got, want)
				}
			}
		}
	}
	big := make([]byte, MaxMTU+etherHeader)
	for i := range big {
		big[i] = 0xff
	}
	if got, want := sum16(big), naiveSum16(big); got != want {
		t.Fatalf("sum16(max frame of 0xff) = %#04x, want %#04x", got, want)
	}
}

// A completed checksum verifies: summing the covered bytes, the
// pseudo-header seed taken out again, gives 0xffff.
func TestCompleteChecksum(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 60; n < 300; n++ {
		f := make([]byte, n)
		for i := range f {
			f[i] = byte(rng.Uint32())
		}
		const start, off = 34, 16 // TCP after Ethernet and IPv4 headers
		if n < start+off+2 {
			continue
		}
		seed := uint16(rng.Uint32())
		binary.BigEndian.PutUint16(f[start+off:], seed)
		o := Offload{Flags: OffloadNeedsCsum, CsumStart: start, CsumOffset: off}
		if !o.Valid(n) {
			t.Fatalf("offload %+v invalid for %d bytes", o, n)
		}
		CompleteChecksum(f, &o)
		if o.Flags != OffloadDataValid {
			t.Fatalf("flags %d after completion", o.Flags)
		}
		// Verify as a receiver would, adding the seed (pseudo-header) to
		// the data with the checksum field in place.
		s := uint32(naiveSum16(f[start:])) + uint32(seed)
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
		if s != 0xffff {
			t.Fatalf("%d bytes: checksum does not verify: sum %#04x", n, s)
		}
	}
	if (Offload{Flags: OffloadNeedsCsum, CsumStart: 50, CsumOffset: 9}).Valid(60) {
		t.Error("checksum field past the end accepted")
	}
}

// A GSO frame whose headers cannot be cut into segments (flagged TCPv4,
// carrying UDP) is dropped as invalid on the port that sent it, as one
// with an invalid Offload is: it was forwarded, and dropped only by a
// plain egress port's segmentation, counted there in DropInvalid, an rx
// counter of a port that had received nothing.
func TestBadGSOCountedOnIngress(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	f, o := gsoFrame(false, make([]byte, 5000), 1448, 0x18)
	copy(f[0:6], Broadcast[:])
	f[etherHeader+9] = 17 // UDP in a TCPv4 GSO frame
	if err := tb.ports[0].InjectOffload([][]byte{f}, []Offload{o}); err != nil {
		t.Fatal(err)
	}
	tb.barrier(0, 1, macA) // the bad frame went before this
	waitFor(t, "barrier sent", func() bool { return tb.ports[1].Counters().TxFrames == 1 })
	if c := tb.ports[1].Counters(); c.RxDropped() != 0 {
		t.Errorf("egress port counters %+v: Rx drops on a port that received nothing", c)
	}
	if c := tb.ports[0].Counters(); c.DropInvalid != 1 {
		t.Errorf("ingress DropInvalid = %d, want 1", c.DropInvalid)
	}
}
