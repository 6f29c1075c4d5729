package busypoll

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// set is the epoll set of the watched descriptors, level-triggered, each
// event carrying its descriptor and the generation of its watch; -1 when
// it could not be made (polling then finds nothing ready, and ends at its
// time).
var (
	setOnce sync.Once
	set     = -1
	events  [8]unix.EpollEvent // the polling loop's: one polls at a time
	others  = make([]int32, 0, len(events))
)

// gens holds each watched descriptor's generation (an int32), which its
// events carry: an event of another generation is stale, and ignored. A
// descriptor closed while its file stays open elsewhere (a TAP device's
// sent to another process, say) stays in the set, where its number
// cannot be taken out any more; its events must not be taken for those
// of the next descriptor of that number.
var (
	gens sync.Map
	gen  atomic.Int32
)

func epollSet() int {
	setOnce.Do(func() {
		if fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC); err == nil {
			set = fd
		}
	})
	return set
}

// Watch adds the open descriptor fd to the watched set (see WatchConn).
func Watch(fd int) { watch(fd) }

// watch is Watch, and returns the generation of the watch.
func watch(fd int) int32 {
	ep := epollSet()
	if ep < 0 {
		return 0
	}
	g := gen.Add(1)
	gens.Store(int32(fd), g)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd), Pad: g}
	if unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev) == unix.EEXIST {
		unix.EpollCtl(ep, unix.EPOLL_CTL_MOD, fd, &ev) // watched again
	}
	return g
}

// Unwatch removes the open descriptor fd from the watched set.
func Unwatch(fd int) {
	if ep := epollSet(); ep >= 0 {
		unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil)
		gens.Delete(int32(fd))
	}
}

// forget makes the events of descriptor fd's watch of generation g stale,
// once fd is closed (Unwatch can no longer take it out of the set).
func forget(fd, g int32) { gens.CompareAndDelete(fd, g) }

// live says whether ev is of its descriptor's latest watch.
func live(ev *unix.EpollEvent) bool {
	g, ok := gens.Load(ev.Fd)
	return ok && g.(int32) == ev.Pad
}

// look says, without waiting, which watched descriptors are ready: self,
// another, or none. The others it found stay in others, for standIn.
func look(self int32) int {
	others = others[:0]
	if set < 0 {
		return readyNone
	}
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(set), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	n := int(r)
	if e != 0 || n <= 0 {
		return readyNone
	}
	for i := range events[:n] {
		ev := &events[i]
		if !live(ev) {
			continue
		}
		if ev.Fd == self {
			return readySelf
		}
		others = append(others, ev.Fd)
	}
	if len(others) == 0 {
		return readyNone
	}
	return readyOther
}

// standIn serves the Loops whose descriptors the last look found ready,
// in their goroutines' stead, and reports whether it served them all: if
// not, the polling loop gives way.
func standIn() bool {
	for _, fd := range others {
		if !standInFor(fd) {
			return false
		}
	}
	return true
}

// yield lets the other threads on this CPU run (sched_yield). The call is
// raw, unseen by the Go scheduler: a yield that let another thread run is
// a P held in a system call to the runtime's monitor, which would hand the
// P to another thread (woken with a futex, to find nothing to run) and
// keep itself waking every 20µs. On one CPU (usernat's default) there is
// no other P, and a yield that long ends the poll anyway (busyYield).
func yield() { unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
