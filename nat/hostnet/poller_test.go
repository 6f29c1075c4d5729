package hostnet

import (
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/busypoll"
)

// The poller's sockets are served by whichever loop of the process polls
// (busypoll) while the poller's goroutine sleeps: a callback runs inside
// the polling loop's busypoll.Idle, here the test's, with no goroutine
// woken in between.
func TestPollerServedByPollingLoop(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	fds := pipe2(t)
	var standIn atomic.Bool
	if _, err := p.add(fds[0], unix.EPOLLIN, func(uint32) {
		drainFD(fds[0])
		if busypoll.InIdle() {
			standIn.Store(true)
		}
	}); err != nil {
		t.Fatal(err)
	}
	ran := running(p)
	defer func() {
		p.close()
		<-ran
	}()
	// A byte at a time, each written while the test polls, until one is
	// served there.
	ok, err := busypoll.PollUntil(10*time.Second, func() error {
		_, err := unix.Write(fds[1], []byte{1})
		return err
	}, standIn.Load)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("in 10s, no byte was served by the polling loop")
	}
}

// The poller's goroutine, polling and serving another loop's stream in
// its stead, still notices close: run returns, and close with it, while
// the stream goes on (Idle reports true when its time is up, for the
// loop to look at its own state).
func TestPollerClosesWhileServingAnotherLoop(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	fds := pipe2(t)
	var other [2]int
	if err := unix.Pipe2(other[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other[1])
	// Another event loop's descriptor, which only the poller's goroutine
	// serves (its own goroutine never runs): a stream that never runs
	// dry while flood lasts.
	of := os.NewFile(uintptr(other[0]), "other")
	defer of.Close()
	rc, err := of.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	var flood atomic.Bool
	flood.Store(true)
	l := busypoll.NewLoop(rc, func(fd uintptr) bool {
		if !flood.Load() {
			drainFD(int(fd))
		}
		served.Add(1)
		return true
	})
	defer l.Close()
	unix.Write(other[1], []byte{1})
	defer flood.Store(false) // for a poller stuck serving, on failure
	if _, err := p.add(fds[0], unix.EPOLLIN, func(uint32) {
		drainFD(fds[0])
	}); err != nil {
		t.Fatal(err)
	}
	defer busypoll.SetLimit(busypoll.Limit())
	defer busypoll.IgnoreBusy()() // a busy machine ends no poll
	busypoll.SetLimit(20 * time.Millisecond)
	ran := running(p)
	// Wake the poller's goroutine, primed to poll, until it serves the
	// stream.
	for deadline := time.Now().Add(10 * time.Second); served.Load() == 0 && time.Now().Before(deadline); {
		busypoll.Prime()
		unix.Write(fds[1], []byte{1})
		time.Sleep(time.Millisecond)
	}
	if served.Load() == 0 {
		t.Fatal("in 10s, the poller's goroutine never served the other loop")
	}
	time.Sleep(50 * time.Millisecond) // serving it, again and again
	closed := make(chan struct{})
	go func() {
		p.close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not return within 5s while the poller served another loop's stream")
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return within 5s of close")
	}
}

// A polling loop that serves the poller in its goroutine's stead serves
// a round of events at a time, within its own polling time: a poller
// whose every round is full (more sockets ready than it takes at once)
// does not keep it from its own device, nor from its Close, for as long
// as that lasts.
func TestPollerStandInServesWithinItsTime(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	rc, err := p.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	l := busypoll.NewLoop(rc, p.standInFn) // the poller's goroutine asleep: not run here
	defer l.Close()
	self := pipe2(t)
	busypoll.Watch(self[0])
	defer busypoll.Unwatch(self[0])
	// More sockets than a round takes, each of which has news again by
	// the time it is told: every round is full, while flood lasts.
	var flood atomic.Bool
	flood.Store(true)
	n := len(p.events) + 8
	for range n {
		fds := pipe2(t)
		if _, err := p.add(fds[0], unix.EPOLLIN, func(uint32) {
			var b [16]byte
			unix.Read(fds[0], b[:])
			if flood.Load() {
				unix.Write(fds[1], []byte{1})
			}
		}); err != nil {
			t.Fatal(err)
		}
		unix.Write(fds[1], []byte{1})
	}
	defer busypoll.SetLimit(busypoll.Limit())
	defer busypoll.IgnoreBusy()() // a busy machine ends no poll
	busypoll.SetLimit(20 * time.Millisecond)
	busypoll.Prime()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		busypoll.Idle(self[0])
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		flood.Store(false)
		<-returned
		t.Fatal("Idle, its time 20ms, still serving the poller's full rounds after 5s")
	}
}

// running starts p's goroutine, and returns a channel closed when its run
// returns.
func running(p *poller) <-chan struct{} {
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		p.run()
	}()
	return ran
}

// drainFD reads what the non-blocking descriptor fd holds.
func drainFD(fd int) {
	var b [64]byte
	for n, _ := unix.Read(fd, b[:]); n > 0; n, _ = unix.Read(fd, b[:]) {
	}
}

// pipe2 is a non-blocking pipe, closed when the test ends.
func pipe2(t *testing.T) [2]int {
	t.Helper()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds
}
