package hostnet

import (
	"net"
	"runtime"
	"testing"

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
	for inq() != 3 {
		runtime.Gosched()
	}
	peekSkipBetween = func() {
		c.Write([]byte("xyz"))
		c.CloseWrite()
		for state() != tcpCloseWait {
			runtime.Gosched()
		}
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
