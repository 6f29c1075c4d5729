package hostnet

import (
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// tcpPeer gives the splice s a host socket that is one end of a TCP
// connection over loopback, and returns the other end, the client's.
func tcpPeer(t *testing.T, s *splice) *net.TCPConn {
	t.Helper()
	c, fd := loopbackHost(t)
	s.mu.Lock()
	unix.Close(s.fd)
	s.fd = fd
	s.mu.Unlock()
	return c
}

// segsIn is how many segments c received.
func segsIn(t *testing.T, c *net.TCPConn) uint32 {
	t.Helper()
	var info *unix.TCPInfo
	var err error
	rawConn(c).Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		t.Fatal(err)
	}
	return info.Segs_in
}

// inQueue is how many bytes wait in c to be read.
func inQueue(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	var n int
	var err error
	rawConn(c).Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fromContainer hands s a segment from the container at seq, with data,
// and the FIN if fin.
func fromContainer(s *splice, h tcpSeg, seq uint32, data string, fin bool) {
	flags := uint8(conntrack.TCPAck | conntrack.TCPPsh)
	if fin {
		flags |= conntrack.TCPFin
	}
	putTCPHeader(h, 0, 0, seq, 1000, flags, 0xffff, tcpMinSize)
	s.input(h, []byte(data))
}

// A container's reply and its FIN, two segments of one batch from the
// gateway, reach the client as one segment at the batch's end, which the
// client reads at once with the end of stream after it; before the end,
// the client has nothing.
func TestSpliceHeldReplyAndFIN(t *testing.T) {
	s, h := receivingSplice(t)
	c := tcpPeer(t, s)
	s.u.EndBatch() // as the gateway does: the splices may hold
	before := segsIn(t, c)
	fromContainer(s, h, 5000, "reply", false)
	fromContainer(s, h, 5005, "", true)
	if n := inQueue(t, c); n != 0 {
		t.Fatalf("the client has %d bytes before the batch ended, want none", n)
	}
	s.u.EndBatch()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 16)
	n, err := c.Read(b)
	if string(b[:n]) != "reply" || err != nil {
		t.Fatalf("the client read %q, %v; want reply", b[:n], err)
	}
	if n, err := c.Read(b); n != 0 || err == nil {
		t.Fatalf("after the reply the client read %d bytes, %v; want the end of stream", n, err)
	}
	if got := segsIn(t, c) - before; got != 1 {
		t.Errorf("the client received the reply and the FIN in %d segments, want 1", got)
	}
	if held := s.u.held.Load(); held != 0 {
		t.Errorf("the uplink counts %d bytes held after they went", held)
	}
}

// A splice holds only for a gateway that ends its batches: until its
// first EndBatch, the bytes go to the client at once; and not what is
// beyond holdMax, which goes at once, after what was held, in order.
func TestSpliceHeldOnlyWhereItCan(t *testing.T) {
	s, h := receivingSplice(t)
	c := tcpPeer(t, s)
	read := func(want int) string {
		t.Helper()
		b := make([]byte, want)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(b)
		for err == nil && n < want {
			var m int
			m, err = c.Read(b[n:])
			n += m
		}
		if err != nil {
			t.Fatalf("reading %d bytes: %v after %d", want, err, n)
		}
		return string(b[:n])
	}
	fromContainer(s, h, 5000, "now", false)
	if got := read(3); got != "now" {
		t.Fatalf("before any batch end the client read %q, want now", got)
	}

	s.u.EndBatch()
	fromContainer(s, h, 5003, "held", false)
	big := strings.Repeat("b", holdMax)
	fromContainer(s, h, 5007, big, false)
	if got := read(4 + holdMax); got != "held"+big {
		t.Fatalf("the client read %d bytes (%.8q...), want held, then %d bytes at once", len(got), got, holdMax)
	}
	s.u.EndBatch()
	if n := inQueue(t, c); n != 0 {
		t.Fatalf("%d more bytes at the batch end, want none", n)
	}
}

// A splice that holds the container's last reply and FIN when the client
// had closed its side already (our FIN acknowledged) is done at the
// batch's end: it acknowledges the container's FIN then, with nothing of
// its own to carry that and no timer left to, and ends.
func TestSpliceHeldLastReply(t *testing.T) {
	s, h := receivingSplice(t)
	c := tcpPeer(t, s)
	s.mu.Lock()
	s.finAt, s.finSent, s.finAcked, s.finSeq = true, true, true, s.sndNxt-1
	s.mu.Unlock()
	s.u.EndBatch()
	fromContainer(s, h, 5000, "last", true)
	if n := len(s.u.ln.q); n != 0 {
		t.Fatalf("%d frames to the container before the batch ended, want none (the ACK is delayed)", n)
	}
	s.u.EndBatch()
	select {
	case f := <-s.u.ln.q:
		tcp := tcpSeg((*f.buf)[nat.Headroom+20 : f.n])
		if tcp.flags() != conntrack.TCPAck || tcp.ack() != 5005 {
			t.Fatalf("to the container: flags %#x, ack %d; want an ACK of 5005 (4 bytes and the FIN)", tcp.flags(), tcp.ack())
		}
	case <-time.After(time.Second):
		t.Fatal("the container's FIN was not acknowledged")
	}
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	if state != spliceDone {
		t.Errorf("splice state %d after both sides ended, want done", state)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 8)
	if n, err := c.Read(b); string(b[:n]) != "last" || err != nil {
		t.Fatalf("the client read %q, %v; want last", b[:n], err)
	}
}

// Bytes held when the splice ends otherwise (a reset) are given back to
// the uplink's count, and the batch's end then sends nothing.
func TestSpliceHeldAbort(t *testing.T) {
	s, h := receivingSplice(t)
	c := tcpPeer(t, s)
	s.u.EndBatch()
	fromContainer(s, h, 5000, "gone", false)
	if held := s.u.held.Load(); held != 4 {
		t.Fatalf("the uplink counts %d bytes held, want 4", held)
	}
	s.abort(false, false, "the test resets it")
	if held := s.u.held.Load(); held != 0 {
		t.Errorf("the uplink counts %d bytes held after the splice ended, want 0", held)
	}
	s.u.EndBatch()
	if n := inQueue(t, c); n != 0 {
		t.Errorf("the client got %d bytes of a splice that ended", n)
	}
}

// Bytes held for a host socket that has no room at the batch's end wait
// in over, counted once, with the FIN after them, until the poller says
// there is room (flush): then they go, and the FIN after them. Should
// watching the socket for room fail, the splice ends, and gives back what
// it kept.
func TestSpliceHeldNoRoom(t *testing.T) {
	for _, watched := range []bool{true, false} {
		s, h := receivingSplice(t)
		peer := hostPeer(t, s)
		s.mu.Lock()
		if watched {
			if err := s.watch(spliceWatch); err != nil {
				t.Fatal(err)
			}
		}
		for {
			if _, err := unix.Write(s.fd, make([]byte, 4096)); err != nil {
				break // full
			}
		}
		s.mu.Unlock()
		s.u.EndBatch()
		fromContainer(s, h, 5000, "full", true)
		s.u.EndBatch()
		s.mu.Lock()
		over, shut, state := string(s.over), s.shutWr, s.state
		s.mu.Unlock()
		if held := s.u.held.Load(); held != int64(len(over)) {
			t.Errorf("watched %v: the uplink counts %d bytes held, the splice keeps %q", watched, held, over)
		}
		if !watched {
			if state != spliceDone {
				t.Errorf("the socket could not be watched for room: splice state %d, want done", state)
			}
			continue
		}
		if over != "full" || shut {
			t.Fatalf("with no room: over %q, shut %v; want full kept and the write side open", over, shut)
		}
		var got []byte
		b := make([]byte, 1<<16)
		for {
			n, err := unix.Read(peer, b)
			if n <= 0 || err != nil {
				break
			}
			got = append(got, b[:n]...)
		}
		s.flush() // as the poller does once there is room
		for {
			n, err := unix.Read(peer, b)
			if n <= 0 || err != nil {
				if n != 0 || err != nil {
					t.Fatalf("after the bytes kept: read %d, %v; want the end of stream", n, err)
				}
				break
			}
			got = append(got, b[:n]...)
		}
		if !strings.HasSuffix(string(got), "full") {
			t.Errorf("the host socket's peer got %.20q... at the end, want full", got[max(len(got)-20, 0):])
		}
		if held := s.u.held.Load(); held != 0 {
			t.Errorf("the uplink counts %d bytes held after they went", held)
		}
	}
}

// The client's bytes a held segment of the container's acknowledges leave
// the host socket at the batch's end, after the held bytes went: the
// discard's system call does not delay the write that wakes the client.
func TestSpliceHeldDiscardAfter(t *testing.T) {
	c, fd := loopbackHost(t)
	if _, err := c.Write([]byte("abcd")); err != nil {
		t.Fatal(err)
	}
	inq := func() int { n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ); return n }
	spinUntil(t, "the client's 4 bytes", func() bool { return inq() == 4 })
	s := spliceOn(t, fd, 16)
	s.mu.Lock()
	s.rcvNxt, s.rcvAcked = 5000, 5000
	s.mu.Unlock()
	s.pump() // abcd to the container, in flight
	for len(s.u.ln.q) > 0 {
		<-s.u.ln.q
	}
	s.u.EndBatch()
	h := make(tcpSeg, tcpMinSize)
	putTCPHeader(h, 0, 0, 5000, 1004, conntrack.TCPAck|conntrack.TCPPsh, 0xffff, tcpMinSize)
	s.input(h, []byte("x")) // the answer, acknowledging abcd
	if n := inq(); n != 4 {
		t.Fatalf("%d bytes in the host socket before the batch ended, want the 4 acknowledged still there", n)
	}
	s.u.EndBatch()
	if n := inq(); n != 0 {
		t.Errorf("%d bytes in the host socket after the batch ended, want the 4 acknowledged gone", n)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 8)
	if n, err := c.Read(b); string(b[:n]) != "x" || err != nil {
		t.Fatalf("the client read %q, %v; want x", b[:n], err)
	}
}
