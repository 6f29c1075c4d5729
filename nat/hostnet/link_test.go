package hostnet

import (
	"bytes"
	"testing"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/nat"
)

// A packet waiting in the link's queue holds a buffer of its size class:
// an ACK or a datagram up to smallPacket bytes a small one, a larger
// packet one of maxPacket. With no gateway delivering, every packet
// waits in the queue, and a full queue refuses the next one.
func TestLinkBufferSizes(t *testing.T) {
	l := newLink(1500, 3)
	ack := bytes.Repeat([]byte{1}, 40)
	edge := bytes.Repeat([]byte{2}, smallPacket)
	seg := bytes.Repeat([]byte{3}, smallPacket+1)
	for _, parts := range [][][]byte{{ack[:20], ack[20:]}, {edge}, {seg[:100], seg[100:]}} {
		if !l.queue(parts, bridge.Offload{}) {
			t.Fatal("the queue refused a packet with room left")
		}
	}
	if l.queue([][]byte{ack}, bridge.Offload{}) || l.drops.Load() != 1 {
		t.Fatalf("a full queue took a packet (drops %d)", l.drops.Load())
	}
	for i, want := range []struct {
		pkt  []byte
		size int
	}{{ack, smallPacket}, {edge, smallPacket}, {seg, maxPacket}} {
		f := <-l.q
		if len(*f.buf) != nat.Headroom+want.size {
			t.Errorf("packet %d (%d bytes) waits in a buffer of %d, want %d", i, len(want.pkt), len(*f.buf)-nat.Headroom, want.size)
		}
		if !bytes.Equal((*f.buf)[nat.Headroom:f.n], want.pkt) {
			t.Errorf("packet %d changed in the queue", i)
		}
		l.putBuf(f.buf)
	}
	// Each went back to its own pool: a small buffer in the big pool
	// would cut a large packet short later (copy truncates silently).
	for range 100 {
		if b := l.getBuf(1); len(*b) != nat.Headroom+smallPacket {
			t.Fatalf("a small packet got a buffer of %d", len(*b)-nat.Headroom)
		}
		if b := l.getBuf(smallPacket + 1); len(*b) != nat.Headroom+maxPacket {
			t.Fatalf("a large packet got a buffer of %d", len(*b)-nat.Headroom)
		}
	}
}
