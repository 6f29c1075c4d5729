package bridge

import (
	"encoding/binary"
	"testing"
)

// splitFrames cuts fuzz input into frames: each is a 2-byte big-endian
// length (mod 4096, so some exceed the 1500-byte MTU used below) followed
// by that many bytes, the last one taking what is left.
func splitFrames(data []byte) [][]byte {
	var frames [][]byte
	for len(data) >= 2 && len(frames) < 64 {
		n := int(binary.BigEndian.Uint16(data)) % 4096
		data = data[2:]
		n = min(n, len(data))
		frames = append(frames, data[:n])
		data = data[n:]
	}
	return frames
}

// FuzzPortInput writes arbitrary bytes as frames into one port of a
// two-port bridge: nothing panics, and every frame is accounted for, as
// received and dropped for a reason, or forwarded and then sent or dropped
// on the egress port.
func FuzzPortInput(f *testing.F) {
	be := func(n int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(n)) }
	seed := func(frames ...[]byte) []byte {
		var b []byte
		for _, fr := range frames {
			b = append(b, be(len(fr))...)
			b = append(b, fr...)
		}
		return b
	}
	f.Add(seed(ether(Broadcast, macA, etherTypeTest, 50, 1)))
	f.Add(seed(ether(macB, macA, etherTypeTest, 50, 1), ether(macA, macC, etherTypeTest, 50, 1)))
	f.Add(seed(make([]byte, 5), ether(Broadcast, Broadcast, 0, 0, 0)))
	f.Add(seed(ether(macB, macA, etherTypeIPv4, 2000, 0x45)))
	f.Add(seed(arpFrame(macA, macA, netipMust("192.0.2.1"))))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		frames := splitFrames(data)
		b, err := New(Config{MTU: 1500, Clock: newManualClock()})
		if err != nil {
			t.Fatal(err)
		}
		inner, in := NewPipe(PipeConfig{})
		innerOut, out := NewPipe(PipeConfig{})
		pin, err := b.AddPort(inner, PortConfig{})
		if err != nil {
			t.Fatal(err)
		}
		pout, err := b.AddPort(innerOut, PortConfig{})
		if err != nil {
			t.Fatal(err)
		}
		sunk := make(chan struct{})
		go func() {
			defer close(sunk)
			bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
			for {
				if _, err := out.ReadFrames(bufs, sizes); err != nil {
					return
				}
			}
		}()
		if len(frames) > 0 {
			if _, err := in.WriteFrames(frames); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "frames accounted", func() bool {
			ci, co := pin.Counters(), pout.Counters()
			return ci.RxFrames == uint64(len(frames)) &&
				co.TxFrames+co.DropQueueFull+co.DropTxError == ci.RxFrames-ci.RxDropped()
		})
		ci := pin.Counters()
		var bytes uint64
		for _, fr := range frames {
			// An oversize frame is read truncated to the buffer.
			bytes += uint64(min(len(fr), b.maxFrame+1))
		}
		if ci.RxBytes != bytes || ci.RxDropped() > ci.RxFrames {
			t.Errorf("counters %+v for %d frames of %d bytes", ci, len(frames), bytes)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
		<-sunk
	})
}
