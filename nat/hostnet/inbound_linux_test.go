package hostnet

import (
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
)

// resetClient returns the accepted end (a non-blocking descriptor of its
// own, the only one) of a loopback connection whose client has already
// reset it, with the client's and the listener's addresses.
func resetClient(t *testing.T, l *net.TCPListener) (fd int, client, local netip.AddrPort) {
	t.Helper()
	c, fd, client, local := acceptFrom(t, l, netip.AddrPort{})
	c.SetLinger(0)
	c.Close() // a reset: the accepted socket reports EPOLLERR as soon as it is watched
	return fd, client, local
}

// Published ports' clients that reset at once, carried in by several
// goroutines (inboundTCP runs on the poller's, and off it for the
// acceptor's first accept and its retry after EMFILE): each flow ends,
// and gives back what it held. The socket was watched before the flow
// was registered, and a reset the poller took meanwhile ended the splice
// of a flow then registered for good (run with -race: the splice's poll
// id was written unlocked too).
func TestInboundResetAtOnce(t *testing.T) {
	u, _ := outboundUplink(t)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the gateway: takes what the uplink sends
		for {
			select {
			case f := <-u.ln.q:
				u.ln.putBuf(f.buf)
			case <-stop:
				return
			}
		}
	}()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := ln.(*net.TCPListener)
	ctr := netip.MustParseAddrPort("10.0.2.100:80")
	const workers, each = 8, 100
	type conn struct {
		fd            int
		client, local netip.AddrPort
	}
	var cs []conn
	for range workers * each {
		fd, c, lo := resetClient(t, l)
		cs = append(cs, conn{fd, c, lo})
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range cs[w*each : (w+1)*each] {
				for !u.dialing.take(ctr.Addr()) { // the acceptor's place, as it takes one
					time.Sleep(time.Millisecond)
				}
				u.inboundTCP(c.fd, c.client, c.local, ctr, false)
			}
		}()
	}
	wg.Wait()
	time.Sleep(3 * time.Second) // past the handshakes' deadline (ConnectTimeout 2 s) and a sweep
	u.mu.Lock()
	flows, opening, src := len(u.flows), 0, u.perSrc.by[ctr.Addr()]
	for _, f := range u.flows {
		if f.opening {
			opening++
		}
	}
	u.mu.Unlock()
	u.smu.RLock()
	splices := len(u.splices)
	u.smu.RUnlock()
	u.poll.mu.Lock()
	subs := len(u.poll.subs)
	u.poll.mu.Unlock()
	if flows != 0 || splices != 0 || src != 0 || u.dialing.len() != 0 || subs != 0 {
		t.Errorf("every client reset: %d flows left (%d opening), %d splices, %d places of the container, %d dialing, %d poller callbacks; want none",
			flows, opening, splices, src, u.dialing.len(), subs)
	}
}

// acceptFrom dials l from the fixed local address from, when valid
// (SO_REUSEADDR: one client port to two destinations), and returns the
// client's conn and the accepted end as inboundTCP takes it: a
// non-blocking descriptor of its own, with a splice's options, and the
// client's and the listener's addresses.
func acceptFrom(t *testing.T, l *net.TCPListener, from netip.AddrPort) (c *net.TCPConn, fd int, client, local netip.AddrPort) {
	t.Helper()
	var d net.Dialer
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(from)
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(s uintptr) { unix.SetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		}
	}
	cc, err := d.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	srv, err := l.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := srv.SyscallConn()
	var derr error
	rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if derr != nil {
		t.Fatal(derr)
	}
	unix.SetNonblock(fd, true)
	if _, err := sockOpts(fd, false); err != nil {
		t.Fatal(err)
	}
	client = srv.RemoteAddr().(*net.TCPAddr).AddrPort()
	local = srv.LocalAddr().(*net.TCPAddr).AddrPort()
	srv.Close()
	return cc.(*net.TCPConn), fd, client, local
}

// One client port to two published ports that lead to the same container
// port (a host port range to one container port, two rules, or one
// listener on every address reached at two of them): both flows would be
// the same connection to the container. The second is refused and
// counted; the first goes on, its bytes reaching its client (the second's
// splice took its place before, and they went nowhere).
func TestInboundSameContainerTuple(t *testing.T) {
	longSynRTO(t)
	u, _ := outboundUplink(t)
	var ls [2]*net.TCPListener
	for i := range ls {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ls[i] = l.(*net.TCPListener)
	}
	ctr := netip.MustParseAddrPort("10.0.2.100:80")
	from := netip.MustParseAddrPort("127.0.0.1:47123")
	presented := netip.AddrPortFrom(u.cfg.Gateway, from.Port())

	// Flow A: handshake with the container.
	ca, fd, client, local := acceptFrom(t, ls[0], from)
	u.dialing.take(ctr.Addr())
	u.inboundTCP(fd, client, local, ctr, false)
	syn := nextSegment(t, u)
	if syn.flags() != conntrack.TCPSyn {
		t.Fatalf("flow A: %#x, want a SYN", syn.flags())
	}
	const ctrISN = 5000
	u.Send(ctrSegment(ctr, presented, ctrISN, syn.seq()+1, conntrack.TCPSyn|conntrack.TCPAck, 64240, synOpts(true), nil), presented.Addr(), bridgeNone)
	nextSegment(t, u) // our ACK
	// Flow B, the same client port to the other port.
	_, fd, client, local = acceptFrom(t, ls[1], from)
	u.dialing.take(ctr.Addr())
	u.inboundTCP(fd, client, local, ctr, false)
	if n := u.stats.DropCollision.Load(); n != 1 {
		t.Errorf("drop_collision %d after flow B, want 1", n)
	}
	noSegment(t, u, "flow B: a segment to the container, want it refused")
	// The container's bytes on flow A.
	u.Send(ctrSegment(ctr, presented, ctrISN+1, syn.seq()+1, conntrack.TCPAck|0x08, 502, nil, []byte("hello")), presented.Addr(), bridgeNone)
	ca.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 16)
	n, err := ca.Read(b)
	if string(b[:n]) != "hello" {
		t.Errorf("flow A's client read %q, %v; want the container's \"hello\"", b[:n], err)
	}
}
