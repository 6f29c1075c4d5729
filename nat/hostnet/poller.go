package hostnet

import (
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/busypoll"
)

// poller waits for the host sockets of every splice at once, and for the
// published ports' and the datagram flows' (dgramReader): an epoll set
// of its own, edge-triggered, which one goroutine waits on through Go's
// netpoller (an epoll descriptor is readable while it has events). A
// flow costs no goroutine, and one wake-up serves every socket that is
// ready. While that goroutine sleeps, a loop that polls (busypoll, a TAP
// device's reader) serves the set in its stead, so a packet from a host
// socket goes on to the container without a goroutine woken.
type poller struct {
	epfd int
	f    *os.File // epfd, for the netpoller
	// closed is set by close, for a goroutine that polls on, serving
	// other loops (busypoll.Idle true), and would not see f closed: its
	// own read holds f open.
	closed atomic.Bool

	mu   sync.Mutex
	next uint64
	subs map[uint64]func(events uint32) // by the id in the event's data

	// The goroutine's, or its stand-in's (loop): what one wait found.
	events    [64]unix.EpollEvent
	fire      []firing
	waitFn    func(uintptr) bool
	standInFn func(uintptr) bool
	loop      *busypoll.Loop
}

// firing is a subscriber's callback and the events it is told of.
type firing struct {
	ready  func(events uint32)
	events uint32
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	p := &poller{epfd: epfd, f: os.NewFile(uintptr(epfd), "hostnet-epoll"), subs: map[uint64]func(uint32){}}
	p.waitFn = p.wait
	p.standInFn = p.standIn
	return p, nil
}

// add watches fd for events (edge-triggered), calling ready with what
// happened, from the poller's goroutine or its stand-in, never two calls
// at once; it returns the id that modify and remove take.
func (p *poller) add(fd int, events uint32, ready func(events uint32)) (uint64, error) {
	p.mu.Lock()
	p.next++
	id := p.next
	p.subs[id] = ready
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: events | unix.EPOLLET}
	setID(&ev, id)
	if err := rawEpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.subs, id)
		p.mu.Unlock()
		return 0, os.NewSyscallError("epoll_ctl", err)
	}
	return id, nil
}

// modify changes the events fd, watched as id, is watched for.
func (p *poller) modify(fd int, id uint64, events uint32) error {
	ev := unix.EpollEvent{Events: events | unix.EPOLLET}
	setID(&ev, id)
	return rawEpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// remove stops watching fd, watched as id; the caller closes fd after.
func (p *poller) remove(fd int, id uint64) {
	rawEpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	p.mu.Lock()
	delete(p.subs, id)
	p.mu.Unlock()
}

// forget stops delivering the events of fd, watched as id, which the
// caller closes now: it must be fd's only descriptor, whose closing takes
// it out of the epoll set. A system call less than remove (once per
// connection).
func (p *poller) forget(id uint64) {
	p.mu.Lock()
	delete(p.subs, id)
	p.mu.Unlock()
}

// setID stores id in the event's data (Fd and Pad, 8 bytes).
func setID(ev *unix.EpollEvent, id uint64) {
	ev.Fd, ev.Pad = int32(id), int32(id>>32)
}

func getID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// run delivers events until close.
func (p *poller) run() {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return
	}
	p.loop = busypoll.NewLoop(rc, p.standInFn)
	for !p.closed.Load() && rc.Read(p.waitFn) == nil {
	}
	p.loop.Close()
}

// wait takes what is ready without blocking and delivers it; it reports
// false to wait for more (the netpoller keeps a wake-up that came
// meanwhile), once a moment's polling found nothing (busypoll).
func (p *poller) wait(fd uintptr) bool {
	p.loop.Enter()
	defer p.loop.Exit()
	busypoll.Woke()
	for {
		if p.closed.Load() {
			return true
		}
		n, err := p.deliver(fd)
		if err {
			return true
		}
		if n < len(p.events) && !busypoll.Idle(int(fd)) {
			return false
		}
	}
}

// standIn is the busypoll.Loop's serve of the goroutine's loop, when a
// polling loop finds the epoll set ready while the goroutine sleeps: it
// delivers one round of what is ready, and leaves a failure to the
// goroutine. One round: the polling loop looks again at once, and finds
// the set still ready if the round was full, but within its own time,
// which rounds that are full again and again would otherwise outlast,
// keeping it from its own device and its Close.
func (p *poller) standIn(fd uintptr) bool {
	_, err := p.deliver(fd)
	return !err
}

// deliver takes what is ready without blocking and delivers it, and says
// how many events it took; err when the epoll set failed.
func (p *poller) deliver(fd uintptr) (n int, err bool) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
	for e == unix.EINTR {
		r, _, e = unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
	}
	if e != 0 {
		return 0, true
	}
	n = int(r)
	p.mu.Lock()
	for i := range n {
		if f := p.subs[getID(&p.events[i])]; f != nil {
			p.fire = append(p.fire, firing{f, p.events[i].Events})
		}
	}
	p.mu.Unlock()
	for _, f := range p.fire {
		f.ready(f.events)
	}
	clear(p.fire)
	p.fire = p.fire[:0]
	return n, false
}

// close stops the goroutine (run returns) and closes the epoll set.
func (p *poller) close() {
	p.closed.Store(true)
	p.f.Close()
}
