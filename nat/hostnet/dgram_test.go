package hostnet

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
)

// dgramPair is a pair of connected, non-blocking datagram sockets (no
// network: AF_UNIX), the first as a file, closed when the test ends.
func dgramPair(t *testing.T) (*os.File, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "dgram")
	t.Cleanup(func() { f.Close(); unix.Close(fds[1]) })
	return f, fds[1]
}

// pollerUplink is an uplink with a poller alone, for the datagram
// readers' tests: the poller's goroutine does not run, and the test
// delivers its rounds itself (deliver).
func pollerUplink(t *testing.T) (*Uplink, *poller) {
	t.Helper()
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return &Uplink{poll: p, ln: newLink(16)}, p
}

// A socket holding more datagrams than one round of the poller reads
// (dgramBudget) is read to its end over the next rounds: each reads the
// budget at most, and arms the socket again for the next, where an
// edge-triggered watch would not tell of the rest until another came.
func TestDgramReaderBudget(t *testing.T) {
	u, p := pollerUplink(t)
	rx, tx := dgramPair(t)
	const n = 3*dgramBudget + 8
	for i := range n {
		if _, err := unix.Write(tx, []byte{byte(i)}); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
	reads := 0
	r := u.newDgramReader(rawConn(rx), nil, func(fd int, buf []byte) (int, error) {
		m, err := unix.Read(fd, buf[28:])
		if err == nil {
			if buf[28] != byte(reads) {
				t.Errorf("datagram %d read as %d", reads, buf[28])
			}
			reads++
		}
		return m, err
	}, func(err error) { t.Errorf("the reader failed: %v", err) })
	if err := r.watch(); err != nil {
		t.Fatal(err)
	}
	var rounds []int
	for len(rounds) < 10 {
		before := reads
		if _, failed := p.deliver(uintptr(p.epfd)); failed {
			t.Fatal("the epoll set failed")
		}
		if reads == before {
			break
		}
		rounds = append(rounds, reads-before)
	}
	t.Logf("datagrams read in each round: %v", rounds)
	if reads != n {
		t.Errorf("%d of %d datagrams read", reads, n)
	}
	for _, got := range rounds {
		if got > dgramBudget {
			t.Errorf("a round read %d datagrams, more than %d", got, dgramBudget)
		}
	}
}

// A reader whose socket failed for good ends its flow after the read, not
// within it: ending the flow closes the socket, and a close waits for
// the socket's reads to end.
func TestDgramReaderFailsAfterTheRead(t *testing.T) {
	u, p := pollerUplink(t)
	rx, tx := dgramPair(t)
	failed := make(chan error, 1)
	var r *dgramReader
	r = u.newDgramReader(rawConn(rx), nil, func(int, []byte) (int, error) {
		return 0, unix.EPERM // not an ICMP error's: the socket's end
	}, func(err error) {
		r.stop()
		rx.Close()
		failed <- err
	})
	if err := r.watch(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(tx, []byte{1}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.deliver(uintptr(p.epfd))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller's round did not end: the socket closed within its own read")
	}
	select {
	case err := <-failed:
		if err != unix.EPERM {
			t.Errorf("failed with %v, want EPERM", err)
		}
	default:
		t.Error("the failure was not told")
	}
	// Watched no more: a closed reader is not watched again.
	if err := r.watch(); err == nil {
		t.Error("a stopped reader was watched again")
	}
}

// A flood to one socket does not hold up another's datagram: the socket
// the poller hears of first gives it dgramBudget datagrams at most
// before the other's turn, where reading it dry first would keep the
// other's datagram waiting behind all of the flood.
func TestDgramReaderFloodDoesNotStarve(t *testing.T) {
	u, p := pollerUplink(t)
	flood, floodTx := dgramPair(t)
	quiet, quietTx := dgramPair(t)
	const n = 4 * dgramBudget
	for range n {
		if _, err := unix.Write(floodTx, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := unix.Write(quietTx, []byte{2}); err != nil {
		t.Fatal(err)
	}
	floodRead, floodBefore := 0, -1 // floodBefore: the flood's datagrams read before the quiet one's
	reader := func(f *os.File) *dgramReader {
		return u.newDgramReader(rawConn(f), nil, func(fd int, buf []byte) (int, error) {
			m, err := unix.Read(fd, buf[28:])
			if err == nil {
				if buf[28] == 1 {
					floodRead++
				} else if floodBefore < 0 {
					floodBefore = floodRead
				}
			}
			return m, err
		}, func(err error) { t.Errorf("the reader failed: %v", err) })
	}
	// Watched in this order, the flood's socket is the first ready.
	for _, r := range []*dgramReader{reader(flood), reader(quiet)} {
		if err := r.watch(); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 10 && floodBefore < 0; round++ {
		if _, failed := p.deliver(uintptr(p.epfd)); failed {
			t.Fatal("the epoll set failed")
		}
	}
	switch {
	case floodBefore < 0:
		t.Fatalf("the quiet socket's datagram was never read (%d of the flood's were)", floodRead)
	case floodBefore > dgramBudget:
		t.Errorf("%d datagrams of the flood read before the quiet socket's one, more than %d", floodBefore, dgramBudget)
	}
}

// A reader told of news after its socket closed (the poller's round took
// the event before a flow ended) reads nothing, even where the socket's
// descriptor number is another socket's now: it would take that one's
// datagrams, as the wrong flow's.
func TestDgramReaderClosedSocketNotRead(t *testing.T) {
	u, _ := pollerUplink(t)
	old, _ := dgramPair(t)
	fd := int(rawFD(t, old))
	reads := 0
	r := u.newDgramReader(rawConn(old), nil, func(int, []byte) (int, error) {
		reads++
		return 0, unix.EAGAIN
	}, func(err error) { t.Errorf("the reader failed: %v", err) })
	if err := r.watch(); err != nil {
		t.Fatal(err)
	}
	r.stop()
	old.Close()
	// The lowest free number: old's, now.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if fds[0] != fd && fds[1] != fd {
		t.Logf("descriptor %d not reused (%v): testing a closed socket alone", fd, fds)
	}
	if _, err := unix.Write(fds[1], []byte{1}); err != nil {
		t.Fatal(err)
	}
	r.ready(unix.EPOLLIN)
	if reads != 0 {
		t.Errorf("the reader of a closed socket read %d times", reads)
	}
	var b [1]byte
	if _, err := unix.Read(fds[0], b[:]); err != nil {
		t.Errorf("the new socket's datagram: %v", err)
	}
}

// A flow's end (stop) that comes while its reader is being watched
// (watch, on another goroutine) leaves nothing in the poller: either
// watch finds the reader stopped, or stop finds what watch added.
func TestDgramReaderStopWatchRace(t *testing.T) {
	u, p := pollerUplink(t)
	for range 200 {
		f, _ := dgramPair(t)
		r := u.newDgramReader(rawConn(f), nil, func(int, []byte) (int, error) { return 0, unix.EAGAIN }, func(error) {})
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.stop()
		}()
		r.watch() // nil or net.ErrClosed: either is fine
		<-done
		f.Close()
	}
	p.mu.Lock()
	left := len(p.subs)
	p.mu.Unlock()
	if left != 0 {
		t.Errorf("%d readers stopped are still subscribed to the poller", left)
	}
}

// rawFD returns f's descriptor number without making it blocking (as
// f.Fd would).
func rawFD(t *testing.T, f *os.File) uintptr {
	t.Helper()
	var fd uintptr
	if err := rawConn(f).Control(func(d uintptr) { fd = d }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// An ICMP error queued on a socket whose pending error was taken before
// the reader came (a send takes it: sendConnected) is news with nothing
// to read: the reader takes it from the error queue all the same, not
// when the next datagram comes. On loopback: a datagram to a port
// nothing listens on draws port unreachable.
func TestDgramReaderErrorWithNothingToRead(t *testing.T) {
	u, p := pollerUplink(t)
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	to := dead.LocalAddr().(*net.UDPAddr)
	dead.Close() // its port: nothing listens there now
	c, err := net.DialUDP("udp4", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := rawConn(c)
	rc.Control(func(fd uintptr) { err = setRecvErr(int(fd)) })
	if err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	near := conntrack.Tuple{Src: netip.MustParseAddr("10.0.2.100"), Dst: to.AddrPort().Addr(), SrcPort: local.Port(), DstPort: to.AddrPort().Port(), Proto: conntrack.ProtoUDP}
	es := &errorSender{near: near, far: near.Dst, inner: udpInner(near)}
	r := u.newDgramReader(rc, es, func(fd int, buf []byte) (int, error) { return unix.Read(fd, buf[28:]) },
		func(err error) { t.Errorf("the reader failed: %v", err) })
	if err := r.watch(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// The error comes back at once, on loopback; a send's taking of the
	// pending error is SO_ERROR's.
	deadline := time.Now().Add(2 * time.Second)
	for {
		var pending int
		rc.Control(func(fd uintptr) { pending, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) })
		if pending != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no ICMP error came back")
		}
		time.Sleep(time.Millisecond)
	}
	if _, failed := p.deliver(uintptr(p.epfd)); failed {
		t.Fatal("the epoll set failed")
	}
	if got := u.stats.HostErrors.Load(); got != 1 {
		t.Errorf("%d errors passed on to the container, want 1 (the port unreachable)", got)
	}
}

// A round of the poller that reads a datagram allocates nothing: the
// reader's work is on every datagram's path.
func TestDgramReaderReadsWithoutAllocating(t *testing.T) {
	u, p := pollerUplink(t)
	rx, tx := dgramPair(t)
	reads := 0
	r := u.newDgramReader(rawConn(rx), nil, func(fd int, buf []byte) (int, error) {
		n, err := unix.Read(fd, buf[28:])
		if err == nil {
			reads++
		}
		return n, err
	}, func(err error) { t.Errorf("the reader failed: %v", err) })
	if err := r.watch(); err != nil {
		t.Fatal(err)
	}
	b := []byte{1}
	round := func() {
		unix.Write(tx, b)
		p.deliver(uintptr(p.epfd))
	}
	round() // the buffer, made for the first datagram
	if allocs := testing.AllocsPerRun(100, round); allocs != 0 {
		t.Errorf("%.1f allocations a datagram", allocs)
	}
	if reads != 102 {
		t.Errorf("%d datagrams read, want 102", reads)
	}
}
