package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
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
// listener on every address reached at two of them): with the client's
// own port both flows would be the same connection to the container. The
// second is shown with another port from the client port's class, as the
// kernel's NAT takes another source port for it (nf_nat's unique tuple),
// and each flow carries its own bytes to its own client.
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

	// open carries the next client of l into the container and makes
	// the handshake, returning the client's conn, the address the
	// container sees it as, and our SYN.
	const ctrISN = 5000
	open := func(l *net.TCPListener) (*net.TCPConn, netip.AddrPort, tcpSeg) {
		t.Helper()
		c, fd, client, local := acceptFrom(t, l, from)
		u.dialing.take(ctr.Addr())
		u.inboundTCP(fd, client, local, ctr, false)
		syn := nextSegment(t, u)
		if syn.flags() != conntrack.TCPSyn || syn.dstPort() != ctr.Port() {
			t.Fatalf("%#x to port %d, want a SYN to %d", syn.flags(), syn.dstPort(), ctr.Port())
		}
		shown := netip.AddrPortFrom(presented.Addr(), syn.srcPort())
		u.Send(ctrSegment(ctr, shown, ctrISN, syn.seq()+1, conntrack.TCPSyn|conntrack.TCPAck, 64240, synOpts(true), nil), shown.Addr(), bridgeNone)
		if ack := nextSegment(t, u); ack.flags() != conntrack.TCPAck || ack.srcPort() != shown.Port() {
			t.Fatalf("%#x from port %d, want the handshake's ACK from %d", ack.flags(), ack.srcPort(), shown.Port())
		}
		return c, shown, syn
	}
	ca, shownA, synA := open(ls[0])
	if shownA != presented {
		t.Errorf("flow A shown to the container as %v, want the client's own port (%v)", shownA, presented)
	}
	cb, shownB, synB := open(ls[1])
	if shownB.Port() == presented.Port() {
		t.Fatalf("flow B shown to the container as %v, flow A's tuple", shownB)
	}
	if first, size := nat.SourcePortRange(from.Port()); int(shownB.Port()) < first || int(shownB.Port()) >= first+size {
		t.Errorf("flow B shown with port %d, outside the client port's class [%d, %d)", shownB.Port(), first, first+size)
	}
	if n := u.stats.DropCollision.Load(); n != 0 {
		t.Errorf("drop_collision %d, want 0", n)
	}
	// The container's bytes on each flow reach that flow's client.
	for _, c := range []struct {
		conn  *net.TCPConn
		shown netip.AddrPort
		syn   tcpSeg
		msg   string
	}{{ca, shownA, synA, "to A"}, {cb, shownB, synB, "to B"}} {
		u.Send(ctrSegment(ctr, c.shown, ctrISN+1, c.syn.seq()+1, conntrack.TCPAck|0x08, 502, nil, []byte(c.msg)), c.shown.Addr(), bridgeNone)
		c.conn.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 16)
		n, err := c.conn.Read(b)
		if string(b[:n]) != c.msg {
			t.Errorf("client read %q, %v; want the container's %q", b[:n], err, c.msg)
		}
	}
}

// A published TCP port's clients are held to the table's cap, as the
// published UDP ports' and the containers' own flows are: with the table
// full of assured entries, a client is reset, counted in drop_table_full,
// and no flow is made for it.
func TestInboundTCPWithinTableCap(t *testing.T) {
	u, tbl := outboundUplinkWith(t, conntrack.Config{Max: 1})
	fillAssured(t, tbl)
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctr := netip.MustParseAddrPort("10.0.2.100:80")
	const clients = 3
	var conns []*net.TCPConn
	for range clients {
		c, fd, client, local := acceptFrom(t, l, netip.AddrPort{})
		u.dialing.take(ctr.Addr()) // as the acceptor does
		u.inboundTCP(fd, client, local, ctr, false)
		conns = append(conns, c)
	}
	if n := u.Flows(); n != 0 {
		t.Errorf("%d flows with a table of %d, full of assured entries; want none", n, tbl.Max())
	}
	if n := u.Counters()["drop_table_full"]; n != clients {
		t.Errorf("drop_table_full %d, want %d", n, clients)
	}
	if n := u.dialing.len(); n != 0 {
		t.Errorf("%d places dialing left", n)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d: read %v, want a reset", i, err)
		}
	}
}
