package bridge

import (
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a DirectWriter port that keeps the sequence numbers of the
// frames written to it. It sends one frame first, so the bridge learns its
// MAC.
type recorder struct {
	mu       sync.Mutex
	seqs     []uint32
	writes   int
	maxBatch int
	hello    chan []byte
	done     chan struct{}
	once     sync.Once
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
	r.writes++
	r.maxBatch = max(r.maxBatch, len(bufs))
	if r.writes%200 == 0 {
		// Slow down now and then, so frames queue up behind this write
		// and the queued and the direct paths take turns.
		time.Sleep(200 * time.Microsecond)
	}
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

// TestDirectTransmitKeepsOrder streams frames from two pipe ports to a
// DirectWriter port that is slow now and then, so the bridge writes to it
// directly and through its queue by turns, and checks that each sender's
// frames arrive in order, none lost unless counted.
func TestDirectTransmitKeepsOrder(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	rec := &recorder{hello: make(chan []byte, 1), done: make(chan struct{})}
	rec.hello <- ether(Broadcast, macB, 0x0800, 4, 0)
	att, err := tb.b.AddPort(rec, PortConfig{Name: "rec"})
	if err != nil {
		t.Fatal(err)
	}
	tb.expect(0, 0)
	tb.add(PortConfig{}, PipeConfig{})
	const n = 20000
	var wg sync.WaitGroup
	for sender := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				f := ether(macB, [...]MAC{macA, macC}[sender], 0x0800, 64, 0)
				binary.BigEndian.PutUint32(f[etherHeader:], uint32(sender)<<31|uint32(i))
				if _, err := tb.ends[sender].WriteFrames([][]byte{f}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "all frames written or dropped", func() bool {
		c := att.Counters()
		return c.TxFrames+c.DropQueueFull == 2*n
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	last := [2]int64{-1, -1}
	for _, s := range rec.seqs {
		sender, i := s>>31, int64(s&^(1<<31))
		if i <= last[sender] {
			t.Fatalf("sender %d: frame %d after frame %d", sender, i, last[sender])
		}
		last[sender] = i
	}
	if c := att.Counters(); uint64(len(rec.seqs)) != c.TxFrames {
		t.Fatalf("%d frames recorded, %d counted", len(rec.seqs), c.TxFrames)
	}
	if rec.maxBatch < 2 || rec.writes == len(rec.seqs) {
		t.Fatalf("the queue was never used (%d writes of %d frames, largest %d)", rec.writes, len(rec.seqs), rec.maxBatch)
	}
}

// goneWriter is a recorder whose writes find it gone (io.EOF) while its
// reads go on until it is closed.
type goneWriter struct{ recorder }

func (g *goneWriter) WriteFrames([][]byte) (int, error) { return 0, io.EOF }

// A direct write that finds its port gone detaches and closes the port, as
// the Port contract says, though it runs inside another port's read (and
// closing the port there could wait for that read): the port's transmit
// goroutine does it, even while the port's own reads go on.
func TestDirectWriteGoneDetaches(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	g := &goneWriter{recorder{hello: make(chan []byte, 1), done: make(chan struct{})}}
	g.hello <- ether(Broadcast, macB, 0x0800, 4, 0)
	att, err := tb.b.AddPort(g, PortConfig{Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	tb.expect(0, 0) // its MAC is learned
	if _, err := tb.ends[0].WriteFrames([][]byte{ether(macB, macA, 0x0800, 64, 0)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the port detached and closed", func() bool {
		select {
		case <-g.done:
		default:
			return false
		}
		return !slices.Contains(tb.b.Ports(), att)
	})
	if c := att.Counters(); c.DropTxError != 1 {
		t.Errorf("%d frames counted dropped by a write error, want 1", c.DropTxError)
	}
}

// slowDirect is a recorder, a DirectWriter, whose writes take a while,
// as the gateway's handling of a frame does.
type slowDirect struct {
	recorder
	writing atomic.Bool
	entered chan struct{}
}

func (s *slowDirect) WriteFrames(bufs [][]byte) (int, error) {
	select {
	case <-s.done:
		return 0, net.ErrClosed
	default:
	}
	s.writing.Store(true)
	select {
	case s.entered <- struct{}{}:
	default:
	}
	time.Sleep(100 * time.Millisecond)
	s.writing.Store(false)
	return len(bufs), nil
}

// Close waits for a write to the port that another port's goroutine
// made directly: once it returns, nothing of the bridge's is in the Port
// (the gateway's router port, whose frames the gateway handles while its
// uplink and table are open).
func TestCloseWaitsForDirectWrite(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	s := &slowDirect{recorder: recorder{hello: make(chan []byte, 1), done: make(chan struct{})}, entered: make(chan struct{}, 1)}
	a, err := tb.b.AddPort(s, PortConfig{Name: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	s.hello <- ether(Broadcast, macC, 0x88b5, 60, 0)
	tb.expect(0, 0) // its MAC is learned
	go tb.ends[0].WriteFrames([][]byte{ether(macC, macA, 0x88b5, 60, 1)})
	<-s.entered
	a.Close()
	if s.writing.Load() {
		t.Fatal("Close returned while a direct write to its port was running")
	}
}
