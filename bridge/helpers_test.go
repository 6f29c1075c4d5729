package bridge

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/usernat/usernat/internal/testclock"
)

// manualClock is a Clock that moves only when told to.
type manualClock = testclock.Manual

func newManualClock() *manualClock { return testclock.New() }

// Station MACs for tests; they differ in every byte.
var (
	macA = MustParseMAC("02:00:5e:10:00:0a")
	macB = MustParseMAC("06:11:6f:21:01:0b")
	macC = MustParseMAC("0a:22:7a:32:02:0c")
	macD = MustParseMAC("0e:33:8b:43:03:0d")
	macX = MustParseMAC("12:44:9c:54:04:0e") // never sends
)

// ether builds a frame from dst to src of the given EtherType with a
// payload of n bytes whose first byte is tag, so tests can tell frames
// apart.
func ether(dst, src MAC, etherType uint16, n int, tag byte) []byte {
	f := make([]byte, etherHeader+n)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etherType)
	if n > 0 {
		f[etherHeader] = tag
	}
	return f
}

// testBridge is a bridge whose ports are pipes; the test holds the far
// ends, ends[i] being the peer of ports[i].
type testBridge struct {
	t     *testing.T
	b     *Bridge
	clock *manualClock
	ports []*Attachment
	ends  []*Pipe
}

func newTestBridge(t *testing.T, cfg Config, n int) *testBridge {
	t.Helper()
	tb := &testBridge{t: t, clock: newManualClock()}
	if cfg.Clock == nil {
		cfg.Clock = tb.clock
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tb.b = b
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, e := range tb.ends {
			e.Close()
		}
	})
	for range n {
		tb.add(PortConfig{}, PipeConfig{})
	}
	return tb
}

func (tb *testBridge) add(pc PortConfig, pipe PipeConfig) (*Attachment, *Pipe) {
	tb.t.Helper()
	inner, outer := NewPipe(pipe)
	a, err := tb.b.AddPort(inner, pc)
	if err != nil {
		tb.t.Fatal(err)
	}
	tb.ports = append(tb.ports, a)
	tb.ends = append(tb.ends, outer)
	return a, outer
}

// send writes frames into the bridge through port i.
func (tb *testBridge) send(i int, frames ...[]byte) {
	tb.t.Helper()
	if _, err := tb.ends[i].WriteFrames(frames); err != nil {
		tb.t.Fatalf("send on port %d: %v", i, err)
	}
}

// recv reads the next frame the bridge sent out of port i.
func (tb *testBridge) recv(i int) []byte {
	tb.t.Helper()
	return recvPipe(tb.t, tb.ends[i])
}

func recvPipe(t *testing.T, p *Pipe) []byte {
	t.Helper()
	type res struct {
		f   []byte
		err error
	}
	c := make(chan res, 1)
	go func() {
		buf := make([]byte, MaxMTU+etherHeader+vlanTag+1)
		n, err := p.ReadFrame(buf)
		c <- res{buf[:n], err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("recv: %v", r.err)
		}
		return r.f
	case <-time.After(10 * time.Second):
		// The reader goroutine ends when cleanup closes the pipe.
		t.Fatal("recv: no frame in 10s")
		return nil
	}
}

// expect reads frames from port i and checks their tags, in order.
func (tb *testBridge) expect(i int, tags ...byte) {
	tb.t.Helper()
	for _, want := range tags {
		f := tb.recv(i)
		if len(f) <= etherHeader || f[etherHeader] != want {
			tb.t.Fatalf("port %d: got frame %x, want tag %d", i, f[:min(len(f), etherHeader+1)], want)
		}
	}
}

// barrier sends a broadcast tagged tag from port from and reads it on
// every other port. Frames from one ingress port keep their order on each
// egress port, so a frame that port j received before the barrier was
// forwarded earlier: reading the barrier where an earlier frame would be
// proves no such frame was sent.
func (tb *testBridge) barrier(from int, tag byte, src MAC) {
	tb.t.Helper()
	tb.send(from, ether(Broadcast, src, 0x88b5, 1, tag))
	for j := range tb.ends {
		if j != from {
			tb.expect(j, tag)
		}
	}
}

// waitFor polls cond until it holds or 10 s pass: for effects of
// goroutines the test cannot otherwise synchronise with, such as a port
// detaching itself.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
