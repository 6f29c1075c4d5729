package hostnet

import (
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// dgramReader reads a datagram socket of the uplink's (a UDP flow's, a
// published UDP port's, an echo flow's) in the poller, as a splice's host
// socket is: a datagram flow costs no goroutine, and a loop that polls
// (busypoll) reads its datagrams in the poller's stead, so an answer from
// the host goes on to the container without a goroutine woken.
type dgramReader struct {
	u    *Uplink
	rc   syscall.RawConn // the socket's: a read holds it open, a close waits for the read
	es   *errorSender    // what the network's errors about the socket's datagrams are about; nil: none come
	read func(fd int, buf []byte) (int, error)
	fail func(err error) // the socket failed for good (read's error): called once, after the read

	mu      sync.Mutex
	id      uint64 // in the poller; 0 while not watched
	stopped bool

	// readFn is readAll, made once so that a round allocates nothing;
	// events and fatal are its argument and result, the poller's alone
	// (its rounds never overlap).
	readFn func(fd uintptr)
	events uint32
	fatal  error
}

// dgramBudget is the most datagrams one round of the poller reads from one
// socket: a flood to one port does not hold up the others' traffic, nor
// every TCP connection's. With more there, the socket is armed again, and
// the poller comes back to it after the others ready meanwhile.
const dgramBudget = 64

// newDgramReader makes the reader of the socket rc, not watched yet
// (watch): read takes one datagram from the socket (its descriptor) into
// buf, behind room for the IPv4 and UDP headers of the packet it becomes,
// passes it on, and returns what the system call did; fail is told of an
// error of read's that is neither EAGAIN nor an ICMP error (icmpReported),
// which es sends on to the container.
func (u *Uplink) newDgramReader(rc syscall.RawConn, es *errorSender, read func(fd int, buf []byte) (int, error), fail func(error)) *dgramReader {
	r := &dgramReader{u: u, rc: rc, es: es, read: read, fail: fail}
	r.readFn = r.readAll
	return r
}

// watch has the poller read the socket from now on, and at once if
// datagrams are there already; net.ErrClosed once stop was called.
func (r *dgramReader) watch() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return net.ErrClosed
	}
	var err error
	if cerr := r.rc.Control(func(fd uintptr) { r.id, err = r.u.poll.add(int(fd), unix.EPOLLIN, r.ready) }); cerr != nil {
		return cerr
	}
	return err
}

// stop has the poller leave the socket, which the caller closes next (as
// its only descriptor: its closing takes it out of the epoll set).
func (r *dgramReader) stop() {
	r.mu.Lock()
	r.stopped = true
	id := r.id
	r.mu.Unlock()
	if id != 0 {
		r.u.poll.forget(id)
	}
}

// ready reads what the socket holds, dgramBudget datagrams at most, in the
// poller. A socket closed meanwhile is nothing more: whoever closed it
// ended its flow.
func (r *dgramReader) ready(events uint32) {
	r.events, r.fatal = events, nil
	if err := r.rc.Control(r.readFn); err != nil {
		return
	}
	if fatal := r.fatal; fatal != nil {
		// Outside Control: ending the flow closes the socket, and a
		// close waits for the socket's reads.
		r.fatal = nil
		r.fail(fatal)
	}
}

// readAll is ready's read of the socket fd, told of r.events. An ICMP
// error the socket reports is no end: the flow carries on, as UDP and
// echo do, and the container hears of it (forwardErrors), as its own
// socket would from the real network. Another error is the socket's
// end, left in r.fatal.
func (r *dgramReader) readAll(fd uintptr) {
	buf := r.u.dgramBuf()
	for range dgramBudget {
		_, err := r.read(int(fd), buf)
		switch {
		case err == nil || err == unix.EINTR:
		case err == unix.EAGAIN:
			if r.events&unix.EPOLLERR != 0 && r.es != nil {
				// An error queued with nothing to read, and the
				// socket's pending error taken meanwhile (by a
				// send: sendConnected), which the read would have
				// reported: the queue still holds it.
				r.u.forwardErrors(int(fd), r.es)
			}
			return
		case icmpReported(err) && r.es != nil:
			r.u.forwardErrors(int(fd), r.es)
		default:
			r.fatal = err
			return
		}
	}
	// More may be there: news again in the poller's next round. Here,
	// where the descriptor cannot be another socket's yet, and is in
	// the set: the call cannot fail but for memory.
	r.mu.Lock()
	if !r.stopped {
		r.u.poll.modify(int(fd), r.id, unix.EPOLLIN)
	}
	r.mu.Unlock()
}

// dgramBuf is the buffer the poller reads datagrams into, behind room for
// the headers of the packet each becomes: one for every socket, since the
// poller reads one at a time, made the first time a datagram comes.
func (u *Uplink) dgramBuf() []byte {
	if u.dgBuf == nil {
		u.dgBuf = make([]byte, 28+udpRead)
	}
	return u.dgBuf
}

// A sender writes a datagram flow's packets from the container to its
// host socket without waiting (RawConn.Write), through a function made
// once: a closure per datagram would be an allocation per datagram. Its
// lock orders two goroutines sending on one flow at once (two TAP
// devices' loops, when a container sends with another's address), as the
// socket's own write lock would.
type sender struct {
	mu       sync.Mutex
	rc       syscall.RawConn
	writeFn  func(fd uintptr) bool // write, with pkt and msg: made once, by init
	pkt, msg []byte                // the datagram being written, under mu
}

// init makes s write through rc with write, which sends msg, the
// payload of the container's packet pkt, to the socket fd.
func (s *sender) init(rc syscall.RawConn, write func(fd int, pkt, msg []byte)) {
	s.rc = rc
	s.writeFn = func(fd uintptr) bool {
		write(int(fd), s.pkt, s.msg)
		return true // never waits: a full socket drops (write says so)
	}
}

// send writes msg, the payload of the container's packet pkt, to the
// socket; pkt and msg are the caller's again when it returns.
func (s *sender) send(pkt, msg []byte) {
	s.mu.Lock()
	s.pkt, s.msg = pkt, msg
	s.rc.Write(s.writeFn)
	s.pkt, s.msg = nil, nil
	s.mu.Unlock()
}
