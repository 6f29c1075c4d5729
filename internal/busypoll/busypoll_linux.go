package busypoll

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// set is the epoll set of the watched descriptors, level-triggered, each
// event carrying its descriptor; -1 when it could not be made (polling
// then finds nothing ready, and ends at its time).
var (
	setOnce sync.Once
	set     = -1
	events  [8]unix.EpollEvent // the polling loop's: one polls at a time
	others  = make([]int32, 0, len(events))
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
func Watch(fd int) {
	if ep := epollSet(); ep >= 0 {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev)
	}
}

// Unwatch removes the open descriptor fd from the watched set.
func Unwatch(fd int) {
	if ep := epollSet(); ep >= 0 {
		unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil)
	}
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
	for _, ev := range events[:n] {
		if ev.Fd == self {
			return readySelf
		}
	}
	for _, ev := range events[:n] {
		others = append(others, ev.Fd)
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

// yield lets the other threads on this CPU run (sched_yield).
func yield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
