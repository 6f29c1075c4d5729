// Package busypoll lets a process's event loops (the bridge's TAP
// readers, the host uplink's poller) poll for a moment before they sleep,
// as the kernel's cpuidle-haltpoll driver polls before a virtual CPU
// halts. A thread that sleeps in epoll_wait and is woken by a packet pays
// for the wake-up of its CPU, tens of microseconds in a virtual machine,
// and a request and its answer through the gateway pay it twice, once
// each way. A loop that polls meanwhile takes the packet at once.
//
// One loop polls at a time, for the whole process. It looks at every
// watched descriptor (one epoll set's readiness), not only its own. An
// event loop's that is ready (a Loop's: a TAP device's, the host uplink's
// poller's) it serves itself, in that loop's stead, and polls on: the
// loop's own goroutine, asleep, is not woken, and the Go scheduler and its
// network poller do not come in between. A socket's that a goroutine
// waits on through Go's network poller (WatchConn) it gives way to at
// once, since the Go scheduler would not look at it while the polling
// goroutine can run.
// Between looks it lets the process's other runnable goroutines and the
// machine's other threads run, and it stops as soon as another thread
// had its CPU. How long it polls
// adapts as haltpoll's limit does: it grows (doubling, up to the limit)
// when the process, having gone to sleep, was woken within the limit, and
// halves when the sleep was longer, so that a trickle of packets costs
// next to nothing and an idle process nothing at all.
package busypoll

import (
	"bytes"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultLimit is the longest a loop polls before it sleeps, unless
// SetLimit says otherwise: haltpoll's default (guest_halt_poll_ns).
const DefaultLimit = 200 * time.Microsecond

// growStart is the first polling time after none, as haltpoll's
// guest_halt_poll_grow_start, scaled to this limit.
const growStart = 10 * time.Microsecond

var (
	limit    atomic.Int64 // ns; 0: off
	cursor   atomic.Int64 // ns: how long the next loop polls
	since    atomic.Int64 // when a loop stopped polling and slept (monotonic ns), 0 when none
	spinning atomic.Bool
)

func init() { limit.Store(int64(DefaultLimit)) }

// SetLimit sets the longest a loop polls before it sleeps; 0 or less
// turns polling off. It applies to the whole process at once.
func SetLimit(d time.Duration) {
	limit.Store(max(int64(d), 0))
	cursor.Store(min(cursor.Load(), int64(max(d, 0))))
}

// Prime sets the polling time to the limit, as a steady stream of packets
// would make it: for tests of the loops, which would otherwise have to
// sleep and be woken first.
func Prime() { cursor.Store(limit.Load()) }

// InIdle reports whether the calling goroutine is inside Idle, from its
// stack: for tests, that a Loop was served in its goroutine's stead.
func InIdle() bool {
	buf := make([]byte, 64<<10)
	return bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("internal/busypoll.Idle("))
}

// PollUntil is for tests of the loops that a polling loop serves in their
// stead: it polls as a loop that ran dry does (Idle, on a descriptor of
// its own that is never ready), calling nudge from another goroutine at
// the start of each poll, until done reports true or d has passed, and
// it reports done's last answer and nudge's error, which ends it. It runs
// the process's goroutines on one CPU (as usernat does by default: with
// more, an idle one's network poller may wake a loop's own goroutine
// before the poll sees its descriptor ready), with a polling time of
// 10ms, primed, which a busy machine does not end. A loop's own goroutine
// may be awake when nudge's packet comes, or polling itself: then it
// takes it, and the next poll begins once that one's is over.
func PollUntil(d time.Duration, nudge func() error, done func() bool) (bool, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return false, err
	}
	defer w.Close()
	defer r.Close()
	self := int(r.Fd())
	Watch(self)
	defer Unwatch(self)
	const pollFor = 10 * time.Millisecond
	defer SetLimit(Limit())
	SetLimit(pollFor)
	defer IgnoreBusy()()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	nudges, nudged := make(chan struct{}), make(chan error, 1)
	go func() {
		for range nudges {
			if err := nudge(); err != nil {
				nudged <- err
				return
			}
		}
		nudged <- nil
	}()
	for deadline := time.Now().Add(d); !done() && time.Now().Before(deadline); {
		select {
		case nudges <- struct{}{}:
		case err := <-nudged:
			close(nudges)
			return done(), err
		}
		Prime()
		Idle(self) // nudge runs meanwhile
		if !done() {
			time.Sleep(3 * pollFor)
		}
	}
	close(nudges)
	return done(), <-nudged
}

// Limit returns what SetLimit set (DefaultLimit at first).
func Limit() time.Duration { return time.Duration(limit.Load()) }

// WatchConn adds c's descriptor, that of an event loop or of a socket a
// goroutine waits on through Go's network poller, to those a polling loop
// looks at: a loop that polls gives way to its readiness at once. With
// GOMAXPROCS=1 the Go scheduler does not look at its network poller while
// a polling goroutine can run, so a descriptor not watched would wait
// until the poll ends.
func WatchConn(c syscall.RawConn) { c.Control(func(fd uintptr) { Watch(int(fd)) }) }

// UnwatchConn removes c's descriptor, if it is still open: a descriptor
// closed has left the set by itself, and its number may be another's now.
func UnwatchConn(c syscall.RawConn) { c.Control(func(fd uintptr) { Unwatch(int(fd)) }) }

// Woke is what an event loop calls each time it is woken (its descriptor
// reported ready): the polling time follows how long the process slept.
func Woke() {
	if s := since.Swap(0); s != 0 {
		cursor.Store(next(cursor.Load(), nanotime()-s, limit.Load()))
	}
}

// next is the polling time after one of cur, when the process then slept
// until block ns after it began to poll, within the limit lim: as
// haltpoll's adjust_poll_limit, it grows when polling longer would have
// caught the wake-up, and halves (to none, below growStart) when the
// sleep was longer than the limit.
func next(cur, block, lim int64) int64 {
	switch {
	case block > cur && block <= lim:
		return min(max(2*cur, int64(growStart)), lim)
	case block > lim:
		if cur /= 2; cur < int64(growStart) {
			return 0
		}
		return cur
	}
	return cur
}

// Idle is what an event loop whose descriptor self ran dry calls before
// it sleeps: it polls every watched descriptor, for the current polling
// time at most, and serves the Loops found ready in their goroutines'
// stead. It reports true when self is ready again, or when the time is up
// after it served another Loop: the loop goes on instead of sleeping, and
// looks at its own state (a Close, say) before it calls Idle again, which
// a stream of others' packets would otherwise keep from it. It reports
// false for the loop to sleep: the time is up, polling is off or another
// loop is polling, or a descriptor is ready whose goroutine must run (not
// a Loop's, or one Idle cannot serve), which the Go runtime then runs (its
// network poller finds it ready without sleeping).
func Idle(self int) bool {
	lim := limit.Load()
	if lim <= 0 || !spinning.CompareAndSwap(false, true) {
		return false
	}
	defer spinning.Store(false)
	start := nanotime()
	budget := min(cursor.Load(), lim)
	served := false
	for budget > 0 {
		found := false
		switch look(int32(self)) {
		case readySelf:
			return true
		case readyOther:
			if !standIn() {
				return false
			}
			served, found = true, true
		}
		if nanotime()-start >= budget {
			if served {
				return true
			}
			break
		}
		runtime.Gosched() // the process's goroutines that can run, and its timers
		if found {
			continue // no yield: the next packet may be on its way
		}
		t := nanotime()
		yield() // and the machine's threads on this CPU
		if nanotime()-t > busyYield.Load() {
			// Another thread had this CPU meanwhile: the machine is
			// busy, its CPUs awake, and a wake-up cheap; polling
			// would only take CPU time from those threads.
			return false
		}
	}
	since.Store(start)
	return false
}

// A Loop is an event loop that a polling loop may serve in its stead
// (see Idle): its descriptor is watched, and serve, run with it, takes
// what is ready there without waiting, as one turn of the loop would. The
// loop's own runs and serve's never overlap: the loop's goroutine runs
// between Enter and Exit, and a polling loop serves it only when it can
// take the same lock at once (the goroutine asleep, waiting for the
// descriptor's news), else gives way to it. The goroutine may then be
// woken for news serve took already, and find nothing: serve must leave
// the loop's state so that it finds nothing harmlessly.
type Loop struct {
	mu     sync.Mutex
	closed bool
	fd     int32
	gen    int32 // of its watch
	rc     syscall.RawConn
	serve  func(fd uintptr) bool
	// standIn runs serve for rc.Control, made once so that standing in
	// does not allocate; served is what serve said, under mu.
	standIn func(fd uintptr)
	served  bool
}

// loops are the Loops by descriptor.
var loops sync.Map

// NewLoop watches rc's descriptor as an event loop's, which serve serves
// in the loop's stead: serve reports false when it could not (the loop's
// goroutine must then run, for a failed read, say), and a polling loop
// then gives way to it. The caller makes NewLoop before its loop's first
// run and closes it after its last.
func NewLoop(rc syscall.RawConn, serve func(fd uintptr) bool) *Loop {
	l := &Loop{fd: -1, rc: rc, serve: serve}
	l.standIn = func(fd uintptr) { l.served = l.serve(fd) }
	rc.Control(func(fd uintptr) {
		l.fd = int32(fd)
		loops.Store(l.fd, l)
		l.gen = watch(int(fd))
	})
	return l
}

// Enter and Exit bracket each run of the loop by its own goroutine.
func (l *Loop) Enter() { l.mu.Lock() }
func (l *Loop) Exit()  { l.mu.Unlock() }

// Close stops the watching: once it returns, serve does not run again.
func (l *Loop) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if l.fd >= 0 {
		loops.CompareAndDelete(l.fd, l)
		UnwatchConn(l.rc)
		forget(l.fd, l.gen) // closed already, its descriptor may stay in the set
	}
}

// standInFor serves the Loop of descriptor fd in its goroutine's stead,
// and reports whether it did: not for a descriptor that is no Loop's, a
// Loop its goroutine runs or that is closed, or whose serve said no.
func standInFor(fd int32) bool {
	v, ok := loops.Load(fd)
	if !ok {
		return false
	}
	l := v.(*Loop)
	if !l.mu.TryLock() {
		return false
	}
	defer l.mu.Unlock()
	l.served = false
	if !l.closed {
		// Control holds the descriptor open while serve uses it.
		l.rc.Control(l.standIn)
	}
	return l.served
}

// busyYield is how long a sched_yield that let another thread run takes
// at least, in ns; one that found none returns in a microsecond or two.
// (IgnoreBusy changes it, for the tests, whose machine may be busy.)
var busyYield atomic.Int64

func init() { busyYield.Store(int64(20 * time.Microsecond)) }

// IgnoreBusy keeps the machine's other work from ending a poll, until
// restore: for tests of the loops, whose machine may be busy.
func IgnoreBusy() (restore func()) {
	old := busyYield.Swap(int64(time.Hour))
	return func() { busyYield.Store(old) }
}

// What a look at the watched descriptors found.
const (
	readyNone = iota
	readySelf
	readyOther
)

// epoch makes nanotime's values positive, so 0 can mean none.
var epoch = time.Now().Add(-time.Second)

// nanotime is a monotonic clock in ns, never 0.
func nanotime() int64 { return int64(time.Since(epoch)) }
