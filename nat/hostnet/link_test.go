package hostnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/nat"
	"golang.org/x/sys/unix"
)

// A packet waiting in the link's queue holds a buffer of its size class:
// an ACK or a datagram up to smallPacket bytes a small one, a larger
// packet one of maxPacket. With no gateway delivering, every packet
// waits in the queue, and a full queue refuses the next one.
func TestLinkBufferSizes(t *testing.T) {
	l := newLink(3)
	ack := bytes.Repeat([]byte{1}, 40)
	edge := bytes.Repeat([]byte{2}, smallPacket)
	seg := bytes.Repeat([]byte{3}, smallPacket+1)
	for _, pkt := range [][]byte{ack, edge, seg} {
		if !l.queue(pkt, bridge.Offload{}) {
			t.Fatal("the queue refused a packet with room left")
		}
	}
	if l.queue(ack, bridge.Offload{}) || l.drops.Load() != 1 {
		t.Fatalf("a full queue took a packet (drops %d)", l.drops.Load())
	}
	for i, want := range []struct {
		pkt  []byte
		size int
	}{{ack, smallPacket}, {edge, smallPacket}, {seg, maxPacket}} {
		f := <-l.q
		if len(*f.buf) != nat.Headroom+want.size {
			t.Errorf("packet %d (%d bytes) waits in a buffer of %d, want %d", i, len(want.pkt), len(*f.buf)-nat.Headroom, want.size)
		}
		if !bytes.Equal((*f.buf)[nat.Headroom:f.n], want.pkt) {
			t.Errorf("packet %d changed in the queue", i)
		}
		l.putBuf(f.buf)
	}
	// Each went back to its own pool: a small buffer in the big pool
	// would cut a large packet short later (copy truncates silently).
	for range 100 {
		if b := l.getBuf(1); len(*b) != nat.Headroom+smallPacket {
			t.Fatalf("a small packet got a buffer of %d", len(*b)-nat.Headroom)
		}
		if b := l.getBuf(smallPacket + 1); len(*b) != nat.Headroom+maxPacket {
			t.Fatalf("a large packet got a buffer of %d", len(*b)-nat.Headroom)
		}
	}
}

// The queue holds at most QueueBytes (32 MiB by default) of large
// packets, whatever QueueLen allows: a host socket's 64 KiB datagrams,
// read faster than the gateway takes them, filled 4096 buffers of 64 KiB
// (270 MB). Small packets (ACKs) still go in, a waiting splice is listed
// until a delivery makes room, and the count goes back to zero as frames
// leave.
func TestLinkLargeBounded(t *testing.T) {
	const n = 600 // 39 MB in buffers of 64 KiB, well within QueueLen
	l := newLink(DefaultQueueLen)
	dgram := make([]byte, 60000)
	took := 0
	for range n {
		if l.queue(dgram, bridge.Offload{}) {
			took++
		}
	}
	if want := DefaultQueueBytes / maxPacket; took != want || l.drops.Load() != uint64(n-want) {
		t.Fatalf("the queue took %d large packets (%d MB) and dropped %d of %d; want %d taken", took, took*maxPacket>>20, l.drops.Load(), n, want)
	}
	if !l.queue(make([]byte, 40), bridge.Offload{}) {
		t.Fatal("an ACK refused while the queue holds its most large packets")
	}
	if !l.onRoom(func() {}) {
		t.Fatal("no waiter listed while large packets are refused: it would retry at once, and again")
	}
	// Delivered, or dropped at the end: either gives the place back.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l.run(ctx, func([]byte, bridge.Offload) {})
	if len(l.q) != 0 {
		t.Fatalf("%d frames left in the queue", len(l.q))
	}
	if got := l.large.Load(); got != 0 {
		t.Errorf("%d large packets counted once the queue drained, want 0", got)
	}
}

// The link's goroutine tells the waiters, once, when it delivers a queued
// frame: the queue has room again.
func TestLinkRoomMade(t *testing.T) {
	l := newLink(1)
	ack := make([]byte, 40)
	l.queue(ack, bridge.Offload{})
	if l.queue(ack, bridge.Offload{}) {
		t.Fatal("a full queue took a packet")
	}
	told := make(chan struct{}, 2)
	if !l.onRoom(func() { told <- struct{}{} }) {
		t.Fatal("a full queue listed no waiter")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		l.run(ctx, func([]byte, bridge.Offload) {})
	}()
	select {
	case <-told:
	case <-time.After(5 * time.Second):
		t.Fatal("a frame of the queue was delivered, and the waiter was not told")
	}
	cancel()
	<-ran
	l.wmu.Lock()
	left := len(l.waiters)
	l.wmu.Unlock()
	if left != 0 || len(told) != 0 {
		t.Fatalf("after telling: %d waiters listed, told %d more times", left, len(told))
	}
	// With room already (the queue drained since the refusal), nothing
	// is listed that no delivery would come to tell.
	if l.onRoom(func() { t.Error("told with nothing queued") }) || len(l.waiters) != 0 {
		t.Fatalf("a queue with room listed a waiter (%d listed)", len(l.waiters))
	}
}

// The poller delivers every socket's news when more are ready at once
// than one wait takes (64): edge-triggered, a socket not delivered then
// would never be again.
func TestPollerManyReady(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	const n = 150
	var got atomic.Int32
	all := make(chan struct{})
	var writers []int
	for range n {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		if _, err := p.add(fds[0], unix.EPOLLIN, func(uint32) {
			if got.Add(1) == n {
				close(all)
			}
		}); err != nil {
			t.Fatal(err)
		}
		writers = append(writers, fds[1])
	}
	for _, w := range writers { // all ready before the poller's goroutine waits
		unix.Write(w, []byte("x"))
	}
	ran := running(p)
	defer func() {
		p.close()
		<-ran
	}()
	select {
	case <-all:
	case <-time.After(5 * time.Second):
		t.Fatalf("%d of %d sockets' news delivered", got.Load(), n)
	}
}

// A descriptor the poller forgets and its owner closes is out of the epoll
// set (the kernel's list of it, in fdinfo, no longer has it: closing took
// it out), and the poller keeps nothing of it.
func TestPollerForget(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	watched := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", p.epfd))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "tfd:")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	id, err := p.add(fds[0], unix.EPOLLIN, func(uint32) {})
	if err != nil {
		t.Fatal(err)
	}
	if n := watched(); n != 1 {
		t.Fatalf("%d descriptors in the epoll set, want the one added", n)
	}
	p.forget(id)
	unix.Close(fds[0])
	if len(p.subs) != 0 {
		t.Errorf("the poller still has %d callbacks after forget", len(p.subs))
	}
	if n := watched(); n != 0 {
		t.Errorf("%d descriptors in the epoll set after forget and close, want none", n)
	}
}

// The link tells as many waiters as its queue has room for, first listed
// first; a waiter told that did not take its room leaves it to the next
// delivery, which tells more, and the last (the queue empty) tells all.
// Told all at every delivery, every waiter but the first to send found
// the queue full again (TestSplicesWokenByRoomInTurn).
func TestLinkRoomMadeInTurn(t *testing.T) {
	l := newLink(2)
	ack := make([]byte, 40)
	l.queue(ack, bridge.Offload{})
	l.queue(ack, bridge.Offload{})
	var told []int
	for i := range 4 {
		if !l.onRoom(func() { told = append(told, i) }) {
			t.Fatal("a full queue listed no waiter")
		}
	}
	deliver := func() {
		f := <-l.q
		l.putBuf(f.buf)
		l.roomMade() // as the link's goroutine does after delivering a frame
	}
	deliver() // room for one; waiter 0 does not take it
	if fmt.Sprint(told) != "[0]" {
		t.Fatalf("told %v after the first delivery, want [0]", told)
	}
	deliver() // the queue empty: room for all
	if fmt.Sprint(told) != "[0 1 2 3]" || l.waiting.Load() || len(l.waiters) != 0 {
		t.Fatalf("told %v after the queue emptied (%d still listed), want every waiter once", told, len(l.waiters))
	}
}
