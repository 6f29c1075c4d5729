package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
)

// maxInFlight bounds the TCP connections being opened at once, each way
// (the host socket's connection and the container's handshake): a
// container's SYNs beyond it are dropped and sent again, a published
// port's clients beyond it reset. One container has at most
// maxInFlightPerSource of them: its connections to silent destinations,
// or a container that does not answer its published ports' clients,
// hold their places for ConnectTimeout, and would else take them all.
const (
	maxInFlight          = 1024
	maxInFlightPerSource = maxInFlight / 4
)

// inFlight counts the TCP connections being opened one way, in all and
// per container address, within maxInFlight and maxInFlightPerSource.
type inFlight struct {
	mu sync.Mutex
	c  srcCount
}

// take counts a connection of the container src about to be opened, and
// reports false (counting nothing) when there is no place for it.
func (f *inFlight) take(src netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c.take(src, maxInFlight, maxInFlightPerSource)
}

// give gives back a place take counted for src.
func (f *inFlight) give(src netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.c.give(src)
}

// len is how many connections are being opened.
func (f *inFlight) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.c.n
}

// srcCount counts places taken, in all and per source address, within
// caps; its owner locks it. The zero value is ready.
type srcCount struct {
	n  int
	by map[netip.Addr]int
}

// take counts a place for src, and reports false (counting nothing)
// when total places are taken, or per by src (0 for no cap).
func (c *srcCount) take(src netip.Addr, total, per int) bool {
	if total > 0 && c.n >= total || per > 0 && c.by[src] >= per {
		return false
	}
	if c.by == nil {
		c.by = map[netip.Addr]int{}
	}
	c.n++
	c.by[src]++
	return true
}

// give gives back a place take counted for src.
func (c *srcCount) give(src netip.Addr) {
	c.n--
	if c.by[src]--; c.by[src] <= 0 {
		delete(c.by, src)
	}
}

// presented is the address a client of a published port is shown to the
// container as: its own, or the gateway's for a client on the host's
// loopback (the container cannot answer 127.0.0.1).
func (u *Uplink) presented(client netip.AddrPort) netip.AddrPort {
	a := client.Addr().Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		a = u.cfg.Gateway
	}
	return netip.AddrPortFrom(a, client.Port())
}

// acceptor accepts the clients of a published TCP port and carries each
// into the container at ctr, through a splice; each is started here, by
// the poller (on its goroutine, or a polling loop's in its stead), and
// goes on without a goroutine of its own.
// The listening socket is the acceptor's (a duplicate of the listener's,
// which is closed), so its number is never reused under it.
type acceptor struct {
	u     *Uplink
	ctr   netip.AddrPort
	local netip.AddrPort // the listener's address: its IP may be unspecified

	mu      sync.Mutex
	fd      int // -1 once closed
	id      uint64
	backoff time.Duration
	retry   *time.Timer
	// The listening socket has the options of a splice's (sockOpts),
	// with a peek offset when peek. inherit says whether the sockets it
	// accepts have them too: 1 yes, -1 no (each is given them), 0 not
	// known before the first.
	peek    bool
	inherit int8
}

// newAcceptor takes over the listening socket of l, which it closes.
func (u *Uplink) newAcceptor(l *net.TCPListener, ctr netip.AddrPort) (*acceptor, error) {
	defer l.Close()
	a := &acceptor{u: u, ctr: ctr, local: l.Addr().(*net.TCPAddr).AddrPort(), fd: -1}
	rc, err := l.SyscallConn()
	if err != nil {
		return nil, err
	}
	var derr error
	if err := rc.Control(func(fd uintptr) { a.fd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	if a.peek, err = sockOpts(a.fd, false); err != nil {
		rawClose(a.fd)
		return nil, err
	}
	return a, nil
}

// optsOf makes sure the accepted socket fd has the options of a splice's
// host socket, and reports whether it peeks from its offset: inherited
// from the listening socket, as the first accepted socket shows, or
// given. Under a.mu.
func (a *acceptor) optsOf(fd int) (bool, error) {
	if a.inherit == 0 {
		a.inherit = -1
		if hasSockOpts(fd, a.peek) {
			a.inherit = 1
		}
	}
	if a.inherit > 0 {
		return a.peek, nil
	}
	return sockOpts(fd, a.peek)
}

// start watches the listening socket, and accepts who waits already.
func (a *acceptor) start() error {
	a.mu.Lock()
	id, err := a.u.poll.add(a.fd, unix.EPOLLIN, a.ready)
	a.id = id
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.ready(0)
	return nil
}

// acceptBatch is the most clients an acceptor takes at once. It runs in
// the poller, which serves every splice's host socket: a
// flood of clients to a published port, taken until none waits, would
// hold up every connection's traffic for as long as it lasted.
const acceptBatch = 64

// ready takes the clients waiting, acceptBatch at most; with more
// waiting, the listening socket is armed again, so the poller comes back
// to it after the other sockets ready meanwhile.
func (a *acceptor) ready(uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for n := 0; a.fd >= 0; n++ {
		if n == acceptBatch {
			// Watched edge-triggered, a socket still readable when
			// armed again is reported again.
			if err := a.u.poll.modify(a.fd, a.id, unix.EPOLLIN); err != nil {
				a.u.warnOnce("accept", "hostnet: published port cannot accept; retrying", "addr", a.local, "err", os.NewSyscallError("epoll_ctl", err))
				a.retryLocked()
			}
			return
		}
		nfd, client, err := rawAccept4(a.fd)
		switch {
		case err == unix.EAGAIN:
			a.backoff = 0
			return
		case err == unix.EINTR, err == unix.ECONNABORTED:
			continue
		case err != nil:
			// Out of file descriptors, say: the client waits, and the
			// poller says nothing more about it; try again later, as
			// net/http does. The port stays published.
			a.u.warnOnce("accept", "hostnet: published port cannot accept; retrying", "addr", a.local, "err", os.NewSyscallError("accept4", err))
			a.retryLocked()
			return
		}
		peek, err := a.optsOf(nfd)
		if err != nil {
			a.u.warnOnce("sockopt", "hostnet: published port cannot set up a client's socket", "addr", a.local, "err", err)
			resetClose(nfd)
			continue
		}
		local := a.local
		if local.Addr().IsUnspecified() {
			local, _ = rawGetsockname(nfd)
		}
		// As many clients are being carried in at once as containers'
		// connections are being made, at most; the rest are reset, as a
		// full listen queue would drop them.
		if a.u.dialing.take(a.ctr.Addr()) {
			a.u.inboundTCP(nfd, client, local, a.ctr, peek)
		} else {
			a.u.stats.DropInFlight.Add(1)
			resetClose(nfd)
		}
	}
}

// retryLocked has ready called again later, backing off from 5 ms to
// 1 s while it keeps failing.
func (a *acceptor) retryLocked() {
	a.backoff = min(max(2*a.backoff, 5*time.Millisecond), time.Second)
	if a.retry == nil {
		a.retry = a.u.afterFunc(a.backoff, func() { a.ready(0) })
	} else {
		a.retry.Reset(a.backoff)
	}
}

// Close stops accepting and closes the listening socket.
func (a *acceptor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.retry != nil {
		a.retry.Stop()
	}
	if a.fd < 0 {
		return nil
	}
	if a.id != 0 {
		a.u.poll.remove(a.fd, a.id)
	}
	err := rawClose(a.fd)
	a.fd = -1
	return err
}

// resetClose closes the socket fd with a reset.
func resetClose(fd int) {
	rawLinger0(fd)
	rawClose(fd)
}

// inboundTCP starts carrying the accepted client fd (from client, to the
// host's local; with the options of sockOpts, peek says whether it peeks
// from its offset) into the container at ctr, through a splice; it holds a
// place in u.dialing until the container answered. The flow's entry is
// the client to the published address, replied by the container to the
// client (what the gateway creates when the first packet passes, from the
// expectation made here).
func (u *Uplink) inboundTCP(fd int, client, local, ctr netip.AddrPort, peek bool) {
	var once sync.Once
	opened := func() { once.Do(func() { u.dialing.give(ctr.Addr()) }) }
	src := u.presented(client)
	orig := conntrack.Tuple{Src: src.Addr(), Dst: local.Addr().Unmap(), SrcPort: src.Port(), DstPort: local.Port(), Proto: conntrack.ProtoTCP}
	reply := conntrack.Tuple{Src: ctr.Addr(), Dst: src.Addr(), SrcPort: ctr.Port(), DstPort: src.Port(), Proto: conntrack.ProtoTCP}
	seen := conntrack.Tuple{Src: src.Addr(), Dst: ctr.Addr(), SrcPort: src.Port(), DstPort: ctr.Port(), Proto: conntrack.ProtoTCP}
	refuse := func() {
		resetClose(fd)
		opened()
	}
	if !client.IsValid() || !local.IsValid() || !u.inboundRoom(orig) || !u.reserve(ctr.Addr()) {
		refuse()
		return
	}
	// fail refuses a client expect would not take: the same connection
	// to the container as a live flow's (a loopback client's port
	// another one's; the client's own port with no other free to show
	// it with), or the uplink is closed.
	fail := func(err error) {
		if err != errUplinkClosed {
			u.stats.DropCollision.Add(1)
		}
		u.unreserve(ctr.Addr())
		refuse()
	}
	// The client as the container sees it: another port when its own
	// would make this the same connection to the container as another
	// flow of the client's.
	shown := src
	err := u.expect(seen, orig, reply)
	for replaced, remapped := false, false; err != nil; err = u.expect(seen, orig, reply) {
		switch {
		case err == errFlowOpen && !replaced:
			// A client that reuses its port comes back while the flow
			// of its last connection is still closing on the
			// container's side: the client is done with it, so it ends
			// now, as the kernel's conntrack reopens a closing entry
			// for a new SYN.
			if old := u.flowOf(orig); old != nil {
				if old.peer != client {
					// Another client on the host's loopback with the
					// same port: shown as the gateway, both would be
					// the same connection to the container. The live
					// one stays.
					fail(errFlowTaken)
					return
				}
				old.replaced()
			}
			replaced = true
			// The client as the container saw it on the last
			// connection, should that have been another port
			// (remapped): the new one goes as it did, on the tuple its
			// entry, still in the table until the container hears the
			// last one end, names.
			if e, dir, ok := u.tbl.Load().Get(0, orig); ok && dir == conntrack.Original && e.Reply.DstPort != reply.DstPort {
				if last := e.Reply; withDstPort(last, reply.DstPort) == reply {
					reply, shown = last, netip.AddrPortFrom(last.Dst, last.DstPort)
					seen, _ = reply.Reverse()
				}
			}
		case err == errFlowTaken && !remapped && u.peerAt(reply) == client:
			// The client's port to another published port of the same
			// container port, or to another of the host's addresses: as
			// for UDP (inboundNear), the client is shown with another
			// port, as the kernel's NAT takes another source port for a
			// new connection whose reply tuple is taken (nf_nat's
			// unique tuple).
			near, ok := u.freeNear(reply)
			if !ok {
				fail(errFlowTaken)
				return
			}
			reply, shown = near, netip.AddrPortFrom(near.Dst, near.DstPort)
			seen, _ = near.Reverse()
			remapped = true
		default:
			fail(err)
			return
		}
	}
	s := u.spliceOf(fd, shown, ctr, peek)
	clash := false
	f, ok := u.addFlow(orig, ctr.Addr(), 0, func() { s.abort(true, true, "its entry left the table") }, func(f *flow) bool {
		// Superseded by the client's next connection on the same port,
		// only the container's side is reset: a reset on the host socket
		// would carry the tuple the client's new connection has now.
		// Its splice leaves the uplink's table now, even one that ended
		// by itself and has not finished yet: the new flow's splice
		// speaks to the container on the same tuple.
		f.supersede = func() {
			s.abort(false, true, "the client reused its port")
			s.finish()
		}
		f.opening = true
		f.peer = client
		s.mu.Lock()
		s.f = f
		s.mu.Unlock()
		u.smu.Lock()
		if clash = u.splices[s.key] != nil; !clash {
			u.splices[s.key] = s
		}
		u.smu.Unlock()
		return true // a clash ends the flow below, once it is watched
	})
	if !ok {
		u.unexpect(seen)
		s.abort(true, false, "the uplink is closed, or the flow is carried already")
		opened()
		return
	}
	// Watched only now that it is the flow's: the poller's news of a
	// client gone meanwhile ends the splice, and the flow with it.
	s.mu.Lock()
	if !clash {
		err = s.watch(spliceWatch)
	}
	s.mu.Unlock()
	if clash || err != nil {
		why := "watching the host socket failed"
		if clash {
			// The container's side of another flow, made since expect
			// looked: the same connection to the container.
			u.stats.DropCollision.Add(1)
			why = "another flow is the same connection to the container"
		}
		u.unexpect(seen)
		s.abort(true, false, why)
		opened()
		return
	}
	s.start(func(ok bool) {
		u.unexpect(seen)
		opened()
		if ok {
			u.settle(f)
			u.stats.InboundOpened.Add(1)
		}
	})
}

// Why expect refuses a flow.
var (
	errUplinkClosed = errors.New("hostnet: the uplink is closed")
	errFlowOpen     = errors.New("hostnet: a flow with the tuple is open")
	errFlowTaken    = errors.New("hostnet: the same connection to the container is open or being opened")
)

// expect registers the flow the uplink is about to open into the
// container, for Inbound. It says errFlowOpen when a flow with the same
// tuple is open (a client reusing its port, whose last flow may be
// replaced); errFlowTaken when one is being opened, or one is the same
// connection to the container (seen): the same client port to two
// published ports of one container port, or two clients on the host's
// loopback, both shown as the gateway; errUplinkClosed once the uplink
// is closed.
func (u *Uplink) expect(seen, orig, reply conntrack.Tuple) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return errUplinkClosed
	}
	if _, busy := u.inbound[seen]; busy {
		return errFlowTaken
	}
	// The flow at orig first: its own splice speaks on reply until it
	// is replaced.
	if u.flows[orig] != nil {
		return errFlowOpen
	}
	if u.spliceAt(reply) {
		return errFlowTaken
	}
	u.inbound[seen] = expectation{orig, reply}
	return nil
}

// spliceAt reports whether a splice speaks to the container on the tuple
// key (its packets' to the container, reversed).
func (u *Uplink) spliceAt(key conntrack.Tuple) bool {
	u.smu.RLock()
	defer u.smu.RUnlock()
	return u.splices[key] != nil
}

// withDstPort returns t with its destination port port.
func withDstPort(t conntrack.Tuple, port uint16) conntrack.Tuple {
	t.DstPort = port
	return t
}

// peerAt returns the real client of the flow whose splice speaks to the
// container on the tuple key (its packets' to the container, reversed),
// or the zero AddrPort when there is none.
func (u *Uplink) peerAt(key conntrack.Tuple) netip.AddrPort {
	u.smu.RLock()
	s := u.splices[key]
	u.smu.RUnlock()
	if s == nil {
		return netip.AddrPort{}
	}
	s.mu.Lock()
	f := s.f
	s.mu.Unlock()
	if f == nil {
		return netip.AddrPort{}
	}
	return f.peer
}

// flowOf returns the flow of the entry orig, or nil.
func (u *Uplink) flowOf(orig conntrack.Tuple) *flow {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.flows[orig]
}

func (u *Uplink) unexpect(seen conntrack.Tuple) {
	u.mu.Lock()
	delete(u.inbound, seen)
	u.mu.Unlock()
}
