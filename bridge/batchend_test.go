package bridge

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
)

// ender is a recorder told where batches end (BatchEnder): it counts the
// frames written to it since the last EndBatch, and the calls.
type ender struct {
	recorder
	direct bool

	emu   sync.Mutex
	since int // frames written since the last EndBatch
	calls int
	ends  int // calls that ended a batch of frames
}

func newEnder(direct bool) *ender {
	e := &ender{recorder: recorder{hello: make(chan []byte, 1), done: make(chan struct{})}, direct: direct}
	e.hello <- ether(Broadcast, macB, 0x0800, 4, 0)
	return e
}

func (e *ender) WriteFrames(bufs [][]byte) (int, error) {
	n, err := e.recorder.WriteFrames(bufs)
	e.emu.Lock()
	e.since += n
	e.emu.Unlock()
	return n, err
}

func (e *ender) WritesDirect() bool { return e.direct }

func (e *ender) EndBatch() {
	e.emu.Lock()
	defer e.emu.Unlock()
	e.calls++
	if e.since > 0 {
		e.ends++
	}
	e.since = 0
}

func (e *ender) state() (since, calls, ends int) {
	e.emu.Lock()
	defer e.emu.Unlock()
	return e.since, e.calls, e.ends
}

// A port that wants to know where batches end (BatchEnder) is told after
// every frame written to it: after a read's frames were forwarded, which
// write to it directly (DirectWriter), after an Inject, and after its
// transmit goroutine's writes, whichever path a frame took. It is told
// once per batch, not per frame, and a port nothing was written to is not
// told at all.
func TestBatchEndFollowsEveryWrite(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	e := newEnder(true)
	att, err := tb.b.AddPort(e, PortConfig{Name: "ender"})
	if err != nil {
		t.Fatal(err)
	}
	tb.expect(0, 0) // its MAC is learned
	idle := newEnder(true)
	idle.hello = make(chan []byte) // it sends nothing
	if _, err := tb.b.AddPort(idle, PortConfig{Name: "idle"}); err != nil {
		t.Fatal(err)
	}
	ended := func(what string, frames uint64) {
		t.Helper()
		waitFor(t, what+": every frame written", func() bool {
			c := att.Counters()
			return c.TxFrames+c.DropQueueFull == frames
		})
		waitFor(t, what+": the batch end after the last frame", func() bool {
			since, _, _ := e.state()
			return since == 0
		})
	}

	// Bursts of 8 frames from two ports at once, now written directly,
	// now queued behind a slow write (the recorder sleeps every 200
	// writes) or another port's.
	tb.add(PortConfig{}, PipeConfig{})
	const bursts = 500
	var wg sync.WaitGroup
	for sender := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range bursts / 2 {
				burst := make([][]byte, 8)
				for j := range burst {
					burst[j] = ether(macB, [...]MAC{macA, macC}[sender], 0x0800, 64, byte(i))
				}
				if _, err := tb.ends[sender].WriteFrames(burst); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	ended("bursts", 8*bursts)
	_, calls, ends := e.state()
	if ends >= 8*bursts || calls >= 8*bursts {
		t.Errorf("%d batch ends (%d calls) for %d bursts of 8 frames: want fewer than one a frame", ends, calls, bursts)
	}
	e.mu.Lock()
	queued := e.maxBatch >= 2
	e.mu.Unlock()
	if !queued {
		t.Error("no frame was queued: the transmit goroutine's batch ends went untested")
	}

	// One frame, after all went: written directly in the read's
	// goroutine, which alone can end its batch.
	tb.send(0, ether(macB, macA, 0x0800, 64, 1))
	ended("a read's frame", 8*bursts+1)
	// One frame injected.
	if err := tb.ports[0].Inject([][]byte{ether(macB, macA, 0x0800, 64, 2)}); err != nil {
		t.Fatal(err)
	}
	ended("an injected frame", 8*bursts+2)

	if _, calls, _ := idle.state(); calls != 0 {
		t.Errorf("a port nothing was written to was told of %d batch ends", calls)
	}
}

// A port that is no DirectWriter gets every frame from its transmit
// goroutine, which tells it where each of its writes ends.
func TestBatchEndQueuedPort(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	e := newEnder(false)
	att, err := tb.b.AddPort(e, PortConfig{Name: "ender"})
	if err != nil {
		t.Fatal(err)
	}
	tb.expect(0, 0)
	for i := range 50 {
		tb.send(0, ether(macB, macA, 0x0800, 64, byte(i)))
	}
	waitFor(t, "every frame written", func() bool {
		c := att.Counters()
		return c.TxFrames+c.DropQueueFull == 50
	})
	waitFor(t, "the batch end after the last frame", func() bool {
		since, _, _ := e.state()
		return since == 0
	})
	if _, _, ends := e.state(); ends == 0 {
		t.Error("no batch ended")
	}
}

// answerer is an ender that, as the gateway does, answers a frame inside
// the write that hands it over: it injects its reply through its own
// attachment with its lock held, the lock its EndBatch takes too (the
// gateway's uplink sends to the gateway from its EndBatch).
type answerer struct {
	*ender
	att  atomic.Pointer[Attachment]
	lock sync.Mutex
	// armed counts the replies injected while the port's batch was
	// unended (a frame before it in the same read); inside, the batch
	// ends run while it held its lock, inside an injection.
	armed, inside atomic.Int32
}

func (p *answerer) WriteFrames(bufs [][]byte) (int, error) {
	n, err := p.ender.WriteFrames(bufs)
	att := p.att.Load()
	for _, f := range bufs[:n] {
		if att == nil || binary.BigEndian.Uint16(f[12:14]) != 0x0806 {
			continue
		}
		p.lock.Lock()
		if att.unended.Load() {
			p.armed.Add(1)
		}
		if err := att.Inject([][]byte{ether(macA, macB, 0x0806, 64, f[etherHeader])}); err != nil {
			p.lock.Unlock()
			return n, err
		}
		p.lock.Unlock()
	}
	return n, err
}

func (p *answerer) EndBatch() {
	if !p.lock.TryLock() {
		p.inside.Add(1)
	} else {
		p.lock.Unlock()
	}
	p.ender.EndBatch()
}

// An injection does not end the batch of the port it injects for: a
// port that answers a frame inside the write that hands it over (the
// gateway, an ARP request), the second frame of a read whose first
// marked it, would otherwise have its EndBatch run inside its own
// injection, with its own lock held. The read's goroutine ends the batch
// once the read's frames are forwarded.
func TestBatchEndNotInsideOwnInjection(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	p := &answerer{ender: newEnder(true)}
	att, err := tb.b.AddPort(p, PortConfig{Name: "answerer"})
	if err != nil {
		t.Fatal(err)
	}
	p.att.Store(att)
	tb.expect(0, 0) // its MAC is learned
	// Read the replies, so that the port's writes never wait.
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := tb.ends[0].ReadFrame(buf); err != nil {
				return
			}
		}
	}()
	for i := 0; p.armed.Load() < 20 && i < 2000; i++ {
		tb.send(0, ether(macB, macA, 0x0800, 64, byte(i)), ether(macB, macA, 0x0806, 64, byte(i)))
	}
	if p.armed.Load() == 0 {
		t.Fatal("no reply was injected with the port's batch unended: the case went untested")
	}
	waitFor(t, "the batch end after the last frame", func() bool {
		since, _, _ := p.state()
		return since == 0
	})
	if n := p.inside.Load(); n != 0 {
		t.Errorf("%d batch ends ran inside the port's own injection, of %d injections with its batch unended", n, p.armed.Load())
	}
}
