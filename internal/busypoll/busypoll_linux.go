package busypoll

import "golang.org/x/sys/unix"

// pollSet is one Idle's poll(2) set, made again only when the watched
// descriptors change.
type pollSet struct {
	from *[]int32
	fds  []unix.PollFd
	buf  [16]unix.PollFd
}

// poll looks, without waiting, at the descriptors watched (Watch's list),
// and says which are ready: self, another, or none.
func (s *pollSet) poll(watched *[]int32, self int32) int {
	if watched == nil {
		return readyNone
	}
	if s.from != watched {
		s.from = watched
		s.fds = s.buf[:0]
		for _, fd := range *watched {
			s.fds = append(s.fds, unix.PollFd{Fd: fd, Events: unix.POLLIN})
		}
	}
	for i := range s.fds {
		s.fds[i].Revents = 0
	}
	n, err := unix.Poll(s.fds, 0)
	if err != nil || n <= 0 {
		return readyNone
	}
	for _, f := range s.fds {
		if f.Fd == self && f.Revents != 0 {
			return readySelf
		}
	}
	return readyOther
}

// yield lets the other threads on this CPU run (sched_yield).
func yield() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
