package busypoll

import (
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopPipe is a pipe on Go's network poller, as an event loop's
// descriptor is, and the RawConn a Loop takes; write makes it ready.
func loopPipe(t *testing.T) (r *os.File, write func()) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r = os.NewFile(uintptr(p[0]), "loop")
	t.Cleanup(func() { r.Close(); unix.Close(p[1]) })
	return r, func() { unix.Write(p[1], []byte{1}) }
}

// drain reads what fd holds, and says how many bytes.
func drain(fd uintptr) int {
	var b [64]byte
	total := 0
	for {
		n, err := unix.Read(int(fd), b[:])
		if err != nil || n <= 0 {
			return total
		}
		total += n
	}
}

// newLoop makes a Loop of r whose serve drains it, counting its runs, and
// then does then.
func newLoop(t *testing.T, r *os.File, ok bool, then func()) (*Loop, *atomic.Int32) {
	t.Helper()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	l := NewLoop(rc, func(fd uintptr) bool {
		runs.Add(1)
		drain(fd)
		if then != nil {
			then()
		}
		return ok
	})
	t.Cleanup(l.Close)
	return l, &runs
}

// A Loop's descriptor ready while another loop polls: the polling loop
// serves it there and then (its goroutine is not woken), and polls on
// rather than giving way; here the serve makes the poller's own
// descriptor ready, so Idle reports true.
func TestIdleServesLoop(t *testing.T) {
	reset(t, time.Second, time.Second)
	self, writeSelf := pipe(t)
	r, write := loopPipe(t)
	_, runs := newLoop(t, r, true, writeSelf)
	write()
	if !Idle(self) {
		t.Fatal("Idle: false, want true (the Loop served, then its own descriptor ready)")
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the Loop was served %d times, want 1", n)
	}
	if got := look(int32(self)); got != readySelf {
		t.Errorf("after: %d, want only the poller's own descriptor ready (the Loop's drained)", got)
	}
}

// A Loop that its own goroutine runs (between Enter and Exit) is not
// served in its stead: the polling loop gives way at once, as to any
// other descriptor; so too when serve says it could not.
func TestIdleGivesWayToLoop(t *testing.T) {
	reset(t, time.Second, time.Second)
	self, _ := pipe(t)
	r, write := loopPipe(t)
	l, runs := newLoop(t, r, true, nil)
	write()
	l.Enter()
	start := time.Now()
	if Idle(self) {
		t.Fatal("Idle with a running Loop ready: true, want false")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Idle gave way after %v, not at once", d)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("a running Loop was served %d times in its goroutine's stead", n)
	}
	l.Exit()

	r2, write2 := loopPipe(t)
	_, runs2 := newLoop(t, r2, false, nil)
	write2()
	if Idle(self) {
		t.Fatal("Idle with a Loop whose serve failed: true, want false")
	}
	if n := runs2.Load(); n != 1 {
		t.Errorf("the failing Loop was served %d times, want once", n)
	}
}

// A closed Loop is not served, nor watched.
func TestLoopClose(t *testing.T) {
	reset(t, time.Second, time.Second)
	self, _ := pipe(t)
	r, write := loopPipe(t)
	l, runs := newLoop(t, r, true, nil)
	l.Close()
	write()
	if got := look(int32(self)); got != readyNone {
		t.Errorf("a closed Loop's descriptor ready: %d, want none ready (unwatched)", got)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("a closed Loop was served %d times", n)
	}
	if standInFor(int32(r.Fd())) {
		t.Error("standInFor served a closed Loop")
	}
}

// A Loop's goroutine and the loops that serve it in its stead never run
// it at once, and between them take every byte: a goroutine reads the
// pipe through Go's network poller (Enter, drain, Exit, wait) while this
// one polls and serves it, as bytes come one by one.
func TestLoopNeverOverlaps(t *testing.T) {
	reset(t, time.Second, 50*time.Millisecond)
	self, _ := pipe(t)
	r, write := loopPipe(t)
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var inside, overlaps, got, standIns atomic.Int32
	run := func(fd uintptr) {
		if inside.Add(1) != 1 {
			overlaps.Add(1)
		}
		got.Add(int32(drain(fd)))
		inside.Add(-1)
	}
	l := NewLoop(rc, func(fd uintptr) bool { standIns.Add(1); run(fd); return true })
	done := make(chan struct{})
	go func() {
		defer close(done)
		rc.Read(func(fd uintptr) bool {
			l.Enter()
			defer l.Exit()
			run(fd)
			return false // wait for more, until r closes
		})
	}()
	const bytes = 2000
	go func() {
		for range bytes {
			write()
			time.Sleep(10 * time.Microsecond)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < bytes && time.Now().Before(deadline) {
		Idle(self)
	}
	l.Close()
	r.Close()
	<-done
	if n := got.Load(); n != bytes {
		t.Errorf("read %d bytes, want %d", n, bytes)
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("the Loop ran in two places at once %d times", n)
	}
	if standIns.Load() == 0 {
		t.Error("the polling loop never served the Loop in its goroutine's stead")
	}
}

// A stream of packets for another Loop does not keep a polling loop in
// Idle past its time: having served, it reports true then, so its loop
// looks at its own state (a Close) before it polls again.
func TestIdleServesWithinItsTime(t *testing.T) {
	reset(t, time.Second, 20*time.Millisecond)
	self, _ := pipe(t)
	r, write := loopPipe(t)
	_, runs := newLoop(t, r, true, nil)
	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		for {
			select {
			case <-stop:
				return
			default:
				write()
			}
		}
	}()
	defer func() { close(stop); <-flooded }()
	returned := make(chan bool, 1)
	go func() { returned <- Idle(self) }()
	select {
	case ok := <-returned:
		if !ok {
			t.Error("Idle after serving another Loop until its time was up: false, want true (look, then poll again)")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Idle still serving another Loop's stream after 10s, its time 20ms")
	}
	if runs.Load() == 0 {
		t.Error("the flooded Loop was never served")
	}
}

// raceEnabled says whether the tests run with the race detector
// (race_test.go).
var raceEnabled bool

// Standing in for a Loop allocates nothing: it runs once per packet.
// (With the race detector, RawConn.Control itself allocates once.)
func TestStandInAllocates(t *testing.T) {
	reset(t, time.Second, time.Second)
	r, write := loopPipe(t)
	l, _ := newLoop(t, r, true, nil)
	write()
	want := 0.0
	if raceEnabled {
		want = 1
	}
	if n := testing.AllocsPerRun(100, func() { standInFor(l.fd) }); n > want {
		t.Errorf("standInFor: %v allocations, want %v", n, want)
	}
}

// A polling loop that serves another Loop's stream, which never runs
// dry, still lets the process's other goroutines run between its looks:
// on one CPU, a goroutine that can run gets to while Idle lasts (5ms,
// under the 10ms after which the runtime would preempt it).
func TestServingLetsGoroutinesRun(t *testing.T) {
	reset(t, 5*time.Millisecond, 5*time.Millisecond)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	self, _ := pipe(t)
	r, write := loopPipe(t)
	_, runs := newLoop(t, r, true, write) // each serve leaves it ready again
	write()
	var started, polling, ranMeanwhile, stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		started.Store(true)
		for !stop.Load() {
			if polling.Load() {
				ranMeanwhile.Store(true)
			}
			runtime.Gosched()
		}
	}()
	for !started.Load() {
		runtime.Gosched()
	}
	// Scheduled afresh, so that the runtime's preemption (after 10ms of
	// running) does not come within Idle's 5ms and let the goroutine run.
	runtime.Gosched()
	polling.Store(true)
	Idle(self)
	polling.Store(false)
	stop.Store(true)
	<-done
	if n := runs.Load(); n < 2 {
		t.Fatalf("the flooded Loop was served %d times, want again and again", n)
	}
	if !ranMeanwhile.Load() {
		t.Error("no other goroutine ran while Idle served another Loop's stream")
	}
}
