package busypoll

import (
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// reset puts the package's state back as a process starts, with the
// limit lim and a polling time of cur, for the test's length.
func reset(t *testing.T, lim, cur time.Duration) {
	t.Helper()
	set := func(lim, cur time.Duration) {
		limit.Store(int64(lim))
		cursor.Store(int64(cur))
		since.Store(0)
		spinning.Store(false)
	}
	set(lim, cur)
	freshSet(t)
	restore := IgnoreBusy() // the machine's other work does not end a poll
	t.Cleanup(func() { set(DefaultLimit, 0); restore() })
}

// pipe is a pipe whose read end the test watches; write makes it ready.
func pipe(t *testing.T) (r int, write func()) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	Watch(p[0])
	return p[0], func() { unix.Write(p[1], []byte{1}) }
}

// The polling time adapts as haltpoll's: it grows (from growStart,
// doubling, to the limit) when a sleep ended within the limit and longer
// than the polling time; it halves, to none below growStart, when a
// sleep was longer than the limit; else it stays.
func TestNext(t *testing.T) {
	const us = int64(time.Microsecond)
	for _, tc := range []struct{ cur, block, lim, want int64 }{
		{0, 30 * us, 200 * us, 10 * us}, // from none: growStart
		{10 * us, 30 * us, 200 * us, 20 * us},
		{160 * us, 190 * us, 200 * us, 200 * us}, // not past the limit
		{40 * us, 30 * us, 200 * us, 40 * us},    // polling longer would not have helped
		{200 * us, 200 * us, 200 * us, 200 * us},
		{200 * us, 300 * us, 200 * us, 100 * us}, // a long sleep: halves
		{15 * us, 300 * us, 200 * us, 0},         // below growStart: none
		{0, 300 * us, 200 * us, 0},
	} {
		if got := next(tc.cur, tc.block, tc.lim); got != tc.want {
			t.Errorf("next(%d, %d, %d) = %d, want %d", tc.cur, tc.block, tc.lim, got, tc.want)
		}
	}
}

// A loop whose own descriptor is ready again while it polls goes on
// (true), and the process did not sleep: the polling time stays.
func TestIdleSelfReady(t *testing.T) {
	reset(t, time.Second, time.Second)
	self, write := pipe(t)
	pipe(t)
	write()
	if !Idle(self) {
		t.Fatal("Idle with its own descriptor ready: false, want true")
	}
	Woke()
	if c := time.Duration(cursor.Load()); c != time.Second {
		t.Errorf("polling time %v after a poll that found its packet, want 1s as it was", c)
	}
}

// Another loop's descriptor ready: the polling loop gives way at once
// (false, long before its polling time is up), and no sleep is counted.
func TestIdleOtherReady(t *testing.T) {
	reset(t, time.Second, time.Second)
	self, _ := pipe(t)
	_, writeOther := pipe(t)
	writeOther()
	start := time.Now()
	if Idle(self) {
		t.Fatal("Idle with another's descriptor ready: true, want false")
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Idle gave way after %v, not at once", d)
	}
	if since.Load() != 0 {
		t.Error("a loop that gave way to another was counted as sleeping")
	}
}

// Nothing ready: Idle polls its time out and reports false; a wake-up
// soon after (within the limit) makes the next poll longer, one after
// longer than the limit makes it shorter.
func TestIdleTimesOut(t *testing.T) {
	reset(t, 20*time.Millisecond, 100*time.Microsecond)
	self, _ := pipe(t)
	start := time.Now()
	if Idle(self) {
		t.Fatal("Idle with nothing ready: true, want false")
	}
	if d := time.Since(start); d < 100*time.Microsecond {
		t.Errorf("Idle returned after %v, before its polling time (100µs)", d)
	}
	if since.Load() == 0 {
		t.Fatal("a poll that ran out was not counted as a sleep")
	}
	// The sleep's length, as the clock would have it (a loaded machine
	// can stretch a real one past the limit).
	since.Store(nanotime() - int64(time.Millisecond))
	Woke()
	if c := time.Duration(cursor.Load()); c != 200*time.Microsecond {
		t.Errorf("polling time %v after a sleep of 1ms, want it doubled to 200µs", c)
	}
	Woke() // no sleep since: nothing changes
	if c := time.Duration(cursor.Load()); c != 200*time.Microsecond {
		t.Errorf("polling time %v after a second Woke, want 200µs still", c)
	}
	Idle(self)
	since.Store(nanotime() - int64(30*time.Millisecond))
	Woke()
	if c := time.Duration(cursor.Load()); c != 100*time.Microsecond {
		t.Errorf("polling time %v after a sleep past the limit, want it halved to 100µs", c)
	}
}

// Off (a limit of 0), or with another loop polling, Idle does not poll.
func TestIdleOff(t *testing.T) {
	reset(t, 0, time.Second)
	self, write := pipe(t)
	write()
	if Idle(self) {
		t.Error("Idle with polling off: true, want false (the loop sleeps; its descriptor wakes it)")
	}
	SetLimit(time.Second)
	spinning.Store(true)
	if Idle(self) {
		t.Error("Idle while another loop polls: true, want false")
	}
	spinning.Store(false)
	SetLimit(50 * time.Microsecond)
	if c := time.Duration(cursor.Load()); c != 50*time.Microsecond {
		t.Errorf("polling time %v after the limit fell to 50µs, want 50µs", c)
	}
}

// With one CPU for the process's goroutines (GOMAXPROCS=1, the host
// uplink's default), a goroutine that can run is not kept waiting by a
// polling loop: here the one that makes the loop's descriptor ready.
func TestIdleLetsGoroutinesRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	reset(t, 5*time.Second, 5*time.Second)
	self, write := pipe(t)
	go write()
	start := time.Now()
	if !Idle(self) {
		t.Fatal("Idle: false, want true once the goroutine wrote")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the goroutine ran %v into the poll", d)
	}
}

// freshSet gives the test an empty watched set.
func freshSet(t *testing.T) {
	t.Helper()
	epollSet()
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	old := set
	set = fd
	t.Cleanup(func() { set = old; unix.Close(fd) })
}

// A watched descriptor is seen ready, as the caller's or another's, until
// it is unwatched; a closed one leaves the set by itself.
func TestWatchUnwatch(t *testing.T) {
	reset(t, time.Second, 0)
	r, write := pipe(t)
	if got := look(int32(r)); got != readyNone {
		t.Fatalf("an empty pipe: %d, want none ready", got)
	}
	write()
	if got := look(int32(r)); got != readySelf {
		t.Errorf("the caller's pipe written: %d, want the caller's ready", got)
	}
	if got := look(int32(r) + 100); got != readyOther {
		t.Errorf("another's pipe written: %d, want another's ready", got)
	}
	Unwatch(r)
	if got := look(int32(r)); got != readyNone {
		t.Errorf("unwatched: %d, want none ready", got)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	Watch(p[0])
	unix.Write(p[1], []byte{1})
	unix.Close(p[0])
	unix.Close(p[1])
	if got := look(int32(p[0])); got != readyNone {
		t.Errorf("a watched pipe closed: %d, want none ready", got)
	}
}

// A socket a goroutine waits on through Go's network poller (a datagram
// flow's reader) is watched through its RawConn: a loop that polls gives
// way at once when it is ready (with GOMAXPROCS=1 the scheduler would not
// look at its network poller while the loop can run), until it is
// unwatched; once closed, unwatching it does nothing.
func TestWatchConn(t *testing.T) {
	reset(t, 5*time.Second, 5*time.Second)
	self, _ := pipe(t)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(p[0]), "watched") // on Go's network poller
	defer unix.Close(p[1])
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	WatchConn(rc)
	unix.Write(p[1], []byte{1})
	start := time.Now()
	if Idle(self) {
		t.Fatal("Idle: true, want false (another's socket is ready)")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Idle gave way after %v, not at once", d)
	}
	UnwatchConn(rc)
	if got := look(int32(self)); got != readyNone {
		t.Errorf("after UnwatchConn: %d, want none ready", got)
	}
	WatchConn(rc)
	r.Close()
	UnwatchConn(rc) // closed: nothing to do
	if got := look(int32(self)); got != readyNone {
		t.Errorf("a watched socket closed: %d, want none ready", got)
	}
}

// A descriptor closed while its file stays open elsewhere (a dup here, a
// TAP device's descriptor sent to another process in life) stays in the
// watched set, and its events are not taken for those of the next
// descriptor of that number; nor, once a Loop of it closed, for any.
func TestWatchStale(t *testing.T) {
	reset(t, time.Second, 0)
	var p1, p2 [2]int
	for _, p := range []*[2]int{&p1, &p2} {
		if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[1])
	}
	defer unix.Close(p2[0])
	n := p1[0]
	Watch(n)
	held, err := unix.Dup(n) // the file stays open after n closes
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held)
	unix.Close(n)
	unix.Write(p1[1], []byte{1}) // the stale entry is ready from now on
	if err := unix.Dup3(p2[0], n, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	Watch(n) // another file, with n's number
	if got := look(int32(n)); got != readyNone {
		t.Fatalf("the new descriptor empty, the old file ready: %d, want none ready", got)
	}
	unix.Write(p2[1], []byte{1})
	if got := look(int32(n)); got != readySelf {
		t.Errorf("the new descriptor ready: %d, want the caller's ready", got)
	}
	Unwatch(n)
	unix.Close(n)

	// A Loop whose descriptor closed before the Loop did.
	var p3 [2]int
	if err := unix.Pipe2(p3[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p3[1])
	r := os.NewFile(uintptr(p3[0]), "loop")
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	l := NewLoop(rc, func(uintptr) bool { return true })
	held3, err := unix.Dup(p3[0])
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held3)
	r.Close()
	l.Close()
	unix.Write(p3[1], []byte{1})
	if got := look(-1); got != readyNone {
		t.Errorf("a closed Loop's file ready: %d, want none ready", got)
	}
}
