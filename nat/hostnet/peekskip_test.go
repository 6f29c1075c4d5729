package hostnet

import (
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
