package hostnet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// maxInFlight bounds the TCP connections being opened at once (host dial
// and handshake); SYNs beyond it are dropped and sent again by their
// senders.
const maxInFlight = 1024

// synKey names a SYN waiting for its host connection.
type synKey = stack.TransportEndpointID

// savedSyn is the last SYN of a connection being opened, and when it came.
type savedSyn struct {
	b  []byte
	at time.Time
}

// maxSaved bounds the SYNs kept: those of the connections being opened,
// and those the forwarder drops (a resent SYN of one in flight, or one
// beyond maxInFlight), which age out.
const maxSaved = 4 * maxInFlight

// installTCP makes the stack hand every SYN from a container to handleTCP,
// keeping a copy of the SYN: the packet that creates the flow's entry,
// and the one an ICMP error about the flow must quote (Linux checks the
// quoted sequence number).
func (u *Uplink) installTCP() {
	fwd := tcp.NewForwarder(u.st, 0, maxInFlight, u.handleTCP)
	u.st.SetTransportProtocolHandler(tcp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		th := header.TCP(pkt.TransportHeader().Slice())
		if f := th.Flags(); len(th) >= header.TCPMinimumSize && f.Contains(header.TCPFlagSyn) && !f.Contains(header.TCPFlagAck) {
			// The whole SYN, ECN flags and any data (TCP Fast Open)
			// included; the latest of the connection replaces the last.
			syn := append(append([]byte(nil), pkt.NetworkHeader().Slice()...), th...)
			syn = append(syn, pkt.Data().AsRange().ToSlice()...)
			u.mu.Lock()
			u.saveSynLocked(id, syn, time.Now())
			u.mu.Unlock()
		}
		return fwd.HandlePacket(id, pkt)
	})
}

// takeSyn returns and forgets the SYN of id.
func (u *Uplink) takeSyn(id synKey) []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	syn := u.tcpSyn[id]
	delete(u.tcpSyn, id)
	return syn.b
}

// synAgeEvery is how often, at most, the saved SYNs are aged when they
// fill maxSaved: aging looks at each of them, which every SYN of a flood
// must not pay for.
const synAgeEvery = 100 * time.Millisecond

// saveSynLocked keeps syn, the SYN of id, which came at now; when maxSaved
// are kept, the old ones are forgotten first (at most every synAgeEvery),
// and a SYN with no room is not kept: its connection is reset. The caller
// holds u.mu.
func (u *Uplink) saveSynLocked(id synKey, syn []byte, now time.Time) {
	_, again := u.tcpSyn[id]
	if !again && len(u.tcpSyn) >= maxSaved && now.Sub(u.synAged) >= synAgeEvery {
		u.synAged = now
		u.ageSynsLocked(now)
	}
	if again || len(u.tcpSyn) < maxSaved {
		u.tcpSyn[id] = savedSyn{syn, now}
	}
}

// ageSynsLocked forgets the SYNs older than a connection attempt lasts:
// they belong to no attempt now. The caller holds u.mu.
func (u *Uplink) ageSynsLocked(now time.Time) {
	for id, s := range u.tcpSyn {
		if now.Sub(s.at) > u.cfg.ConnectTimeout+time.Second {
			delete(u.tcpSyn, id)
		}
	}
}

func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip, port)
}

// handleTCP opens the host connection of a container's new TCP flow, in a
// goroutine of the forwarder's, and answers the container as the network
// would: the handshake when the host connected, a reset when refused, ICMP
// unreachable when unreachable, nothing when the destination stayed
// silent. Then it carries the flow.
func (u *Uplink) handleTCP(r *tcp.ForwarderRequest) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		r.Complete(true)
		return
	}
	u.wg.Add(1) // Close waits for the forwarder's goroutines too
	u.mu.Unlock()
	defer u.wg.Done()
	id := r.ID() // local: the destination; remote: the container
	syn := u.takeSyn(id)
	var p conntrack.Packet
	if syn == nil || p.Decode(syn) != nil {
		r.Complete(true)
		return
	}
	ctr := addrPort(id.RemoteAddress, id.RemotePort)
	dst, ok := u.hostDst(addrPort(id.LocalAddress, id.LocalPort))
	if !ok || !u.reserve(ctr.Addr()) {
		r.Complete(true)
		return
	}
	hc, err := u.dialTCP(dst)
	if err != nil {
		u.unreserve(ctr.Addr())
		u.refuseTCP(r, syn, dst, err)
		return
	}
	local := hc.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := addrPort(id.LocalAddress, id.LocalPort) // as the container named it
	reply := conntrack.Tuple{Src: remote.Addr(), Dst: local.Addr().Unmap(), SrcPort: remote.Port(), DstPort: local.Port(), Proto: conntrack.ProtoTCP}
	eid, ok := u.track(&p, reply)
	if !ok {
		u.unreserve(ctr.Addr())
		hc.Close()
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq) // waits for the handshake
	r.Complete(false)
	if terr != nil {
		u.unreserve(ctr.Addr())
		hc.Close()
		u.tbl.Load().Delete(0, p.Tuple) // no flow holds it; a new SYN starts afresh
		return
	}
	u.stats.TCPOpened.Add(1)
	u.carry(p.Tuple, ctr.Addr(), eid, ep, &wq, hc)
}

// dialTCP connects to dst on the host.
func (u *Uplink) dialTCP(dst netip.AddrPort) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(u.ctx, u.cfg.ConnectTimeout)
	defer cancel()
	var c net.Conn
	err := u.cfg.Namespace(func() error {
		var err error
		d := net.Dialer{LocalAddr: u.localAddr("tcp"), KeepAlive: -1, Control: urgentInline}
		if dst.Addr().IsLoopback() {
			d.LocalAddr = nil
		}
		c, err = d.DialContext(ctx, "tcp4", dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// urgentInline has the socket c take urgent data inline (SO_OOBINLINE): a
// read would skip the urgent byte, and the stream to the container lose
// it. A net.Dialer's Control.
func urgentInline(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) { err = setOn(int(fd), unix.SOL_SOCKET, unix.SO_OOBINLINE) }); cerr != nil {
		return cerr
	}
	return err
}

// refuseTCP answers a container whose host connection failed.
func (u *Uplink) refuseTCP(r *tcp.ForwarderRequest, syn []byte, dst netip.AddrPort, err error) {
	u.log.Debug("hostnet: connect failed", "dst", dst, "err", err)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		u.stats.TCPRefused.Add(1)
		r.Complete(true)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		u.stats.TCPUnreachable.Add(1)
		r.Complete(false)
		code := uint8(1) // host unreachable
		if errors.Is(err, syscall.ENETUNREACH) {
			code = 0
		}
		u.sendUnreachable(syn, code)
	default: // timed out, or closing: the container hears nothing
		u.stats.TCPTimedOut.Add(1)
		r.Complete(false)
	}
}

// sendUnreachable sends the container an ICMP destination unreachable
// with code about pkt, one of its packets, from the gateway.
func (u *Uplink) sendUnreachable(pkt []byte, code uint8) {
	buf := make([]byte, 576)
	msg, err := nat.Unreachable(buf, pkt, u.cfg.Gateway, code)
	if err == nil {
		u.ln.queue([][]byte{msg}, bridgeNone)
	}
}

// carry copies a TCP flow's bytes both ways between the stack's endpoint
// ep (the container's side) and the host connection hc, registered under
// the entry orig, id: an end of stream on one side becomes a FIN on the
// other (half-close), an error a reset on both. The flow is released when
// both directions are done, or when its entry leaves the table (which
// resets both sides).
func (u *Uplink) carry(orig conntrack.Tuple, src netip.Addr, id uint64, ep tcpip.Endpoint, wq *waiter.Queue, hc *net.TCPConn) {
	gc := gonet.NewTCPConn(wq, ep)
	var abortOnce sync.Once
	abort := func() {
		abortOnce.Do(func() {
			ep.Abort()
			hc.SetLinger(0)
			gc.Close()
			hc.Close()
		})
	}
	// Superseded by the client's next connection on the same port, only
	// the container's side is reset: a reset on the host socket would
	// carry the tuple the client's new connection has now.
	supersede := func() {
		abortOnce.Do(func() {
			ep.Abort()
			gc.Close()
			hc.Close()
		})
	}
	f, ok := u.addFlow(orig, src, id, abort, nil)
	if !ok {
		abort()
		return
	}
	rc := rawConn(hc)
	u.mu.Lock()
	f.supersede = supersede
	u.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	u.wg.Add(3)
	go func() { defer u.wg.Done(); defer wg.Done(); u.pipe(gc, hostReader{rc}, abort) }()
	go func() { defer u.wg.Done(); defer wg.Done(); u.pipe(hc, stackReader{ep, wq, gc}, abort) }()
	go func() {
		defer u.wg.Done()
		wg.Wait()
		gc.Close()
		hc.Close()
		f.ended()
	}()
}

// halfCloser is a connection whose write side closes alone.
type halfCloser interface {
	io.Writer
	CloseWrite() error
}

// copyBuf is the size of the buffers a TCP flow copies through, large
// enough that a 64 KiB segment is one read. Measured with bench/rootless
// (2026-11-26): 64 KiB moved 13 Gbit/s in where 256 KiB moved 16, 1 MiB
// no more; starting short flows on a 16 KiB buffer gained no
// connections/s.
const copyBuf = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

// pipe copies src to dst until src ends, then closes dst's write side; on
// an error it aborts the flow. A slow dst slows the copy: the stack's
// window, or the host socket's, closes, and src is not read meanwhile.
// The copy buffer is src's only while bytes move (pooledReader).
func (u *Uplink) pipe(dst halfCloser, src pooledReader, abort func()) {
	for {
		rerr, werr := copyOnce(dst, src)
		switch {
		case werr != nil:
			abort()
			return
		case rerr == io.EOF:
			dst.CloseWrite()
			return
		case rerr != nil:
			abort()
			return
		}
	}
}

// copyOnce moves one read of src to dst, and says how the read and the
// write went. The buffer goes with its frame: the next read, which may
// wait long, has no reference to it left on the stack.
func copyOnce(dst io.Writer, src pooledReader) (rerr, werr error) {
	bp, n, rerr := src.readPooled()
	if n > 0 {
		_, werr = dst.Write((*bp)[:n])
		bufPool.Put(bp)
	}
	return rerr, werr
}

// pooledReader is one side of a carried flow, read into a buffer from
// bufPool that it takes only once there is something to read: a flow that
// waits holds no copy buffer (256 KiB a direction), so a container's idle
// connections cost their goroutines and sockets only.
type pooledReader interface {
	// readPooled waits for bytes and reads them into a buffer of
	// bufPool's, which it returns with them (the caller puts it back);
	// with no bytes (n 0) there is no buffer, and err is io.EOF at the
	// end of the stream.
	readPooled() (bp *[]byte, n int, err error)
}

// hostReader reads a host socket: the read is tried with a buffer, which
// goes back at once when the socket has nothing.
type hostReader struct{ rc syscall.RawConn }

func (h hostReader) readPooled() (*[]byte, int, error) {
	var bp *[]byte
	var n int
	var rerr error
	err := h.rc.Read(func(fd uintptr) bool {
		bp = bufPool.Get().(*[]byte)
		for {
			r, e := unix.Read(int(fd), *bp)
			switch {
			case e == unix.EINTR:
				continue
			case e == nil && r > 0:
				n = r
				return true
			case e == nil:
				rerr = io.EOF
			case e != unix.EAGAIN:
				rerr = os.NewSyscallError("read", e)
			}
			bufPool.Put(bp) // nothing read: the buffer goes back at once
			bp = nil
			return e != unix.EAGAIN // else wait for the netpoller
		}
	})
	if err == nil {
		err = rerr
	}
	return bp, n, err
}

// stackReader reads the stack's endpoint of the container's connection:
// it waits for the endpoint to be readable (bytes, end of stream, or an
// error), as the adapter's Read does, before it takes a buffer.
type stackReader struct {
	ep tcpip.Endpoint
	wq *waiter.Queue
	c  *gonet.TCPConn
}

func (s stackReader) readPooled() (*[]byte, int, error) {
	if s.ep.Readiness(waiter.ReadableEvents) == 0 {
		e, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
		s.wq.EventRegister(&e)
		if s.ep.Readiness(waiter.ReadableEvents) == 0 {
			<-ch
		}
		s.wq.EventUnregister(&e)
	}
	bp := bufPool.Get().(*[]byte)
	n, err := s.c.Read(*bp)
	if n == 0 {
		bufPool.Put(bp)
		bp = nil
	}
	return bp, n, err
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
// into the container at ctr, through a splice; each is started here, on
// the poller's goroutine, and goes on without a goroutine of its own.
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

// ready takes every client waiting.
func (a *acceptor) ready(uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.fd >= 0 {
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
			a.backoff = min(max(2*a.backoff, 5*time.Millisecond), time.Second)
			a.u.warnOnce("accept", "hostnet: published port cannot accept; retrying", "addr", a.local, "err", os.NewSyscallError("accept4", err))
			if a.retry == nil {
				a.retry = time.AfterFunc(a.backoff, func() { a.ready(0) })
			} else {
				a.retry.Reset(a.backoff)
			}
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
		// As many clients are being carried in at once as the forwarder
		// opens outbound connections, at most; the rest are reset, as a
		// full listen queue would drop them.
		select {
		case a.u.dialing <- struct{}{}:
			a.u.inboundTCP(nfd, client, local, a.ctr, peek)
		default:
			a.u.stats.DropInFlight.Add(1)
			resetClose(nfd)
		}
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
	opened := func() { once.Do(func() { <-u.dialing }) }
	src := u.presented(client)
	orig := conntrack.Tuple{Src: src.Addr(), Dst: local.Addr().Unmap(), SrcPort: src.Port(), DstPort: local.Port(), Proto: conntrack.ProtoTCP}
	reply := conntrack.Tuple{Src: ctr.Addr(), Dst: src.Addr(), SrcPort: ctr.Port(), DstPort: src.Port(), Proto: conntrack.ProtoTCP}
	seen := conntrack.Tuple{Src: src.Addr(), Dst: ctr.Addr(), SrcPort: src.Port(), DstPort: ctr.Port(), Proto: conntrack.ProtoTCP}
	refuse := func() {
		resetClose(fd)
		opened()
	}
	if !client.IsValid() || !local.IsValid() || !u.reserve(ctr.Addr()) {
		refuse()
		return
	}
	if !u.expect(seen, orig, reply) {
		// A client that reuses its port comes back while the flow of its
		// last connection is still closing on the container's side: the
		// client is done with it, so it ends now, as the kernel's
		// conntrack reopens a closing entry for a new SYN.
		if old := u.flowOf(orig); old != nil {
			if old.peer != client {
				// Another client on the host's loopback with the same
				// port: shown as the gateway, both would be the same
				// connection to the container. The live one stays.
				u.stats.DropCollision.Add(1)
				u.unreserve(ctr.Addr())
				refuse()
				return
			}
			old.replaced()
		}
		if !u.expect(seen, orig, reply) {
			u.unreserve(ctr.Addr())
			refuse()
			return
		}
	}
	s, err := u.newSplice(fd, src, ctr, peek)
	if err != nil { // fd is closed
		u.unexpect(seen)
		u.unreserve(ctr.Addr())
		u.log.Debug("hostnet: published port", "ctr", ctr, "err", err)
		opened()
		return
	}
	f, ok := u.addFlow(orig, ctr.Addr(), 0, func() { s.abort(true, true, "its entry left the table") }, func(f *flow) {
		// Superseded by the client's next connection on the same port,
		// only the container's side is reset: a reset on the host socket
		// would carry the tuple the client's new connection has now.
		f.supersede = func() { s.abort(false, true, "the client reused its port") }
		f.opening = true
		f.peer = client
		s.mu.Lock()
		s.f = f
		s.mu.Unlock()
		u.smu.Lock()
		u.splices[s.key] = s
		u.smu.Unlock()
	})
	if !ok {
		u.unexpect(seen)
		s.abort(true, false, "the uplink is closed, or the flow is carried already")
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

// expect registers the flow the uplink is about to open into the
// container, for Inbound; false when one with the same tuple is open.
func (u *Uplink) expect(seen, orig, reply conntrack.Tuple) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, busy := u.inbound[seen]; busy || u.closed || u.flows[orig] != nil {
		return false
	}
	u.inbound[seen] = expectation{orig, reply}
	return true
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
