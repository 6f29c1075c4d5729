// Package busypoll lets a process's event loops (the bridge's TAP
// readers, the host uplink's poller) poll for a moment before they sleep,
// as the kernel's cpuidle-haltpoll driver polls before a virtual CPU
// halts. A thread that sleeps in epoll_wait and is woken by a packet pays
// for the wake-up of its CPU, tens of microseconds in a virtual machine,
// and a request and its answer through the gateway pay it twice, once
// each way. A loop that polls meanwhile takes the packet at once.
//
// One loop polls at a time, for the whole process. It looks at every
// watched descriptor (one epoll set's readiness), not only its own, and
// gives way at once to the loop or goroutine whose descriptor is ready:
// the event loops', and the sockets' that goroutines wait on through Go's
// network poller (the host uplink's datagram flows), which the Go
// scheduler would not look at while the polling goroutine can run.
// Between looks it lets the process's other runnable goroutines and the
// machine's other threads run, and it stops as soon as another thread
// had its CPU. How long it polls
// adapts as haltpoll's limit does: it grows (doubling, up to the limit)
// when the process, having gone to sleep, was woken within the limit, and
// halves when the sleep was longer, so that a trickle of packets costs
// next to nothing and an idle process nothing at all.
package busypoll

import (
	"runtime"
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
// time at most. It reports true when self is ready again: the loop goes
// on instead of sleeping. It reports false for the loop to sleep: the
// time is up, polling is off or another loop is polling, or another
// loop's descriptor is ready, whose loop the Go runtime then runs (its
// network poller finds it ready without sleeping).
func Idle(self int) bool {
	lim := limit.Load()
	if lim <= 0 || !spinning.CompareAndSwap(false, true) {
		return false
	}
	defer spinning.Store(false)
	start := nanotime()
	budget := min(cursor.Load(), lim)
	for budget > 0 {
		switch look(int32(self)) {
		case readySelf:
			return true
		case readyOther:
			return false
		}
		if nanotime()-start >= budget {
			break
		}
		runtime.Gosched() // the process's goroutines that can run
		t := nanotime()
		yield() // and the machine's threads on this CPU
		if nanotime()-t > int64(busyYield) {
			// Another thread had this CPU meanwhile: the machine is
			// busy, its CPUs awake, and a wake-up cheap; polling
			// would only take CPU time from those threads.
			return false
		}
	}
	since.Store(start)
	return false
}

// busyYield is how long a sched_yield that let another thread run takes
// at least; one that found none returns in a microsecond or two. (A
// variable for the tests, whose machine may be busy.)
var busyYield = 20 * time.Microsecond

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
