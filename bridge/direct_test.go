package bridge

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
)

// recorder is a DirectWriter port that keeps the sequence numbers of the
// frames written to it. It sends one frame first, so the bridge learns its
// MAC.
type recorder struct {
	mu    sync.Mutex
	seqs  []uint32
	hello chan []byte
	done  chan struct{}
	once  sync.Once
}

func (r *recorder) ReadFrames(bufs [][]byte, sizes []int) (int, error) {
	select {
	case f := <-r.hello:
		sizes[0] = copy(bufs[0], f)
		return 1, nil
	case <-r.done:
		return 0, net.ErrClosed
	}
}

func (r *recorder) WriteFrames(bufs [][]byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range bufs {
		r.seqs = append(r.seqs, binary.BigEndian.Uint32(b[etherHeader:]))
	}
	return len(bufs), nil
}

func (r *recorder) BatchSize() int     { return 8 }
func (r *recorder) WritesDirect() bool { return true }
func (r *recorder) Close() error {
	r.once.Do(func() { close(r.done) })
	return nil
}

// TestDirectTransmitKeepsOrder streams frames from a pipe port to a
// DirectWriter port, which the bridge writes to directly or through the
// queue, and checks that they arrive in order, none lost unless counted.
func TestDirectTransmitKeepsOrder(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	rec := &recorder{hello: make(chan []byte, 1), done: make(chan struct{})}
	rec.hello <- ether(Broadcast, macB, 0x0800, 4, 0)
	att, err := tb.b.AddPort(rec, PortConfig{Name: "rec"})
	if err != nil {
		t.Fatal(err)
	}
	tb.expect(0, 0)
	const n = 20000
	for i := range n {
		f := ether(macB, macA, 0x0800, 64, 0)
		binary.BigEndian.PutUint32(f[etherHeader:], uint32(i))
		tb.send(0, f)
	}
	waitFor(t, "all frames written or dropped", func() bool {
		c := att.Counters()
		return c.TxFrames+c.DropQueueFull == n
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i := 1; i < len(rec.seqs); i++ {
		if rec.seqs[i] <= rec.seqs[i-1] {
			t.Fatalf("frame %d after frame %d", rec.seqs[i], rec.seqs[i-1])
		}
	}
	if c := att.Counters(); uint64(len(rec.seqs)) != c.TxFrames {
		t.Fatalf("%d frames recorded, %d counted", len(rec.seqs), c.TxFrames)
	}
}
