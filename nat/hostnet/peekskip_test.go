package hostnet

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// Without a peek offset, a peek that finds nothing past the bytes in
// flight says the end of stream only when no byte is left: bytes and the
// client's FIN that come between its questions to the socket are not
// taken for the end (the splice would send its FIN, and lose them).
func TestPeekSkipEndOfStream(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, sc := loopbackPair(t, l)
	var fd int
	rawConn(sc).Control(func(f uintptr) { fd = int(f) })
	inq := func() int { n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ); return n }
	state := func() uint8 {
		info, _ := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return info.State
	}
	if _, err := c.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	spinUntil(t, "the 3 bytes to arrive", func() bool { return inq() == 3 })
	peekSkipBetween = func() {
		c.Write([]byte("xyz"))
		c.CloseWrite()
		spinUntil(t, "the client's FIN", func() bool { return state() == tcpCloseWait })
	}
	defer func() { peekSkipBetween = nil }()
	b := make([]byte, 64)
	n, err := recvPeekSkip(fd, b, 3) // "abc" in flight
	if n == 0 && err == nil {
		t.Fatalf("the end of stream, with %d bytes unread", inq()-3)
	}
	peekSkipBetween = nil
	if n, err = recvPeekSkip(fd, b, 3); string(b[:n]) != "xyz" || err != nil {
		t.Fatalf("the next peek: %q, %v; want the bytes that came, xyz", b[:n], err)
	}
	if n, err = recvPeekSkip(fd, b, 6); n != 0 || err != nil {
		t.Fatalf("past them: %d bytes, %v; want the end of stream", n, err)
	}
}

// spinUntil yields until cond holds, and fails the test if it does not
// within 5 s (on loopback it holds within microseconds).
func spinUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); runtime.Gosched() {
		if time.Now().After(end) {
			t.Fatalf("waited 5 s for %s", what)
		}
	}
}

// loopbackPair connects a client to l, a TCP listener on loopback, and
// returns both ends; they close when the test ends.
func loopbackPair(t *testing.T, l net.Listener) (client, server *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// loopbackHost is a TCP connection over loopback: its client end, and a
// non-blocking descriptor of its own of the host end, which the caller
// closes.
func loopbackHost(t *testing.T) (*net.TCPConn, int) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, sc := loopbackPair(t, l)
	var fd0 int
	rawConn(sc).Control(func(f uintptr) { fd0 = int(f) })
	fd, err := unix.Dup(fd0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fd, true)
	return c, fd
}

// resetInFlight is the host end of a loopback connection whose client sent
// "hello", which the peer still holds, and then reset the connection.
func resetInFlight(t *testing.T) int {
	c, fd := loopbackHost(t)
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	spinUntil(t, "the bytes", func() bool { n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ); return n == 5 })
	c.SetLinger(0)
	c.Close()
	spinUntil(t, "the reset", func() bool {
		info, _ := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return info.State == tcpClose
	})
	return fd
}

// Without a peek offset, a client's reset while bytes are in flight is
// the reset, not the end of stream: the peek past those bytes finds them,
// so the kernel reports no error, and the socket's state (TCP_CLOSE) is
// the same as after FINs both ways. Taken for the end, the container
// would get our FIN first, and read a stream cut short as complete.
func TestPeekSkipReset(t *testing.T) {
	if n, err := recvPeekSkip(resetInFlight(t), make([]byte, 64), 5); err != unix.ECONNRESET {
		t.Errorf("recvPeekSkip of a reset socket with 5 bytes in flight: %d, %v; want ECONNRESET", n, err)
	}
	s, drain, _ := refusingSplice(t, "")
	drain()
	s.mu.Lock()
	s.u.ln = newLink(16) // room for every frame
	s.fd, s.peekOff = resetInFlight(t), false
	s.sndUna, s.sndNxt, s.sndMax, s.discarded = 1000, 1005, 1005, 1000 // "hello" in flight
	s.mu.Unlock()
	s.ready(unix.EPOLLIN | unix.EPOLLERR | unix.EPOLLHUP | unix.EPOLLRDHUP)
	var got []uint8
	for len(s.u.ln.q) > 0 {
		f := <-s.u.ln.q
		got = append(got, tcpSeg((*f.buf)[nat.Headroom+20:f.n]).flags())
	}
	if len(got) == 0 || got[0]&conntrack.TCPRst == 0 || got[0]&conntrack.TCPFin != 0 {
		t.Errorf("the container got segments with flags %#x for the client's reset; want a reset first, no FIN", got)
	}
}

// An acknowledgement beyond sndNxt that comes while the pump is unlocked
// to send (after a rewind: the container had the first copies) moves
// sndNxt, and the pump's next peek, in the same turn, starts there. The
// container's own bytes came with it and are held for the batch's end,
// so no discard runs meanwhile, whose read would move the kernel's peek
// offset: every byte the container gets must be the stream's at its
// sequence number.
func TestSpliceReseekWhileUnlocked(t *testing.T) {
	data := make([]byte, 20000)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	s := spliceOn(t, endedHost(t, data), 64)
	s.u.batchEnds.Store(true) // the container's bytes are held
	s.mu.Lock()
	s.sndWnd, s.cwnd = 0xffff, 4000
	s.rcvNxt, s.recover = 7000, 999
	s.mu.Unlock()
	s.pump() // [1000, 5000) in flight
	framesSent(s)
	fire(s) // a timeout: back to 1000
	framesSent(s)
	s.mu.Lock()
	s.rewind = true // and another
	s.mu.Unlock()

	var segs, after int
	check := func(pkt []byte) {
		seg := tcpSeg(pkt[20:])
		p := seg.payload()
		if len(p) == 0 {
			return
		}
		segs++
		off := int(seg.seq() - 1000)
		if off < 0 || off+len(p) > len(data) || string(p) != string(data[off:off+len(p)]) {
			t.Errorf("%d bytes at seq %d are not the stream's", len(p), seg.seq())
		}
	}
	answered := false
	deliver := func(pkt []byte, _ bridge.Offload) {
		check(pkt[nat.Headroom:])
		if answered {
			after++
			return
		}
		answered = true
		// The container's answer to the first segment: two bytes of
		// its own, and an acknowledgement of everything sent before.
		h := make(tcpSeg, tcpMinSize)
		s.mu.Lock()
		ack := s.sndMax
		s.mu.Unlock()
		putTCPHeader(h, 0, 0, 7000, ack, conntrack.TCPAck, 0xffff, len(h))
		s.input(h, []byte("hi"))
	}
	s.u.ln.pending.Store(0) // framesSent took the queued frames behind the link's count
	s.u.ln.deliver.Store(&deliver)
	s.pump()
	s.u.ln.deliver.Store(nil)
	for len(s.u.ln.q) > 0 {
		f := <-s.u.ln.q
		check((*f.buf)[nat.Headroom:f.n])
	}
	if !answered || after == 0 {
		t.Fatalf("the pump sent %d segments, %d after the answer: the case went untested", segs, after)
	}
}

// A client's reset is never the container's end of stream. Once a write
// to the host socket (the container's bytes, on the gateway's goroutine)
// took the reset's error, the socket reads 0 as at a FIN; a pump that
// runs before that goroutine's abort (the poller's, on the reset's news)
// must not take it for the client's FIN: the container would read a
// clean end of a stream the client never ended, and the reset after it
// only as the failure of its next write.
func TestSpliceResetTakenByWriteIsNoFin(t *testing.T) {
	c, fd := loopbackHost(t)
	s := spliceOn(t, fd, 64)
	c.SetLinger(0)
	c.Close() // the client resets
	spinUntil(t, "the reset", func() bool {
		info, _ := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return info != nil && info.State == tcpClose
	})
	// The gateway's goroutine: the container's bytes find the reset.
	s.mu.Lock()
	took := s.takeLocked([]byte("request"))
	s.mu.Unlock()
	if took {
		t.Fatal("a write to a reset socket succeeded")
	}
	// The poller's news of the reset, between that goroutine's unlock
	// and its abort.
	s.ready(unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP)
	s.abort(false, true, "writing to the host socket failed")
	var flags []string
	for len(s.u.ln.q) > 0 {
		f := <-s.u.ln.q
		flags = append(flags, fmt.Sprintf("%#x", tcpSeg((*f.buf)[nat.Headroom+20:f.n]).flags()))
	}
	sent := strings.Join(flags, " ")
	if strings.Contains(sent, fmt.Sprintf("%#x", conntrack.TCPFin|conntrack.TCPAck)) {
		t.Errorf("the container was sent a FIN (the segments' flags: %s): the client's reset taken for its end of stream", sent)
	}
	if !strings.Contains(sent, fmt.Sprintf("%#x", conntrack.TCPRst|conntrack.TCPAck)) {
		t.Errorf("the container was not reset (the segments' flags: %s)", sent)
	}
}
