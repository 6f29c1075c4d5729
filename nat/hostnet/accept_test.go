package hostnet

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// An acceptor takes acceptBatch clients at a time, on the poller's
// goroutine that every splice's socket waits on, and has the poller come
// back for the rest after what else is ready: taken all at once, a flood
// of clients to a published port held up every connection.
func TestAcceptorTakesABatch(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	u := &Uplink{poll: p, warned: map[string]bool{}}
	ctr := netip.MustParseAddrPort("10.0.2.100:80")
	for u.dialing.take(ctr.Addr()) { // no place: each client is reset, and counted
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // as Publish listens
	nl, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := nl.(*net.TCPListener)
	const clients = 2*acceptBatch + 1
	for range clients {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	a, err := u.newAcceptor(l, ctr)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// The kernel's accept queue holds every client (a listening
	// socket's tcpi_unacked).
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := unix.GetsockoptTCPInfo(a.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if info.Unacked == clients {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d clients waiting, want %d", info.Unacked, clients)
		}
		time.Sleep(time.Millisecond)
	}
	if err := a.start(); err != nil { // takes the first batch
		t.Fatal(err)
	}
	events := make([]unix.EpollEvent, 4)
	for i, want := range []uint64{acceptBatch, 2 * acceptBatch, clients} {
		if got := u.stats.DropInFlight.Load(); got != want {
			t.Fatalf("after %d turns, %d clients taken, want %d", i+1, got, want)
		}
		n, err := unix.EpollWait(p.epfd, events, 0)
		if err != nil {
			t.Fatal(err)
		}
		if more := want < clients; more != (n == 1 && getID(&events[0]) == a.id) {
			t.Fatalf("after %d of %d clients: %d events ready (want the listener's: %v)", want, clients, n, more)
		}
		a.ready(0) // what the poller does for the event
	}
}
