package hostnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// outboundUplink is an uplink whose host-loopback address (the gateway's,
// 10.0.2.2) leads to the host's 127.0.0.1, with a table and no gateway:
// what it sends the container waits in its link's queue, and a test
// hands it the container's segments (Send). Only loopback traffic.
func outboundUplink(t *testing.T) (*Uplink, *conntrack.Table) {
	t.Helper()
	return outboundUplinkWith(t, conntrack.Config{})
}

// outboundUplinkWith is outboundUplink with a table of ct.
func outboundUplinkWith(t *testing.T, ct conntrack.Config) (*Uplink, *conntrack.Table) {
	t.Helper()
	return outboundUplinkIn(t, nil, ct)
}

// outboundUplinkIn is outboundUplinkWith whose host sockets are made by
// ns (Config.Namespace; nil: this goroutine's namespace).
func outboundUplinkIn(t *testing.T, ns func(func() error) error, ct conntrack.Config) (*Uplink, *conntrack.Table) {
	t.Helper()
	gw := netip.MustParseAddr("10.0.2.2")
	u, err := New(Config{Gateway: gw, HostLoopback: gw, ConnectTimeout: 2 * time.Second, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := conntrack.New(ct)
	if err != nil {
		u.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		u.Close()
		tbl.Close()
	})
	if err := u.Attach(tbl, nil); err != nil {
		t.Fatal(err)
	}
	return u, tbl
}

// fillAssured fills a table of one entry with an assured one, the
// handshake of a flow from a to b, which it returns.
func fillAssured(t *testing.T, tbl *conntrack.Table) (a, b netip.AddrPort) {
	t.Helper()
	a, b = netip.MustParseAddrPort("10.0.2.100:42000"), netip.MustParseAddrPort("192.0.2.9:80")
	for _, seg := range [][]byte{
		ctrSegment(a, b, 100, 0, conntrack.TCPSyn, 64240, nil, nil),
		ctrSegment(b, a, 500, 101, conntrack.TCPSyn|conntrack.TCPAck, 64240, nil, nil),
		ctrSegment(a, b, 101, 501, conntrack.TCPAck, 64240, nil, nil),
	} {
		var p conntrack.Packet
		if err := p.Decode(seg[nat.Headroom:]); err != nil {
			t.Fatal(err)
		}
		if _, err := tbl.Track(0, &p, nil); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// ctrSegment is a segment from the container, as the gateway hands it to
// Send: behind nat.Headroom.
func ctrSegment(from, to netip.AddrPort, seq, ack uint32, flags uint8, wnd uint16, opts, payload []byte) []byte {
	hl := 20 + len(opts)
	f := make([]byte, nat.Headroom+20+hl+len(payload))
	b := f[nat.Headroom:]
	ipv4Header(b, len(b), conntrack.ProtoTCP, defaultTTL, from.Addr(), to.Addr())
	putTCPHeader(b[20:], from.Port(), to.Port(), seq, ack, flags, wnd, hl)
	copy(b[40:], opts)
	copy(b[20+hl:], payload)
	binary.BigEndian.PutUint16(b[36:], ^nat.Sum(b[20:], pseudo(b, conntrack.ProtoTCP, hl+len(payload))))
	return f
}

// nextSegment is the next segment the uplink sent the container.
func nextSegment(t *testing.T, u *Uplink) tcpSeg {
	t.Helper()
	select {
	case f := <-u.ln.q:
		pkt := append([]byte(nil), (*f.buf)[nat.Headroom:f.n]...)
		u.ln.putBuf(f.buf)
		return tcpSeg(pkt[int(pkt[0]&0xf)*4:])
	case <-time.After(5 * time.Second):
		t.Fatal("no segment to the container")
		return nil
	}
}

// noSegment fails the test with why if the uplink sends the container a
// segment within 100 ms.
func noSegment(t *testing.T, u *Uplink, why string) {
	t.Helper()
	select {
	case f := <-u.ln.q:
		u.ln.putBuf(f.buf)
		t.Fatal(why)
	case <-time.After(100 * time.Millisecond):
	}
}

// synOpts are a SYN's options: MSS 1460, and a window scale of 7 when ws.
func synOpts(ws bool) []byte {
	o := []byte{2, 4, 0x05, 0xb4}
	if ws {
		o = append(o, 1, 3, 3, 7)
	}
	return o
}

// loopbackDst listens on the host's 127.0.0.1, where the uplink's
// host-loopback address leads, and returns the listener (closed when the
// test ends) and its address as a container names it.
func loopbackDst(t *testing.T, u *Uplink) (*net.TCPListener, netip.AddrPort) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener), netip.AddrPortFrom(u.cfg.Gateway, l.Addr().(*net.TCPAddr).AddrPort().Port())
}

// sendSyn hands the uplink the SYN of a container at ctr to dst, with
// sequence number seq, MSS 1460 and a window scale.
func sendSyn(u *Uplink, ctr, dst netip.AddrPort, seq uint32) {
	u.Send(ctrSegment(ctr, dst, seq, 0, conntrack.TCPSyn, 64240, synOpts(true), nil), dst.Addr(), bridgeNone)
}

// A container's connection to the outside: its SYN connects a host socket
// once, however often it comes, and is answered when connected, with a
// window scale only if the SYN had one; a SYN again after the SYN-ACK
// draws it again; the ACK opens the flow, and what the destination sent
// meanwhile (a server that speaks first) follows, then bytes both ways;
// the container's window is read with its scale from the handshake's ACK
// on. The flow's entry has the host socket's tuple as its reply. (The
// SYN-ACK's own timeout is made long: only the test's SYNs draw it.)
func TestOutboundSplice(t *testing.T) {
	longSynRTO(t)
	for _, ws := range []bool{true, false} {
		name := map[bool]string{true: "window scale", false: "no window scale"}[ws]
		t.Run(name, func(t *testing.T) {
			u, tbl := outboundUplink(t)
			l, dst := loopbackDst(t, u)
			ctr := netip.MustParseAddrPort("10.0.2.100:40000")
			const cseq = 1000
			syn := ctrSegment(ctr, dst, cseq, 0, conntrack.TCPSyn, 64240, synOpts(ws), nil)
			u.Send(syn, dst.Addr(), bridgeNone)
			// Sent again once connected (on loopback, connect's system
			// call made the connection), it draws the SYN-ACK again;
			// TestOutboundSpliceConnectsLater sends it while connecting.
			u.Send(syn, dst.Addr(), bridgeNone)
			sa := nextSegment(t, u)
			if sa.flags() != conntrack.TCPSyn|conntrack.TCPAck || sa.ack() != cseq+1 {
				t.Fatalf("answer to the SYN: flags %#x, ack %d; want a SYN-ACK of %d", sa.flags(), sa.ack(), cseq+1)
			}
			if sa2 := nextSegment(t, u); sa2.flags() != sa.flags() || sa2.seq() != sa.seq() {
				t.Fatalf("answer to the SYN sent again: flags %#x, seq %d; want the SYN-ACK again (seq %d)", sa2.flags(), sa2.seq(), sa.seq())
			}
			if n := u.stats.OutboundSynAgain.Load(); n != 1 {
				t.Fatalf("outbound_syn_again %d, want 1", n)
			}
			if mss, scale, sack := synOptions(sa.options()); mss != u.mtu-40 || (scale >= 0) != ws || sack {
				t.Fatalf("SYN-ACK options: MSS %d, window scale %d, SACK %v; want MSS %d, a window scale %v, no SACK (the SYN permitted none)", mss, scale, sack, u.mtu-40, ws)
			}
			srv, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if _, err := srv.Write([]byte("banner")); err != nil {
				t.Fatal(err)
			}
			l.SetDeadline(time.Now().Add(200 * time.Millisecond))
			if c, err := l.Accept(); err == nil {
				c.Close()
				t.Fatal("the SYN sent again made a second host connection")
			}
			e, _, ok := tbl.Get(0, conntrack.Tuple{Src: ctr.Addr(), Dst: dst.Addr(), SrcPort: ctr.Port(), DstPort: dst.Port(), Proto: conntrack.ProtoTCP})
			if host := srv.RemoteAddr().(*net.TCPAddr).AddrPort(); !ok || e.Reply.Dst != host.Addr() || e.Reply.DstPort != host.Port() {
				t.Fatalf("entry %v (found %v), want the reply to the host socket %v", e, ok, host)
			}

			// The SYN-ACK was lost: the SYN again draws it again.
			u.Send(syn, dst.Addr(), bridgeNone)
			if again := nextSegment(t, u); again.flags() != sa.flags() || again.seq() != sa.seq() {
				t.Fatalf("after the SYN again: flags %#x, seq %d; want the SYN-ACK again", again.flags(), again.seq())
			}
			if n := u.stats.OutboundSynAgain.Load(); n != 2 {
				t.Errorf("outbound_syn_again %d, want 2", n)
			}

			iss := sa.seq()
			u.Send(ctrSegment(ctr, dst, cseq+1, iss+1, conntrack.TCPAck, 502, nil, nil), dst.Addr(), bridgeNone)
			d := nextSegment(t, u)
			if string(d.payload()) != "banner" || d.seq() != iss+1 {
				t.Fatalf("after the handshake: seq %d, %q; want the banner from %d", d.seq(), d.payload(), iss+1)
			}
			wnd := uint32(502)
			if ws {
				wnd <<= 7
			}
			if got := spliceSnapshot(u, ctr, dst).sndWnd; got != wnd {
				t.Errorf("the container's window after the handshake: %d, want %d", got, wnd)
			}
			u.Send(ctrSegment(ctr, dst, cseq+1, iss+7, conntrack.TCPAck|conntrack.TCPPsh, 502, nil, []byte("hello")), dst.Addr(), bridgeNone)
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 5)
			if _, err := io.ReadFull(srv, got); err != nil || string(got) != "hello" {
				t.Fatalf("the destination read %q, %v; want hello", got, err)
			}
			if n, places := u.stats.TCPOpened.Load(), u.connecting.len(); n != 1 || places != 0 {
				t.Errorf("tcp_opened %d, %d places of connections being made taken; want 1, none", n, places)
			}
		})
	}
}

// longSynRTO makes the first timeout of our SYN-ACK a minute for the
// test, so only the test's SYNs draw it again. Called before the test
// makes its uplinks: cleanups run last first, so it is put back after
// they close.
func longSynRTO(t *testing.T) {
	old := spliceSynRTO
	t.Cleanup(func() { spliceSynRTO = old })
	spliceSynRTO = time.Minute
}

// synRcvd starts a container's connection from ctr, with initial
// sequence number seq, to the listener l at dst: it returns our SYN-ACK,
// which the container has not acknowledged, and the destination's end of
// the host connection (closed when the test ends).
func synRcvd(t *testing.T, u *Uplink, l *net.TCPListener, ctr, dst netip.AddrPort, seq uint32) (tcpSeg, net.Conn) {
	t.Helper()
	sendSyn(u, ctr, dst, seq)
	sa := nextSegment(t, u)
	srv, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return sa, srv
}

// spliceSnapshot returns a copy of the state and send window of the
// splice of the container's flow from ctr to dst, as they are now (not
// u.spliceOf, which makes a splice).
func spliceSnapshot(u *Uplink, ctr, dst netip.AddrPort) *splice {
	u.smu.RLock()
	s := u.splices[conntrack.Tuple{Src: ctr.Addr(), Dst: dst.Addr(), SrcPort: ctr.Port(), DstPort: dst.Port(), Proto: conntrack.ProtoTCP}]
	u.smu.RUnlock()
	if s == nil {
		return &splice{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &splice{state: s.state, sndWnd: s.sndWnd, srtt: s.srtt, rto: s.rto}
}

// released fails the test unless the uplink holds nothing of a flow any
// more: no flow, entry, splice, or place among the connections being
// made.
func released(t *testing.T, u *Uplink, tbl *conntrack.Table) {
	t.Helper()
	for end := time.Now().Add(2 * time.Second); (u.Flows() != 0 || tbl.Len() != 0) && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	u.smu.RLock()
	n := len(u.splices)
	u.smu.RUnlock()
	if u.Flows() != 0 || tbl.Len() != 0 || n != 0 || u.connecting.len() != 0 {
		t.Errorf("left: %d flows, %d entries, %d splices, %d places taken; want none", u.Flows(), tbl.Len(), n, u.connecting.len())
	}
}

// A refused host connection reaches the container as a reset of its SYN,
// and leaves no entry and no flow behind.
func TestOutboundSpliceRefused(t *testing.T) {
	u, tbl := outboundUplink(t)
	l, dst := loopbackDst(t, u)
	l.Close() // nobody listens there now
	ctr := netip.MustParseAddrPort("10.0.2.100:40001")
	sendSyn(u, ctr, dst, 7000)
	rst := nextSegment(t, u)
	if rst.flags() != conntrack.TCPRst|conntrack.TCPAck || rst.ack() != 7001 {
		t.Fatalf("answer: flags %#x, ack %d; want a reset of the SYN, ack 7001", rst.flags(), rst.ack())
	}
	if n := u.stats.TCPRefused.Load(); n != 1 {
		t.Errorf("tcp_refused %d, want 1", n)
	}
	released(t, u, tbl)
}

// A container's TCP segment of no flow is answered with a reset, as a
// host with no such connection answers it, whose sequence number is the
// segment's acknowledgement; a reset draws nothing.
func TestOutboundStrayReset(t *testing.T) {
	u, _ := outboundUplink(t)
	ctr := netip.MustParseAddrPort("10.0.2.100:40002")
	dst := netip.MustParseAddrPort("192.0.2.7:80")
	for i, flags := range []uint8{conntrack.TCPAck, conntrack.TCPFin | conntrack.TCPAck} {
		ack := uint32(5000 + i)
		u.Send(ctrSegment(ctr, dst, 100, ack, flags, 502, nil, []byte("late")), dst.Addr(), bridgeNone)
		r := nextSegment(t, u)
		if r.flags() != conntrack.TCPRst || r.seq() != ack || r.srcPort() != dst.Port() || r.dstPort() != ctr.Port() {
			t.Errorf("answer to a stray segment (flags %#x): flags %#x, seq %d, ports %d>%d; want a reset from %d", flags, r.flags(), r.seq(), r.srcPort(), r.dstPort(), ack)
		}
	}
	u.Send(ctrSegment(ctr, dst, 400, 0, conntrack.TCPRst, 0, nil, nil), dst.Addr(), bridgeNone)
	select {
	case <-u.ln.q:
		t.Error("a stray reset was answered")
	case <-time.After(50 * time.Millisecond):
	}
	if n := u.stats.TCPStrayReset.Load(); n != 2 {
		t.Errorf("tcp_stray_reset %d, want 2", n)
	}
}

// The containers' connections being made and the published ports' clients
// being carried in have places of their own: a container's connection is
// made while every place of the clients' is taken.
func TestOutboundSpliceOwnPlaces(t *testing.T) {
	u, _ := outboundUplink(t)
	for i := range maxInFlight {
		u.dialing.take(netip.AddrFrom4([4]byte{10, 0, 2, byte(101 + i/maxInFlightPerSource)}))
	}
	_, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:40003")
	sendSyn(u, ctr, dst, 1)
	if sa := nextSegment(t, u); sa.flags() != conntrack.TCPSyn|conntrack.TCPAck {
		t.Fatalf("answer %v, want a SYN-ACK", sa.flags())
	}
	if n := u.stats.DropInFlight.Load(); n != 0 {
		t.Errorf("drop_in_flight %d", n)
	}
}

// A flow the uplink cannot register (one with its tuple is still being
// released) is reset, and the entry its SYN made goes: the container's
// next SYN makes one afresh, with its own host socket's tuple.
func TestOutboundSpliceUnregistered(t *testing.T) {
	u, tbl := outboundUplink(t)
	_, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:40004")
	orig := conntrack.Tuple{Src: ctr.Addr(), Dst: dst.Addr(), SrcPort: ctr.Port(), DstPort: dst.Port(), Proto: conntrack.ProtoTCP}
	u.mu.Lock()
	u.flows[orig] = &flow{u: u, orig: orig, stop: func() {}}
	u.mu.Unlock()
	sendSyn(u, ctr, dst, 1)
	if r := nextSegment(t, u); r.flags() != conntrack.TCPRst|conntrack.TCPAck || r.ack() != 2 {
		t.Fatalf("answer %v ack %d, want a reset of the SYN", r.flags(), r.ack())
	}
	if n := tbl.Len(); n != 0 {
		t.Errorf("%d entries left, want none", n)
	}
	if n := u.connecting.len(); n != 0 {
		t.Errorf("%d places taken", n)
	}
	u.mu.Lock()
	delete(u.flows, orig) // released now
	u.mu.Unlock()
	sendSyn(u, ctr, dst, 1)
	if sa := nextSegment(t, u); sa.flags() != conntrack.TCPSyn|conntrack.TCPAck || sa.ack() != 2 {
		t.Fatalf("the next SYN: answer %v ack %d, want a SYN-ACK", sa.flags(), sa.ack())
	}
}

// connectingFlow has the container at ctr send a SYN to a destination
// whose full listener (lfd) leaves the host socket connecting, and checks
// that its splice is.
func connectingFlow(t *testing.T, u *Uplink, ctr string) (lfd int, from, dst netip.AddrPort) {
	t.Helper()
	lfd, port := fullListener(t)
	from = netip.MustParseAddrPort(ctr)
	dst = netip.AddrPortFrom(u.cfg.Gateway, uint16(port))
	sendSyn(u, from, dst, 1)
	if st := spliceSnapshot(u, from, dst).state; st != spliceConnecting {
		t.Fatalf("state %d, want connecting", st)
	}
	return lfd, from, dst
}

// fullListener listens on the host's 127.0.0.1 with its accept queue
// full (one connection waits, with a backlog of 0): the kernel drops a
// new SYN, and the connection is made when the SYN goes again (after a
// second), if the test accepted the waiting one meanwhile. It returns the
// listening socket and its port.
func fullListener(t *testing.T) (fd, port int) {
	t.Helper()
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 0); err != nil { // room for one connection waiting
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	port = sa.(*unix.SockaddrInet4).Port
	first, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)) // fills the queue
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	return lfd, port
}

// A destination that answers late (its accept queue is full, so the
// kernel drops the first SYN and sends it again a second later): the
// container's SYN is answered only once the host connection is made,
// which the poller reports (the SYN-ACK's own timeout, made long here,
// does not send it). The SYN sent again meanwhile is ignored.
func TestOutboundSpliceConnectsLater(t *testing.T) {
	longSynRTO(t)
	u, _ := outboundUplink(t)
	lfd, port := fullListener(t)
	ctr := netip.MustParseAddrPort("10.0.2.100:40005")
	dst := netip.AddrPortFrom(u.cfg.Gateway, uint16(port))
	sendSyn(u, ctr, dst, 1)
	noSegment(t, u, "answered before the host connection was made")
	// The container's SYN again, while connecting: ignored, not
	// answered with a SYN-ACK of a connection not made.
	sendSyn(u, ctr, dst, 1)
	noSegment(t, u, "a SYN sent again while connecting was answered")
	if n := u.stats.OutboundSynAgain.Load(); n != 0 {
		t.Fatalf("outbound_syn_again %d while connecting", n)
	}
	nfd, _, err := unix.Accept(lfd) // room for the kernel's SYN sent again
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(nfd)
	if sa := nextSegment(t, u); sa.flags() != conntrack.TCPSyn|conntrack.TCPAck || sa.ack() != 2 {
		t.Fatalf("answer %v ack %d, want the SYN-ACK", sa.flags(), sa.ack())
	}
}

// A host connection that failed after it was made (reset at once: EPIPE
// when after the destination's FIN) is a refusal to the container: its
// SYN is reset, not left to be sent again for a second connection.
func TestOutboundSpliceResetAtOnce(t *testing.T) {
	for _, err := range []error{unix.ECONNREFUSED, unix.ECONNRESET, unix.EPIPE, unix.ECONNABORTED} {
		u := testUplink()
		s := u.spliceOf(-1, netip.MustParseAddrPort("192.0.2.7:80"), netip.MustParseAddrPort("10.0.2.100:40006"), false)
		s.out, s.state, s.rcvNxt = true, spliceConnecting, 101
		s.refuse(err)
		r := nextSegment(t, u)
		if r.flags() != conntrack.TCPRst|conntrack.TCPAck || r.ack() != 101 || u.stats.TCPRefused.Load() != 1 {
			t.Errorf("%v: answer %v ack %d, %d counted refused; want a reset of the SYN, counted", err, r.flags(), r.ack(), u.stats.TCPRefused.Load())
		}
	}
}

// A destination that answers within connect's system call (on this
// machine, the handshake runs there) has the container's SYN answered
// before Send returns, not after a round through the poller.
func TestOutboundSpliceAnswersAtOnce(t *testing.T) {
	u, _ := outboundUplink(t)
	_, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:40007")
	sendSyn(u, ctr, dst, 1)
	if n := len(u.ln.q); n != 1 {
		t.Fatalf("%d segments to the container when Send returned, want the SYN-ACK", n)
	}
	if sa := nextSegment(t, u); sa.flags() != conntrack.TCPSyn|conntrack.TCPAck {
		t.Fatalf("answer %v, want the SYN-ACK", sa.flags())
	}
}

// A container that resets its connection before the handshake ends (its
// application closed the socket) has the host connection reset too, if it
// was made, and nothing left behind; while connecting, the host socket is
// closed and the container hears nothing more.
func TestOutboundSpliceResetInHandshake(t *testing.T) {
	longSynRTO(t)
	t.Run("after the SYN-ACK", func(t *testing.T) {
		u, tbl := outboundUplink(t)
		u.cfg.ConnectTimeout = time.Minute // only the reset ends the handshake
		l, dst := loopbackDst(t, u)
		ctr := netip.MustParseAddrPort("10.0.2.100:40008")
		sa, srv := synRcvd(t, u, l, ctr, dst, 1)
		// A reset that is not at the container's next byte is not its.
		u.Send(ctrSegment(ctr, dst, 3, sa.seq()+1, conntrack.TCPRst, 0, nil, nil), dst.Addr(), bridgeNone)
		if st := spliceSnapshot(u, ctr, dst).state; st != spliceSynRcvd {
			t.Fatalf("after a reset out of the window: state %d, want still waiting for the ACK", st)
		}
		u.Send(ctrSegment(ctr, dst, 2, sa.seq()+1, conntrack.TCPRst, 0, nil, nil), dst.Addr(), bridgeNone)
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := srv.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the destination read %v, want a reset", err)
		}
		released(t, u, tbl)
	})
	t.Run("while connecting", func(t *testing.T) {
		u, tbl := outboundUplink(t)
		lfd, ctr, dst := connectingFlow(t, u, "10.0.2.100:40009")
		u.Send(ctrSegment(ctr, dst, 2, 0, conntrack.TCPRst, 0, nil, nil), dst.Addr(), bridgeNone)
		released(t, u, tbl)
		nfd, _, err := unix.Accept(lfd) // room for the SYN sent again, which no socket sends now
		if err == nil {
			unix.Close(nfd)
		}
		select {
		case f := <-u.ln.q:
			u.ln.putBuf(f.buf)
			t.Error("the container was answered after its reset")
		case <-time.After(1500 * time.Millisecond): // past the kernel's SYN retry
		}
		unix.SetNonblock(lfd, true)
		if nfd, _, err := unix.Accept(lfd); err == nil {
			unix.Close(nfd)
			t.Error("the host socket went on connecting after the container's reset")
		}
	})
}

// A container's SYN with another initial sequence number (it forgot the
// connection, and opens a new one from the same port) is answered as
// Linux answers it: while our SYN-ACK waits for its ACK, as a SYN outside
// a request's window; once open (the container's FIN_WAIT_2 timed out
// while the destination kept its side open), as a SYN on a synchronized
// connection (RFC 5961 4.2). Either way the answer is an ACK of where the
// splice is, one per oowLimit; the container's reset of that ACK ends the
// splice and its host connection, and its next SYN makes a new one.
func TestOutboundSpliceNewISN(t *testing.T) {
	longSynRTO(t)
	for i, open := range []bool{false, true} {
		t.Run(map[bool]string{false: "handshake", true: "open"}[open], func(t *testing.T) {
			u, tbl := outboundUplink(t)
			l, dst := loopbackDst(t, u)
			ctr := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.100"), uint16(40010+i))
			sa, srv := synRcvd(t, u, l, ctr, dst, 1000)
			if open {
				u.Send(ctrSegment(ctr, dst, 1001, sa.seq()+1, conntrack.TCPAck, 502, nil, nil), dst.Addr(), bridgeNone)
				if st := spliceSnapshot(u, ctr, dst).state; st != spliceOpen {
					t.Fatalf("state %d after the handshake's ACK, want open", st)
				}
			}
			sendSyn(u, ctr, dst, 5000)
			if a := nextSegment(t, u); a.flags() != conntrack.TCPAck || a.seq() != sa.seq()+1 || a.ack() != 1001 {
				t.Fatalf("answer to the new SYN: flags %#x, seq %d, ack %d; want an ACK, seq %d, ack 1001", a.flags(), a.seq(), a.ack(), sa.seq()+1)
			}
			sendSyn(u, ctr, dst, 5000) // at once again: not answered
			noSegment(t, u, "a second answer within oowLimit")
			if n := u.stats.OutboundSynAgain.Load(); n != 0 {
				t.Errorf("outbound_syn_again %d, want 0: a new SYN is not the old one again", n)
			}
			// The container's reset of the ACK, from its acknowledgement number.
			u.Send(ctrSegment(ctr, dst, 1001, 0, conntrack.TCPRst, 0, nil, nil), dst.Addr(), bridgeNone)
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := srv.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the destination read %v, want a reset", err)
			}
			if open {
				// The open connection's entry the gateway's conntrack
				// closes, seeing the reset go by: here there is none.
				tbl.Flush()
			}
			released(t, u, tbl)
			sendSyn(u, ctr, dst, 5000)
			if sa2 := nextSegment(t, u); sa2.flags() != conntrack.TCPSyn|conntrack.TCPAck || sa2.ack() != 5001 {
				t.Fatalf("answer to the new SYN once the old splice ended: flags %#x, ack %d; want a SYN-ACK of 5001", sa2.flags(), sa2.ack())
			}
		})
	}
}

// The host's own loopback (127.0.0.0/8, and 0.0.0.0, which the host takes
// for itself) is refused to a container even when the uplink maps an
// address to it: a SYN there is reset and a datagram dropped, each
// counted, and the server on the host's loopback sees no connection. Only
// the mapped address leads there.
func TestOutboundHostLoopbackRefused(t *testing.T) {
	u, _ := outboundUplink(t)
	l, mapped := loopbackDst(t, u)
	port := mapped.Port()
	ctr := netip.MustParseAddrPort("10.0.2.100:40030")
	for i, a := range []string{"127.0.0.1", "127.0.0.2", "0.0.0.0"} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(a), port)
		from := netip.AddrPortFrom(ctr.Addr(), ctr.Port()+uint16(i))
		sendSyn(u, from, dst, 1000)
		if r := nextSegment(t, u); r.flags()&conntrack.TCPRst == 0 || r.ack() != 1001 {
			t.Errorf("SYN to %v: answer flags %#x ack %d, want a reset of it", dst, r.flags(), r.ack())
		}
		pkt := make([]byte, nat.Headroom+28+1)
		udpPacket(pkt[nat.Headroom:], from, dst, 1)
		u.Send(pkt, dst.Addr(), bridgeNone)
	}
	if n := u.stats.DropLoopback.Load(); n != 6 {
		t.Errorf("drop_loopback %d, want 6 (3 SYNs, 3 datagrams)", n)
	}
	if n := u.Flows(); n != 0 {
		t.Errorf("%d flows, want none", n)
	}
	l.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if c, err := l.Accept(); err == nil {
		c.Close()
		t.Error("the server on the host's loopback accepted a connection")
	}
}

// One container's connections being made hold at most a quarter of the
// places: its next SYN is dropped (it sends it again), while another
// container's connection is made. Connections to silent destinations
// hold their places for ConnectTimeout, and one container's would else
// take every place from the others.
func TestOutboundInFlightPerSource(t *testing.T) {
	u, _ := outboundUplink(t)
	_, dst := loopbackDst(t, u)
	a, b := netip.MustParseAddr("10.0.2.100"), netip.MustParseAddr("10.0.2.101")
	for range maxInFlightPerSource { // a's connections to silent destinations
		if !u.connecting.take(a) {
			t.Fatal("no place for a")
		}
	}
	sendSyn(u, netip.AddrPortFrom(a, 40040), dst, 1)
	noSegment(t, u, "a's SYN beyond its share was answered; want it dropped")
	if n := u.stats.DropInFlight.Load(); n != 1 {
		t.Errorf("drop_in_flight %d, want 1", n)
	}
	sendSyn(u, netip.AddrPortFrom(b, 40041), dst, 1)
	if sa := nextSegment(t, u); sa.flags() != conntrack.TCPSyn|conntrack.TCPAck {
		t.Fatalf("b's SYN: answer %#x, want a SYN-ACK", sa.flags())
	}
	for range maxInFlightPerSource {
		u.connecting.give(a)
	}
	if n := u.connecting.len(); n != 1 { // b's, until its handshake ends
		t.Errorf("%d places taken, want b's", n)
	}
}

// inFlight bounds the places in all and per container, and gives back
// exactly what it took.
func TestInFlight(t *testing.T) {
	var f inFlight
	srcs := 0
	for f.len() < maxInFlight {
		src := netip.AddrFrom4([4]byte{10, 0, 2, byte(100 + srcs)})
		n := 0
		for f.take(src) {
			n++
		}
		if n != maxInFlightPerSource {
			t.Fatalf("%v took %d places, want %d", src, n, maxInFlightPerSource)
		}
		srcs++
	}
	if f.take(netip.MustParseAddr("10.0.3.1")) {
		t.Fatal("a place beyond maxInFlight")
	}
	for i := range srcs {
		for range maxInFlightPerSource {
			f.give(netip.AddrFrom4([4]byte{10, 0, 2, byte(100 + i)}))
		}
	}
	if f.len() != 0 || len(f.c.by) != 0 {
		t.Errorf("after every place was given back: %d taken, %d sources", f.len(), len(f.c.by))
	}
}

// A second Close, concurrent with the first, returns only once the
// uplink's goroutines have stopped, as the first does: here the link's
// goroutine is held in a busy gateway's deliver, so the first Close
// waits, and the second must too (it returned at once, with that
// goroutine still delivering into the gateway).
func TestConcurrentCloseWaits(t *testing.T) {
	u, _ := outboundUplink(t)
	hold := make(chan struct{})
	in := make(chan struct{}, 2)
	u.Start(func([]byte, bridge.Offload) {
		in <- struct{}{}
		<-hold // a busy gateway
	})
	stray := func(port uint16) { // answered with a reset
		ctr := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.100"), port)
		dst := netip.MustParseAddrPort("192.0.2.7:80")
		u.Send(ctrSegment(ctr, dst, 100, 5000, conntrack.TCPAck, 502, nil, nil), dst.Addr(), bridgeNone)
	}
	go stray(40000) // delivered at once, by its own goroutine, which holds the link
	<-in
	stray(40001) // queued: the link's goroutine delivers it after the first
	first := make(chan struct{})
	go func() { u.Close(); close(first) }()
	for {
		u.mu.Lock()
		closed := u.closed
		u.mu.Unlock()
		if closed {
			break
		}
		time.Sleep(time.Millisecond)
	}
	second := make(chan struct{})
	go func() { u.Close(); close(second) }()
	select {
	case <-second:
		t.Error("the second Close returned while the first still waited for the uplink's goroutines")
	case <-time.After(200 * time.Millisecond):
	}
	close(hold)
	<-first
	<-second
}

// A flow whose entry leaves the table (flushed, or evicted from a full
// table) while its host socket still connects ends without a word to the
// container, which has heard nothing of it yet: as through the kernel's
// NAT, its next SYN makes a new entry and a new connection. A reset
// refused, as a closed port, a connection its destination never refused.
func TestOutboundSpliceEntryGoneWhileConnecting(t *testing.T) {
	u, tbl := outboundUplink(t)
	_, ctr, dst := connectingFlow(t, u, "10.0.2.100:40050")
	if n := tbl.Flush(); n != 1 {
		t.Fatalf("flushed %d entries, want the flow's", n)
	}
	gone := func() bool { // the flow leaves the uplink's table, then its splice ends
		u.smu.RLock()
		defer u.smu.RUnlock()
		return len(u.splices) == 0
	}
	for end := time.Now().Add(2 * time.Second); !gone() && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	released(t, u, tbl)
	noSegment(t, u, "the container was answered when the entry of its connection being made went")
	sendSyn(u, ctr, dst, 1) // the container's SYN again
	if st := spliceSnapshot(u, ctr, dst).state; st != spliceConnecting {
		t.Errorf("after the SYN again: state %d, want connecting again", st)
	}
}

// A container connection's entry that leaves the table between its
// making and its flow's registering (flushed then: its destroy event
// finds no flow) ends the flow at once, while it connects: the
// container hears nothing, and its next SYN makes a new entry, as in
// TestOutboundSpliceEntryGoneWhileConnecting. Not answered, then reset
// by the sweep a second later.
func TestOutboundSpliceEntryGoneBeforeFlow(t *testing.T) {
	longSynRTO(t)
	defer SetSweepInterval(time.Hour)()
	u, tbl := outboundUplink(t)
	_, dst := loopbackDst(t, u)
	entryTracked = func(conntrack.Tuple) { tbl.Flush() }
	defer func() { entryTracked = nil }()
	ctr := netip.MustParseAddrPort("10.0.2.100:40060")
	sendSyn(u, ctr, dst, 1)
	noSegment(t, u, "the container was answered on a flow whose entry was gone")
	released(t, u, tbl)
}

// The handshake's round trip is the first of the retransmission
// timeout's samples, as in Linux: a container whose ACK of our SYN-ACK
// came 300 ms after it has its first segments timed out after more than
// 500 ms, not 200.
func TestOutboundSpliceHandshakeRoundTrip(t *testing.T) {
	longSynRTO(t)
	u, _ := outboundUplink(t)
	l, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:40070")
	sa, _ := synRcvd(t, u, l, ctr, dst, 1000)
	time.Sleep(300 * time.Millisecond)
	u.Send(ctrSegment(ctr, dst, 1001, sa.seq()+1, conntrack.TCPAck, 502, nil, nil), dst.Addr(), bridgeNone)
	var sp *splice
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if sp = spliceSnapshot(u, ctr, dst); sp.state == spliceOpen {
			break
		}
	}
	if sp.state != spliceOpen || sp.srtt < 300*time.Millisecond || sp.rto < sp.srtt+spliceMinRTO {
		t.Errorf("state %d, smoothed round trip %v, timeout %v; want open, at least 300ms, and %v more", sp.state, sp.srtt, sp.rto, spliceMinRTO)
	}
}
