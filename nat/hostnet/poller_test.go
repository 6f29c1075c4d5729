package hostnet

import (
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
	var fds, self [2]int
	for _, f := range []*[2]int{&fds, &self} {
		if err := unix.Pipe2(f[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(f[0])
		defer unix.Close(f[1])
	}
	busypoll.Watch(self[0]) // the test's own loop's descriptor, never ready
	defer busypoll.Unwatch(self[0])
	var standIn atomic.Bool
	if _, err := p.add(fds[0], unix.EPOLLIN, func(uint32) {
		var b [16]byte
		for n, _ := unix.Read(fds[0], b[:]); n > 0; n, _ = unix.Read(fds[0], b[:]) {
		}
		if busypoll.InIdle() {
			standIn.Store(true)
		}
	}); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		p.run()
	}()
	defer func() {
		p.close()
		<-ran
	}()
	defer busypoll.SetLimit(busypoll.Limit())
	busypoll.SetLimit(100 * time.Millisecond)
	// A byte at a time, each written while the test polls, until one is
	// served there: the poller's goroutine may be awake when one comes
	// (at first, or on a busy machine), and then takes it itself.
	write := make(chan struct{})
	defer close(write)
	go func() {
		for range write {
			unix.Write(fds[1], []byte{1})
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); !standIn.Load() && time.Now().Before(deadline); {
		write <- struct{}{}
		busypoll.Prime()
		busypoll.Idle(self[0]) // the writer runs meanwhile
	}
	if !standIn.Load() {
		t.Fatal("in 10s, no byte was served by the polling loop")
	}
}
