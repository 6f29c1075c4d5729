package bridge

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const etherTypeTest = 0x88b5 // IEEE local experimental

func TestLearningAndForwarding(t *testing.T) {
	tb := newTestBridge(t, Config{}, 3)

	// Unknown destination: flooded to every other port, never back.
	tb.send(0, ether(macX, macA, etherTypeTest, 10, 1))
	tb.expect(1, 1)
	tb.expect(2, 1)

	// macA is now known behind port 0: a reply goes there only.
	tb.send(1, ether(macA, macB, etherTypeTest, 10, 2))
	tb.expect(0, 2)
	tb.barrier(1, 3, macB) // port 2 must see the barrier, not frame 2

	// Both now known: unicast each way reaches only the other.
	tb.send(0, ether(macB, macA, etherTypeTest, 10, 4))
	tb.expect(1, 4)
	tb.barrier(0, 5, macA)

	got := tb.b.FDB()
	want := []FDBEntry{
		{MAC: macA, Port: "port0"},
		{MAC: macB, Port: "port1"},
	}
	if len(got) != len(want) {
		t.Fatalf("FDB = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].MAC != want[i].MAC || got[i].Port != want[i].Port || got[i].Static {
			t.Errorf("FDB[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestFlooding(t *testing.T) {
	tests := []struct {
		name string
		dst  MAC
	}{
		{"broadcast", Broadcast},
		{"IPv4 multicast", MustParseMAC("01:00:5e:00:00:fb")},
		{"IPv6 multicast", MustParseMAC("33:33:00:00:00:01")},
		{"unknown unicast", macX},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBridge(t, Config{}, 4)
			// Make every sender known, so flooding is not a side effect of
			// an unknown source.
			for i, m := range []MAC{macA, macB, macC, macD} {
				tb.barrier(i, byte(10+i), m)
			}
			tb.send(2, ether(tt.dst, macC, etherTypeTest, 60, 42))
			for _, j := range []int{0, 1, 3} {
				tb.expect(j, 42)
			}
			// No echo: port 2 sees the next barrier from port 0 first.
			tb.barrier(0, 43, macA)
		})
	}
}

func TestMove(t *testing.T) {
	tb := newTestBridge(t, Config{}, 3)
	tb.barrier(0, 1, macA)
	tb.barrier(1, 2, macB)

	// macA shows up behind port 2 (a VM migrated): frames follow it.
	tb.barrier(2, 3, macA)
	tb.send(1, ether(macA, macB, etherTypeTest, 10, 4))
	tb.expect(2, 4)
	tb.barrier(1, 5, macB) // port 0 sees only the barrier

	if e := findFDB(tb.b.FDB(), macA); e == nil || e.Port != "port2" {
		t.Fatalf("FDB entry for %v = %+v, want on port2", macA, e)
	}
}

func findFDB(entries []FDBEntry, m MAC) *FDBEntry {
	for i := range entries {
		if entries[i].MAC == m {
			return &entries[i]
		}
	}
	return nil
}

func TestHairpin(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	tb.barrier(0, 1, macA)

	// Off (the default): a frame for a MAC behind its own ingress port
	// is not sent back, and is counted.
	tb.send(0, ether(macA, macC, etherTypeTest, 10, 2))
	tb.barrier(0, 3, macC)
	if got := tb.ports[0].Counters().DropSamePort; got != 1 {
		t.Errorf("DropSamePort = %d, want 1", got)
	}

	// On: it goes back, and so do the port's own floods, as on Linux.
	tb.ports[0].SetHairpin(true)
	tb.send(0, ether(macA, macC, etherTypeTest, 10, 4))
	tb.expect(0, 4)
	tb.send(0, ether(Broadcast, macC, etherTypeTest, 10, 5))
	tb.expect(0, 5)
	tb.expect(1, 5)
}

func TestAgeing(t *testing.T) {
	tb := newTestBridge(t, Config{AgeingTime: 300 * time.Second}, 3)
	tb.barrier(0, 1, macA)

	steps := []struct {
		advance time.Duration
		known   bool
	}{
		{299 * time.Second, true}, // refreshed by nothing, still young
		{2 * time.Second, false},  // 301 s since last seen: gone
	}
	tag := byte(10)
	for _, s := range steps {
		tb.clock.Advance(s.advance)
		tb.send(1, ether(macA, macB, etherTypeTest, 10, tag))
		tb.expect(0, tag)
		if s.known {
			tb.barrier(1, tag+1, macB) // port 2 did not get it
		} else {
			tb.expect(2, tag) // flooded
		}
		if got := findFDB(tb.b.FDB(), macA) != nil; got != s.known {
			t.Errorf("after %v: macA in FDB = %v, want %v", s.advance, got, s.known)
		}
		tag += 2
	}

	// Every frame refreshes: a talking station never ages out.
	tb.barrier(0, 30, macA)
	for range 5 {
		tb.clock.Advance(200 * time.Second)
		tb.barrier(0, 31, macA)
	}
	if e := findFDB(tb.b.FDB(), macA); e == nil || e.Age != 0 {
		t.Fatalf("talking macA: FDB entry %+v, want age 0", e)
	}
}

func TestAgeingDisabled(t *testing.T) {
	tb := newTestBridge(t, Config{AgeingTime: -1}, 2)
	tb.barrier(0, 1, macA)
	tb.clock.Advance(1000 * time.Hour)
	if findFDB(tb.b.FDB(), macA) == nil {
		t.Fatal("entry aged with ageing disabled")
	}
}

func TestFDBCap(t *testing.T) {
	tb := newTestBridge(t, Config{MaxFDBEntries: 3}, 2)
	macs := []MAC{macA, macB, macC, macD, macX}
	for i, m := range macs[:3] {
		tb.barrier(0, byte(i), m)
		tb.clock.Advance(time.Second)
	}
	// Full: learning macD evicts the oldest, macA.
	tb.barrier(0, 3, macD)
	if findFDB(tb.b.FDB(), macA) != nil || len(tb.b.FDB()) != 3 {
		t.Fatalf("after macD: FDB = %v, want macB macC macD", tb.b.FDB())
	}
	// macB talks again, so macC is now the least recently seen.
	tb.clock.Advance(time.Second)
	tb.barrier(0, 4, macB)
	tb.barrier(0, 5, macX)
	fdb := tb.b.FDB()
	if findFDB(fdb, macC) != nil || findFDB(fdb, macB) == nil || len(fdb) != 3 {
		t.Fatalf("after macX: FDB = %v, want macB macD macX", fdb)
	}
}

func TestStaticEntries(t *testing.T) {
	tb := newTestBridge(t, Config{MaxFDBEntries: 2}, 3)
	if err := tb.b.AddStatic(macC, tb.ports[2]); err != nil {
		t.Fatal(err)
	}
	// Forwarded without ever being learned.
	tb.send(0, ether(macC, macA, etherTypeTest, 10, 1))
	tb.expect(2, 1)
	tb.barrier(0, 2, macA)

	// A frame from macC elsewhere does not move it, and it never ages.
	tb.barrier(1, 3, macC)
	tb.clock.Advance(24 * time.Hour)
	tb.send(0, ether(macC, macA, etherTypeTest, 10, 4))
	tb.expect(2, 4)
	tb.barrier(0, 5, macA)

	// Static entries are not evicted to make room; learning refuses when
	// only static entries are left, and adding one more fails.
	if err := tb.b.AddStatic(macD, tb.ports[1]); err != nil {
		t.Fatal(err) // evicts learned macA
	}
	tb.barrier(0, 6, macB)
	if got := tb.b.FDBFull(); got == 0 {
		t.Error("FDBFull = 0 after learning into a table of static entries")
	}
	if err := tb.b.AddStatic(macX, tb.ports[0]); !errors.Is(err, ErrFDBFull) {
		t.Errorf("AddStatic into a full table: %v, want ErrFDBFull", err)
	}

	var sb strings.Builder
	if err := tb.b.WriteFDB(&sb); err != nil {
		t.Fatal(err)
	}
	want := macD.String() + " dev port1 master br0 static\n" +
		macC.String() + " dev port2 master br0 static\n"
	if sb.String() != want {
		t.Errorf("WriteFDB:\n%s\nwant:\n%s", sb.String(), want)
	}

	// Static entries leave with their port.
	tb.ports[2].Close()
	if findFDB(tb.b.FDB(), macC) != nil {
		t.Error("static entry outlived its port")
	}
	if !tb.b.DeleteFDB(macD) || tb.b.DeleteFDB(macD) {
		t.Error("DeleteFDB: want true then false")
	}
	if err := tb.b.AddStatic(Broadcast, tb.ports[0]); err == nil {
		t.Error("AddStatic(broadcast) succeeded")
	}
}

func TestCounters(t *testing.T) {
	tb := newTestBridge(t, Config{MTU: 1500}, 2)
	frames := []struct {
		name  string
		frame []byte
	}{
		{"runt", make([]byte, 13)},
		{"empty", nil},
		{"oversize", ether(Broadcast, macA, etherTypeTest, 1500+vlanTag+1, 0)},
		{"multicast source", ether(Broadcast, Broadcast, etherTypeTest, 10, 0)},
		{"zero source", ether(Broadcast, MAC{}, etherTypeTest, 10, 0)},
		{"good 60", ether(Broadcast, macA, etherTypeTest, 46, 7)},
		{"good max", ether(Broadcast, macA, etherTypeTest, 1500+vlanTag, 8)},
	}
	var bytes uint64
	for _, f := range frames {
		tb.send(0, f.frame)
		bytes += uint64(len(f.frame))
	}
	tb.expect(1, 7, 8)
	waitFor(t, "tx counters", func() bool { return tb.ports[1].Counters().TxFrames == 2 })

	rx := tb.ports[0].Counters()
	want := Counters{
		RxFrames: uint64(len(frames)), RxBytes: bytes,
		DropRunt: 2, DropOversize: 1, DropInvalid: 2,
	}
	if rx != want {
		t.Errorf("ingress counters = %+v\nwant %+v", rx, want)
	}
	tx := tb.ports[1].Counters()
	if want := (Counters{TxFrames: 2, TxBytes: 60 + 1518}); tx != want {
		t.Errorf("egress counters = %+v\nwant %+v", tx, want)
	}
}

// A port whose peer never reads fills its queue and drops; forwarding
// between the other ports goes on.
func TestBlockedPort(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	tb.barrier(0, 0, macA)
	const queue = 4
	blocked, _ := tb.add(PortConfig{QueueLen: queue}, PipeConfig{BatchSize: 1})
	// Port 2 is never read.

	const n = 200
	for i := range n {
		tb.send(0, ether(Broadcast, macA, etherTypeTest, 100, byte(i)))
		tb.expect(1, byte(i))
		tb.send(1, ether(macA, macB, etherTypeTest, 100, byte(i)))
		tb.expect(0, byte(i))
	}
	c := blocked.Counters()
	// One frame is stuck in WriteFrames, queue more wait behind it, the
	// rest were dropped.
	// (Or queue, had the writer not yet taken the first frame.)
	if c.TxFrames != 0 || c.DropQueueFull < n-queue-1 || c.DropQueueFull > n-queue {
		t.Errorf("blocked port counters = %+v, want %d queue-full drops", c, n-queue-1)
	}

	// Closing the blocked port unblocks its writer.
	if err := blocked.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDetach(t *testing.T) {
	t.Run("Close", func(t *testing.T) {
		tb := newTestBridge(t, Config{}, 3)
		tb.barrier(2, 1, macC)
		if err := tb.ports[2].Close(); err != nil {
			t.Fatal(err)
		}
		if err := tb.ports[2].Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := tb.ends[2].ReadFrame(make([]byte, 100)); err != io.EOF {
			t.Errorf("peer read after Close: %v, want EOF", err)
		}
		if len(tb.b.Ports()) != 2 || tb.b.Port("port2") != nil {
			t.Errorf("Ports after Close = %v", tb.b.Ports())
		}
		if findFDB(tb.b.FDB(), macC) != nil {
			t.Error("MAC behind a closed port still in FDB")
		}
		// Frames for it are flooded now.
		tb.send(0, ether(macC, macA, etherTypeTest, 10, 2))
		tb.expect(1, 2)
	})
	t.Run("peer gone", func(t *testing.T) {
		tb := newTestBridge(t, Config{}, 2)
		tb.ends[1].Close()
		waitFor(t, "detach", func() bool { return len(tb.b.Ports()) == 1 })
	})
	t.Run("bridge Close after a port failed", func(t *testing.T) {
		// A port that failed detached itself; the bridge's Close waits
		// for what it left running (here, the port's slow Close) all
		// the same.
		b, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		p := &failingPort{}
		if _, err := b.AddPort(p, PortConfig{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "detach", func() bool { return len(b.Ports()) == 0 })
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if !p.closed.Load() {
			t.Error("the bridge's Close returned while a port it had detached was still closing")
		}
	})
	t.Run("bridge Close", func(t *testing.T) {
		tb := newTestBridge(t, Config{}, 2)
		if err := tb.b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tb.b.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		p, q := NewPipe(PipeConfig{})
		defer q.Close()
		if _, err := tb.b.AddPort(p, PortConfig{}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("AddPort after Close: %v, want net.ErrClosed", err)
		}
		if _, err := p.ReadFrame(nil); !errors.Is(err, net.ErrClosed) {
			t.Errorf("port given to a closed bridge not closed: %v", err)
		}
		if _, err := tb.b.Capture(io.Discard, CaptureConfig{}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Capture after Close: %v, want net.ErrClosed", err)
		}
	})
}

// failingPort fails its first read; its Close takes a while.
type failingPort struct{ closed atomic.Bool }

func (*failingPort) ReadFrames([][]byte, []int) (int, error) { return 0, io.ErrUnexpectedEOF }
func (*failingPort) WriteFrames(bufs [][]byte) (int, error)  { return len(bufs), nil }
func (*failingPort) BatchSize() int                          { return 1 }
func (p *failingPort) Close() error {
	time.Sleep(50 * time.Millisecond)
	p.closed.Store(true)
	return nil
}

func TestConfig(t *testing.T) {
	bad := []Config{
		{MTU: MaxMTU + 1},
		{MTU: -1},
		{MaxFDBEntries: -1},
		{QueueLen: -1},
	}
	for _, cfg := range bad {
		if b, err := New(cfg); err == nil {
			b.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Name() != DefaultName {
		t.Errorf("Name = %q", b.Name())
	}
	p, q := NewPipe(PipeConfig{})
	defer q.Close()
	a, err := b.AddPort(p, PortConfig{Name: "veth1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "veth1" || b.Port("veth1") != a || a.Port() != p {
		t.Errorf("port name %q", a.Name())
	}
}

// Forwarding a frame to a known MAC allocates nothing, from one pipe end
// through the bridge to another, for small (copied) and large (handed
// over) frames alike, and no capture running.
func TestForwardAllocs(t *testing.T) {
	for _, size := range []int{64, 1500, 9000, 65520} {
		tb := newTestBridge(t, Config{}, 2)
		tb.barrier(1, 0, macB)
		out := [][]byte{ether(macB, macA, etherTypeTest, size-etherHeader, 1)}
		in := [][]byte{make([]byte, MaxMTU+etherHeader+vlanTag+1)}
		sizes := make([]int, 1)
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := tb.ends[0].WriteFrames(out); err != nil {
				t.Fatal(err)
			}
			if _, err := tb.ends[1].ReadFrames(in, sizes); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%d-byte frame: %v allocations per frame, want 0", size, allocs)
		}
	}
}

// IEEE 802.1D's reserved group addresses (01:80:C2:00:00:01-0F: pause,
// LACP, 802.1X, LLDP) are the link's own: not forwarded, as Linux's bridge
// does not (group_fwd_mask 0), and counted. STP's (…:00) is forwarded by a
// bridge that runs no STP, as Linux's does.
func TestLinkLocalNotForwarded(t *testing.T) {
	tb := newTestBridge(t, Config{}, 3)
	for i, last := range []byte{0x01, 0x02, 0x03, 0x0e, 0x0f} {
		tb.send(0, ether(MAC{0x01, 0x80, 0xc2, 0, 0, last}, macA, 0x88cc, 50, byte(10+i)))
	}
	tb.send(0, ether(MAC{0x01, 0x80, 0xc2, 0, 0, 0}, macA, 0x0026, 50, 7)) // STP
	for j := 1; j < 3; j++ {
		tb.expect(j, 7) // the first frame each sees: none of the reserved ones
	}
	tb.barrier(0, 8, macA)
	if got := tb.ports[0].Counters().DropLinkLocal; got != 5 {
		t.Errorf("DropLinkLocal = %d, want 5", got)
	}
}

// A GSO frame whose segments would be larger than the bridge's frames is
// dropped as oversize, as such a frame without GSO is: a container that
// raised its own MTU does not send a plain port 9 KB frames on a 1500
// bridge.
func TestGSOSegmentsWithinMTU(t *testing.T) {
	off, ob, db, a := offloadToPlain(t, Config{MTU: 1500})
	for i, mss := range []int{9000, 1400} {
		f, o := gsoFrame(false, make([]byte, 20000), mss, 0x18)
		copy(f[0:6], Broadcast[:])
		f[len(f)-1] = byte(i)
		off.in <- o
		if err := ob.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	s := recvPipe(t, db)                                  // the first segment of the second frame, not one of the first's
	if len(s) > a.b.maxFrame || len(s) != 14+20+32+1400 { // gsoFrame's TCP header has 12 bytes of options
		t.Errorf("plain port got a %d-byte segment first; want the 1400-byte MSS frame's (the 9000's dropped)", len(s))
	}
	if got := a.Counters().DropOversize; got != 1 {
		t.Errorf("DropOversize = %d, want 1", got)
	}
}

// A GSO frame whose one segment would be an IPv4 packet over 65535 bytes
// is refused: its total length would wrap.
func TestSegmentIPLengthBound(t *testing.T) {
	f, o := gsoFrame(false, make([]byte, MaxGSOFrame-etherHeader-20-32), 65535, 0x18)
	if !o.Valid(len(f)) {
		t.Fatalf("the frame (%d bytes) is not valid for its offload", len(f))
	}
	err := Segment(f, etherHeader, o, make([]byte, 1<<17), func(seg []byte) {
		t.Errorf("a segment of %d bytes of IP, total length %d", len(seg)-etherHeader, binary.BigEndian.Uint16(seg[etherHeader+2:]))
	})
	if !errors.Is(err, ErrBadGSO) {
		t.Errorf("Segment: %v, want ErrBadGSO", err)
	}
}

// detachingPort reads one frame from src only once its bridge has let it
// go (Close under way), then reports closed.
type detachingPort struct {
	b      *Bridge
	frame  []byte
	sent   bool
	closed chan struct{}
	once   sync.Once
}

func (p *detachingPort) ReadFrames(bufs [][]byte, sizes []int) (int, error) {
	if !p.sent {
		p.sent = true
		for len(p.b.Ports()) != 1 { // until detached
			runtime.Gosched()
		}
		sizes[0] = copy(bufs[0], p.frame)
		return 1, nil
	}
	<-p.closed
	return 0, net.ErrClosed
}
func (p *detachingPort) WriteFrames(b [][]byte) (int, error) { return len(b), nil }
func (p *detachingPort) BatchSize() int                      { return 1 }
func (p *detachingPort) Close() error                        { p.once.Do(func() { close(p.closed) }); return nil }

// A frame a port reads while it is being detached learns nothing, as
// Linux's bridge disables a port before flushing its entries: its MAC came
// back behind the dead port after the flush, for 300 s.
func TestNoLearningWhileDetaching(t *testing.T) {
	b, err := New(Config{Clock: newManualClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q1, q2 := NewPipe(PipeConfig{})
	defer q2.Close()
	if _, err := b.AddPort(q1, PortConfig{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	p := &detachingPort{b: b, frame: ether(Broadcast, macD, etherTypeTest, 50, 1), closed: make(chan struct{})}
	a, err := b.AddPort(p, PortConfig{Name: "dying"})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if e := findFDB(b.FDB(), macD); e != nil {
		t.Errorf("FDB holds %v behind a port that was closed", *e)
	}
	if got := a.Counters().DropDetached; got != 1 {
		t.Errorf("DropDetached = %d, want 1", got)
	}
}

// A frame a port being detached read moves no MAC known behind another
// port to it: learn's check for a detached port was on its slow path only
// (a new MAC), and a known one moved behind the dead port, where its
// frames were flooded until its own port sent again.
func TestNoMoveToDetachedPort(t *testing.T) {
	f := newFDB(300*time.Second, 8192)
	a, b := &Attachment{name: "a"}, &Attachment{name: "b"}
	mac := MAC{0x02, 0, 0, 0, 0, 1}
	f.learn(mac, b, 1)
	a.closing.Store(true)
	f.flushPort(a)
	f.learn(mac, a, 2) // a's frame, read before the detach
	if got := f.lookup(mac, 2); got != b {
		t.Errorf("MAC behind %v after the detached port's frame, want b", got.Name())
	}
}

// A full FDB evicts the least recently seen learned entry (Config.
// MaxFDBEntries): macA, learned first and last seen at 1 s, before macB,
// learned at 998 s (it used to be macB: the queue second-chance eviction
// went by put macA back behind it).
func TestFDBEvictsLeastRecentlySeen(t *testing.T) {
	tb := newTestBridge(t, Config{MaxFDBEntries: 3, AgeingTime: -1}, 2)
	tb.barrier(0, 1, macA) // macA queued at t=0
	tb.clock.Advance(time.Second)
	tb.barrier(0, 2, macA) // macA seen at t=1
	tb.clock.Advance(997 * time.Second)
	tb.barrier(0, 3, macB) // t=998
	tb.clock.Advance(time.Second)
	tb.barrier(0, 4, macC) // t=999
	tb.clock.Advance(time.Second)
	tb.barrier(0, 5, macD) // t=1000: full, evict the least recently seen
	fdb := tb.b.FDB()
	if findFDB(fdb, macA) != nil || findFDB(fdb, macB) == nil {
		t.Fatalf("after macD: FDB = %v; want macA (seen at 1 s) evicted, macB (seen at 998 s) kept", fdb)
	}
}

// The same after several refreshes: entries go in the order they were
// last seen, not the order they were queued again in.
func TestFDBEvictsLeastRecentlySeenAfterRefreshes(t *testing.T) {
	f := newFDB(0, 3)
	p := &Attachment{name: "p"}
	f.learn(macA, p, 1)
	f.learn(macB, p, 2)
	f.learn(macC, p, 3)
	f.learn(macB, p, 4) // refresh
	f.learn(macA, p, 5) // refresh
	f.learn(macD, p, 6) // evicts macC, seen at 3
	f.learn(macX, p, 7) // must evict macB, seen at 4, not macA, seen at 5
	if f.lookup(macC, 7) != nil || f.lookup(macB, 7) != nil || f.lookup(macA, 7) == nil {
		t.Fatalf("FDB = %v; want macA macD macX (macC then macB evicted)", f.list(7))
	}
}

// A static entry for a port detached between AddStatic's check and its
// taking the FDB's lock (closing set, flushPort run) is refused, as learn
// refuses one (TestNoMoveToDetachedPort): added after the flush, it would
// never age nor be evicted, and keep the MAC pointing at a dead port.
func TestNoStaticEntryForDetachedPort(t *testing.T) {
	f := newFDB(300*time.Second, 8192)
	a := &Attachment{name: "a"}
	// AddStatic saw a attached; then a's Close ran: closing, then flush.
	a.closing.Store(true)
	f.flushPort(a)
	err := f.addStatic(macA, a, 1)
	if err == nil || f.lookup(macA, 1) != nil || len(f.list(1)) != 0 {
		t.Fatalf("addStatic on a detached port: err %v, FDB %v; want an error and no entry", err, f.list(1))
	}
}

// Counters' contract: "Frames queued to the port for sending end up in
// TxFrames, DropQueueFull or DropTxError." Frames still waiting in the
// transmit queue when the port is closed are released by drain and counted
// nowhere.
func TestQueuedFramesCountedOnClose(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	const queue = 4
	blocked, _ := tb.add(PortConfig{QueueLen: queue}, PipeConfig{BatchSize: 1})
	// The blocked port's peer never reads: one frame sticks in WriteFrames,
	// queue wait behind it, the rest overflow.
	const n = 20
	for i := range n {
		tb.send(0, ether(Broadcast, macA, etherTypeTest, 100, byte(i)))
	}
	waitFor(t, "the queue to fill", func() bool {
		return blocked.Counters().DropQueueFull == n-queue-1
	})
	if err := blocked.Close(); err != nil {
		t.Fatal(err)
	}
	c := blocked.Counters()
	if got := c.TxFrames + c.DropQueueFull + c.DropTxError; got != n {
		t.Fatalf("%d frames queued to the port, counters account for %d: %+v", n, got, c)
	}
}
