package hostnet

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// A socket holding more datagrams than one round of the poller reads
// (dgramBudget) is read to its end over the next rounds: each reads the
// budget at most, and arms the socket again for the next, where an
// edge-triggered watch would not tell of the rest until another came.
func TestDgramReaderBudget(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	u := &Uplink{poll: p}
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
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	u := &Uplink{poll: p}
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
