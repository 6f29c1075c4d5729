package hostnet

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
	"golang.org/x/sys/unix"
)

// testUplink is an uplink for a splice in a unit test, whose timers may
// fire before the test ends: frames wait in a link with no gateway, and
// the log says nothing. The splice's socket is -1, so a timer's pump only
// fails.
func testUplink() *Uplink {
	return &Uplink{ln: newLink(1024), log: slog.New(slog.DiscardHandler), cfg: Config{MaxBuffered: DefaultMaxBuffered}}
}

// newTestSplice is an open splice of testUplink's, locked: a test calls
// its ...Locked methods, and holds the lock until it has stopped it, so
// a timer that fires meanwhile waits, then finds it done.
func newTestSplice(mss int) *splice {
	s := &splice{
		u: testUplink(), fd: -1, mss: mss, state: spliceOpen, rto: spliceMinRTO,
		from: netip.MustParseAddrPort("192.0.2.1:40000"), to: netip.MustParseAddrPort("10.0.2.100:80"),
	}
	s.mu.Lock()
	return s
}

// The congestion window of a splice (RFC 5681): sends are bounded by it
// as well as by the container's window; it grows by bytes acknowledged in
// slow start (at most two segments an ACK) and by about a segment a
// window after; a retransmission timeout takes it to one segment, with
// half of what was in flight as the threshold.
func TestSpliceCongestionWindow(t *testing.T) {
	const mss = 1000
	s := newTestSplice(mss)
	s.peekOff = true
	defer s.mu.Unlock()
	defer s.stopLocked() // the retransmission timer ACKs arm
	s.sndUna, s.sndNxt, s.sndMax = 1000, 1000, 1000
	s.sndWnd, s.cwnd, s.ssthresh = 1<<20, 10*mss, 1<<30
	if got := s.canLocked(); got != 10*mss {
		t.Fatalf("can send %d, want the initial window %d", got, 10*mss)
	}
	// Ten segments out, then acknowledged two at a time: slow start
	// doubles the window.
	s.sndNxt, s.sndMax = s.sndUna+10*mss, s.sndUna+10*mss
	for range 5 {
		s.ackLocked0(s.sndUna+2*mss, uint16(s.sndWnd>>s.sndShift), false, false)
	}
	if s.cwnd != 20*mss {
		t.Errorf("after ten segments acknowledged, cwnd %d, want %d", s.cwnd, 20*mss)
	}
	// An ACK of a huge stretch counts two segments at most.
	s.sndNxt, s.sndMax = s.sndUna+20*mss, s.sndUna+20*mss
	s.ackLocked0(s.sndUna+20*mss, 0xffff, false, false)
	if s.cwnd != 22*mss {
		t.Errorf("after a stretch ACK, cwnd %d, want %d", s.cwnd, 22*mss)
	}
	// A timeout with 16 segments in flight.
	s.sndNxt, s.sndMax = s.sndUna+16*mss, s.sndUna+16*mss
	s.lossLocked()
	if s.cwnd != mss || s.ssthresh != 8*mss {
		t.Errorf("after a loss, cwnd %d and ssthresh %d, want %d and %d", s.cwnd, s.ssthresh, mss, 8*mss)
	}
	s.sndNxt = s.sndUna // rewound
	if got := s.canLocked(); got != mss {
		t.Errorf("after a loss, can send %d, want one segment", got)
	}
	// Past the threshold, about a segment a window.
	s.cwnd = 8 * mss
	s.sndNxt, s.sndMax = s.sndUna+8*mss, s.sndUna+8*mss
	for range 8 {
		s.ackLocked0(s.sndUna+mss, 0xffff, false, false)
	}
	if s.cwnd < 8*mss+mss*7/8 || s.cwnd > 9*mss {
		t.Errorf("a window acknowledged in congestion avoidance: cwnd %d, want about %d", s.cwnd, 9*mss)
	}
	// The container's window bounds it too.
	s.sndNxt = s.sndUna
	s.sndWnd = 3 * mss
	if got := s.canLocked(); got != 3*mss {
		t.Errorf("with the container's window at 3 segments, can send %d", got)
	}
}

// Fast retransmission (RFC 5681, 6582): the third duplicate ACK in a row
// has the splice go back to the first byte not acknowledged at once,
// with the congestion window halved; a segment that carries bytes breaks
// the row. The duplicates that the copies of bytes the container held
// draw do not do it again, until what was in flight at the rewind is all
// acknowledged.
func TestSpliceFastRetransmit(t *testing.T) {
	const mss, una, wnd = 1000, 5000, 0xffff
	s := newTestSplice(mss)
	u := s.u
	defer s.mu.Unlock()
	defer s.stopLocked()
	s.sndUna, s.sndNxt, s.sndMax, s.recover = una, una+20*mss, una+20*mss, una-1
	s.sndWnd, s.cwnd, s.ssthresh = wnd, 20*mss, 1<<30
	dups := func(ack uint32, n int) {
		for range n {
			s.ackLocked0(ack, wnd, true, false)
		}
	}
	dups(una, 2)
	s.ackLocked0(una, wnd, false, false) // the container's bytes, with the same ACK
	dups(una, 2)
	if s.rewind {
		t.Fatal("a rewind after two duplicates in a row")
	}
	if !s.ackLocked0(una, wnd, true, false) || !s.rewind {
		t.Fatal("no rewind at the third duplicate")
	}
	if s.cwnd != 10*mss || s.ssthresh != 10*mss || s.recover != una+20*mss || u.stats.InboundFastRetransmits.Load() != 1 {
		t.Fatalf("after the third duplicate: cwnd %d, ssthresh %d, recover %d, counted %d", s.cwnd, s.ssthresh, s.recover, u.stats.InboundFastRetransmits.Load())
	}
	// The pump rewinds; the lost segment's copy fills the hole, and
	// copies of what the container holds beyond draw duplicates.
	s.rewind, s.sndNxt = false, una
	s.ackLocked0(una+12*mss, wnd, true, false)
	s.sndNxt = una + 14*mss
	dups(una+12*mss, 5)
	if s.rewind {
		t.Fatal("a second rewind before recover was acknowledged")
	}
	// Past recover, a new loss goes again at once.
	s.sndNxt, s.sndMax = una+30*mss, una+30*mss
	s.ackLocked0(una+21*mss, wnd, true, false)
	dups(una+21*mss, 3)
	if !s.rewind || u.stats.InboundFastRetransmits.Load() != 2 {
		t.Fatalf("a loss past recover: rewind %v, counted %d", s.rewind, u.stats.InboundFastRetransmits.Load())
	}
}

// A segment the full queue refused is taken back: sndNxt goes back to it
// (never below sndUna, which an acknowledgement of an earlier copy may
// have moved past it meanwhile, nor forward), the window halves once a
// run of refusals, and the timer is to send it again soon, not after a
// retransmission timeout. Refusals outside the timer's retries (one per
// client's chunk or container's ACK) do not lengthen the back-off.
func TestSpliceRefused(t *testing.T) {
	const mss = 1000
	s := newTestSplice(mss)
	defer s.mu.Unlock()
	defer s.stopLocked()
	s.sndUna, s.sndNxt, s.sndMax = 10*mss, 14*mss, 14*mss
	s.cwnd = 20 * mss
	refuse := func(seq uint32) {
		s.unsendLocked(seq)
		if s.refusedLocked() {
			t.Fatal("gave up without a retry of the timer's")
		}
	}
	refuse(12 * mss)
	if s.sndNxt != 12*mss || !s.reseek || !s.blocked || !s.requeue || s.cwnd != 10*mss {
		t.Fatalf("after a refusal: sndNxt %d, reseek %v, blocked %v, requeue %v, cwnd %d", s.sndNxt, s.reseek, s.blocked, s.requeue, s.cwnd)
	}
	s.sndUna, s.sndNxt = 13*mss, 13*mss // acknowledged past it
	refuse(12 * mss)
	if s.sndNxt != 13*mss {
		t.Fatalf("a refusal behind sndUna took sndNxt to %d, want sndUna %d", s.sndNxt, s.sndUna)
	}
	s.sndNxt = 13 * mss
	refuse(13*mss + 500)
	if s.sndNxt != 13*mss {
		t.Fatalf("a refusal past sndNxt moved it to %d", s.sndNxt)
	}
	if s.cwnd != 10*mss || s.refused != 0 || s.u.stats.InboundRequeued.Load() != 3 {
		t.Fatalf("after three refusals: cwnd %d, refused %d in a row, counted %d", s.cwnd, s.refused, s.u.stats.InboundRequeued.Load())
	}
	// The timer's retry, refused, counts; one that goes ends the run.
	s.retrying = true
	refuse(13 * mss)
	if s.refused != 1 || s.retrying {
		t.Fatalf("a refused retry: refused %d in a row, retrying %v", s.refused, s.retrying)
	}
	// A segment that goes ends the run; the retry still due comes at
	// once, not after its back-off.
	s.refused = 5
	s.setTimerLocked(localRetry << 5)
	s.sentLocked()
	if s.refused != 0 || !s.requeue || time.Until(s.timerAt) > localRetry {
		t.Fatalf("after a segment went: refused %d, requeue %v, retry in %v", s.refused, s.requeue, time.Until(s.timerAt))
	}
}

// A firing of the timer that waited for the lock while the timer was
// armed again is not the timeout armed: it does nothing. (It counted a
// retransmission timeout for bytes just sent, 1 to 3 a run of
// TestIntegrationPublishedTCPLostFrames in 1 run of 5.)
func TestSpliceStaleTimer(t *testing.T) {
	s := newTestSplice(1000)
	s.sndUna, s.sndNxt, s.sndMax = 1000, 5000, 5000 // in flight
	s.setTimerLocked(time.Millisecond)
	time.Sleep(20 * time.Millisecond) // it fires, and waits for the lock
	s.setTimerLocked(time.Hour)       // bytes sent: the timeout starts again
	s.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.stopLocked()
	if n := s.u.stats.InboundRetransmits.Load(); n != 0 || s.sndNxt != 5000 {
		t.Fatalf("a stale firing: %d retransmission timeouts, sndNxt %d", n, s.sndNxt)
	}
}

// refusingSplice is an open splice whose client sent data (its socket
// one end of a socket pair) and whose link queue is full, so every frame
// is refused until drain is called; fill fills it again.
func refusingSplice(t *testing.T, data string) (s *splice, drain, fill func()) {
	t.Helper()
	s = sendingSplice(t, data, 1)
	fill = func() { s.u.ln.queue(make([]byte, 40), bridge.Offload{}) }
	fill()
	return s, func() { <-s.u.ln.q }, fill
}

// sendingSplice is an open splice whose client sent data (its socket
// one end of a socket pair), at sequence number 1000 on, with a link
// queue of qlen frames, unlocked.
func sendingSplice(t *testing.T, data string, qlen int) *splice {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	if data != "" {
		if _, err := unix.Write(fds[1], []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	return spliceOn(t, fds[0], qlen)
}

// spliceOn is an open splice whose host socket is fd, at sequence number
// 1000 on, with a link queue of qlen frames, unlocked; it closes fd when
// the test ends.
func spliceOn(t *testing.T, fd, qlen int) *splice {
	t.Helper()
	s := newTestSplice(1000)
	s.mu.Unlock()
	s.u.ln = newLink(qlen)
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	s.u.poll = p
	openOn(t, s, fd)
	return s
}

// openOn makes s, unlocked, an open splice of its uplink's poller whose
// host socket is fd, at sequence number 1000 on, with wide windows; it
// closes fd when the test ends.
func openOn(t *testing.T, s *splice, fd int) {
	t.Helper()
	s.fd = fd
	s.sndUna, s.sndNxt, s.sndMax, s.discarded = 1000, 1000, 1000, 1000
	s.sndWnd, s.cwnd, s.ssthresh = 1<<20, 10000, 1<<30
	s.peekOff, s.reseek = true, true             // the peek offset at the first byte
	if err := s.watch(spliceWatch); err != nil { // no goroutine waits on the poller: it is only told
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		s.stopLocked()
		s.closeLocked()
		s.mu.Unlock()
	})
}

// sackingSplice is sendingSplice with n bytes to send, SACK agreed, the
// container's window wnd, a congestion window that takes them all in
// one frame, and the container's next byte at 7000 (which the ACKs of
// containerAck carry).
func sackingSplice(t *testing.T, n int, wnd uint32) *splice {
	t.Helper()
	s := sendingSplice(t, strings.Repeat("x", n), 64)
	s.mu.Lock()
	s.cwnd, s.rcvNxt, s.sndWnd, s.recover, s.sackOK = 1<<20, 7000, wnd, 999, true
	s.mu.Unlock()
	return s
}

// fire runs the splice's timer now, as if it were due.
func fire(s *splice) {
	s.mu.Lock()
	s.timerAt = time.Now()
	s.mu.Unlock()
	s.onTimer()
}

// A queue that stays full ends the flow, but only once the timer's own
// retry, past spliceQueueTimeout of refusals, was refused too; a retry
// the queue takes goes on. A SYN refused past the handshake's
// deadline ends it too. They are not sent every millisecond for ever.
func TestSpliceRefusedForGood(t *testing.T) {

	s, _, _ := refusingSplice(t, "hello")
	s.requeue, s.refusedSince = true, time.Now().Add(-spliceQueueTimeout-time.Second)
	fire(s)
	if s.state != spliceDone {
		t.Errorf("the last retry allowed was refused: the splice goes on (refused %d)", s.refused)
	}

	s, drain, _ := refusingSplice(t, "hello")
	s.requeue, s.refusedSince = true, time.Now().Add(-spliceQueueTimeout-time.Second)
	drain()
	fire(s)
	s.mu.Lock()
	if s.state != spliceOpen || s.refused != 0 || s.sndNxt != 1005 {
		t.Errorf("a retry the queue took: state %v, refused %d, sndNxt %d; want open, 0, 1005", s.state, s.refused, s.sndNxt)
	}
	s.mu.Unlock()

	s, _, _ = refusingSplice(t, "hello")
	var opened []bool
	s.onOpen = func(ok bool) { opened = append(opened, ok) }
	s.state = spliceSynSent
	s.deadline = time.Now().Add(-time.Millisecond)
	s.requeue = true
	fire(s)
	if s.state != spliceDone || len(opened) != 1 || opened[0] {
		t.Errorf("a SYN past its deadline: state %v, the caller told %v", s.state, opened)
	}
}

// A splice that only acknowledges (a download) through many short spells
// of a full queue goes on: a retry of the timer's that goes ends the run
// of refusals, though only a segment with data did before (the sixteenth
// spell reset the flow).
func TestSpliceAckOnlyRefusals(t *testing.T) {
	s, drain, fill := refusingSplice(t, "")
	for spell := range spliceRetries + 3 {
		s.mu.Lock()
		s.rcvNxt += 100 // the container's bytes, to acknowledge
		s.ackDue = true
		s.mu.Unlock()
		s.ackIfDue() // refused
		fire(s)      // the timer's retry, refused too
		drain()
		fire(s) // the next retry goes
		fill()
		s.mu.Lock()
		state, refused, due := s.state, s.refused, s.ackDue
		s.mu.Unlock()
		if state != spliceOpen || refused != 0 || due {
			t.Fatalf("after spell %d: state %v, refused %d in a row, ACK still due %v", spell, state, refused, due)
		}
	}
}

// An acknowledgement that must go though it acknowledges nothing new (a
// window that opens) stays due, and must, through refused retries, until
// one goes.
func TestSpliceMustAckRetried(t *testing.T) {
	s, drain, _ := refusingSplice(t, "")
	s.mu.Lock()
	seq, ack, wnd, prev := s.ackLocked()
	s.mu.Unlock()
	s.sendAck(seq, ack, wnd, prev, true, &sackOpt{}) // refused
	for range 3 {
		fire(s) // refused again
		s.mu.Lock()
		due, must, requeue := s.ackDue, s.ackMust, s.requeue
		s.mu.Unlock()
		if !due || !must || !requeue {
			t.Fatalf("after a refused retry: due %v, must %v, retry due %v", due, must, requeue)
		}
	}
	drain()
	fire(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ackDue || s.ackMust || s.u.ln.drops.Load() != 4 {
		t.Fatalf("after the retry that went: due %v, must %v, %d refused", s.ackDue, s.ackMust, s.u.ln.drops.Load())
	}
}

// A splice waiting to send again what the queue refused is told when the
// queue has room, and goes at once, not when its back-off ends: under
// stalls, retries at a pace of their own landed in a full queue again and
// again, and round trips took up to 32 s (stress tests, 16 flows, the
// link stalled 0-50 ms every 0-20 ms).
func TestSpliceWokenByRoom(t *testing.T) {
	s, drain, _ := refusingSplice(t, "hello")
	s.mu.Lock()
	s.refused = 8 // the fallback timer in 256 ms
	s.mu.Unlock()
	before := time.Now()
	s.pump() // refused
	s.mu.Lock()
	requeue, in := s.requeue, s.timerAt.Sub(before)
	s.mu.Unlock()
	if !requeue || in < 256*time.Millisecond {
		t.Fatalf("after a refusal: retry due %v in %v", requeue, in)
	}
	// Its timer's retry, refused again before the queue had room: still
	// one entry in the link's list.
	s.mu.Lock()
	s.requeue, s.retrying = false, true
	s.refusedLocked()
	s.setTimerLocked(time.Hour) // the fallback out of the way: only the link's news sends now
	s.mu.Unlock()
	s.u.ln.wmu.Lock()
	waiters := len(s.u.ln.waiters)
	s.u.ln.wmu.Unlock()
	if waiters != 1 {
		t.Fatalf("%d entries in the link's list for one splice", waiters)
	}
	drain()
	s.u.ln.roomMade() // as the link's goroutine does after delivering a frame
	select {
	case f := <-s.u.ln.q:
		if seg := tcpSeg((*f.buf)[nat.Headroom+20 : f.n]); seg.seq() != 1000 || string(seg.payload()) != "hello" {
			t.Fatalf("the queue's next frame: seq %d, %q; want hello from 1000", seg.seq(), seg.payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("told the queue has room, the retry has not gone")
	}
}

// Flows waiting for room in the link's queue are told in turn, as many as
// it has room for: room for one frame sends one flow's, and draws no
// retry from the others, which would find the queue full again. All told at
// once, each frame delivered cost every waiting flow a retry (a timer's
// goroutine, a peek of up to 64 KiB), the rest of them refused: CPU
// taken from the gateway that drains the queue, in proportion to the
// flows.
func TestSplicesWokenByRoomInTurn(t *testing.T) {
	const flows = 20
	const queue = 4
	u := testUplink()
	u.ln = newLink(queue)
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	u.poll = p
	var ss []*splice
	for range flows {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[1]) })
		if _, err := unix.Write(fds[1], []byte("hello")); err != nil {
			t.Fatal(err)
		}
		s := newTestSplice(1000)
		s.u = u
		s.mu.Unlock()
		openOn(t, s, fds[0])
		ss = append(ss, s)
	}
	for range queue { // the queue full
		u.ln.queue(make([]byte, 40), bridge.Offload{})
	}
	for _, s := range ss {
		s.pump() // refused: each waits for room
		s.mu.Lock()
		s.refused = 8
		s.setTimerLocked(time.Hour) // the fallback out of the way: only the link's news sends now
		s.mu.Unlock()
	}
	refused := u.ln.drops.Load()
	f := <-u.ln.q
	u.ln.putBuf(f.buf)
	u.ln.roomMade() // as the link's goroutine does after delivering a frame
	for end := time.Now().Add(5 * time.Second); len(u.ln.q) < queue; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("told the queue has room, no flow sent")
		}
	}
	time.Sleep(50 * time.Millisecond) // for the retries of flows told too
	if n := u.ln.drops.Load() - refused; n > 1 {
		t.Errorf("room for one frame drew %d retries the queue refused, want none beyond the one flow's next", n)
	}
}

// A retransmission of our FIN alone that the queue refuses leaves the
// acknowledgement it carried due (the delayed-ACK timer's): else the
// container's bytes would wait for their own retransmission.
func TestSpliceRefusedFinKeepsAck(t *testing.T) {
	defer func(d time.Duration) { ackDelay = d }(ackDelay)
	ackDelay = time.Hour // armed, not fired, when the test looks
	s, _, _ := refusingSplice(t, "")
	s.mu.Lock()
	s.finAt, s.finSent, s.finSeq = true, true, 1000
	s.sndNxt, s.sndMax, s.hostEOF = 1001, 1001, true
	s.rcvNxt = 100 // the container's bytes, not acknowledged yet
	s.mu.Unlock()
	fire(s) // the retransmission timeout: the FIN again, refused
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.u.stats.InboundRetransmits.Load() != 1 || !s.ackDue || !s.dtimerSet || s.rcvAcked == 100 {
		t.Fatalf("after the refused FIN: %d timeouts, ACK due %v, delayed-ACK timer armed %v, last acknowledged %d", s.u.stats.InboundRetransmits.Load(), s.ackDue, s.dtimerSet, s.rcvAcked)
	}
}

// receivingSplice is an open splice whose queue to the gateway takes
// frames, waiting for the container's byte 5000, and a header to send it
// segments with.
func receivingSplice(t *testing.T) (*splice, tcpSeg) {
	s, drain, _ := refusingSplice(t, "")
	drain() // the queue takes frames
	s.mu.Lock()
	s.rcvNxt, s.rcvAcked = 5000, 5000
	s.mu.Unlock()
	return s, make(tcpSeg, tcpMinSize)
}

// The container's bytes, in order and short of two segments, are
// acknowledged after ackDelay by one pure ACK, not at once: the delayed
// ACK, which our next segment would usually carry instead.
func TestSpliceDelayedAck(t *testing.T) {
	s, h := receivingSplice(t)
	putTCPHeader(h, 0, 0, 5000, 1000, conntrack.TCPAck|conntrack.TCPPsh, 0xffff, tcpMinSize)
	s.input(h, []byte("hi"))
	if n := len(s.u.ln.q); n != 0 {
		t.Fatalf("%d frames at once for 2 bytes in order, want none", n)
	}
	select {
	case f := <-s.u.ln.q:
		tcp := tcpSeg((*f.buf)[nat.Headroom+20 : f.n])
		if tcp.flags() != conntrack.TCPAck || tcp.ack() != 5002 || f.n != nat.Headroom+40 {
			t.Fatalf("the delayed frame: flags %#x, ack %d, %d bytes; want a pure ACK of 5002", tcp.flags(), tcp.ack(), f.n-nat.Headroom)
		}
	case <-time.After(time.Second):
		t.Fatal("no acknowledgement after ackDelay")
	}
	time.Sleep(5 * ackDelay)
	if n := len(s.u.ln.q); n != 0 {
		t.Fatalf("%d more frames after the delayed ACK", n)
	}
}

// The delayed ACK goes within ackDelay of the first byte it acknowledges:
// segments after it do not push it back.
func TestSpliceDelayedAckNotPushedBack(t *testing.T) {
	old := ackDelay
	ackDelay = 100 * time.Millisecond // long beside the machine's scheduling delays
	t.Cleanup(func() { ackDelay = old })
	s, h := receivingSplice(t)
	for i := range 3 {
		if i > 0 {
			// Each byte inside the delay of the last: a timer armed
			// again by each would not fire before the third.
			time.Sleep(ackDelay * 3 / 5)
		}
		if n := len(s.u.ln.q); n > 0 {
			break
		}
		putTCPHeader(h, 0, 0, 5000+uint32(i), 1000, conntrack.TCPAck|conntrack.TCPPsh, 0xffff, tcpMinSize)
		s.input(h, []byte("x"))
	}
	select {
	case f := <-s.u.ln.q:
		// Of the bytes that came before the timer fired: one, two,
		// or all three when it fired late.
		if tcp := tcpSeg((*f.buf)[nat.Headroom+20 : f.n]); tcp.flags() != conntrack.TCPAck || tcp.ack() < 5001 || tcp.ack() > 5003 {
			t.Fatalf("flags %#x, ack %d; want a pure ACK of the first bytes", tcp.flags(), tcp.ack())
		}
	case <-time.After(ackDelay / 2): // before a timer pushed back to the third byte's delay
		t.Fatalf("no acknowledgement %v after the first byte, with bytes every %v", ackDelay*17/10, ackDelay*3/5)
	}
}

// Only news of an end of stream, an error or urgent data has the pumps
// read the host socket until it is empty: bytes and room to write (a
// flushing splice's IN|OUT) do not.
func TestSpliceToEmpty(t *testing.T) {
	for _, c := range []struct {
		events uint32
		want   bool
	}{
		{unix.EPOLLIN | unix.EPOLLOUT, false},
		{unix.EPOLLIN, false},
		{unix.EPOLLIN | unix.EPOLLRDHUP, true},
		{unix.EPOLLPRI, true},
		{unix.EPOLLIN | unix.EPOLLERR, true},
		{unix.EPOLLIN | unix.EPOLLHUP, true},
	} {
		s := newTestSplice(1000)
		s.mu.Unlock()
		s.ready(c.events) // the pump fails on the socket -1, and ends the splice
		s.mu.Lock()
		got := s.toEmpty
		s.mu.Unlock()
		if got != c.want {
			t.Errorf("after events %#x: toEmpty %v, want %v", c.events, got, c.want)
		}
	}
}

// A splice counts its retransmissions and refusals under its direction:
// a published port's client's as inbound, a container's own connection's
// as outbound.
func TestSpliceCountsByDirection(t *testing.T) {
	for _, out := range []bool{false, true} {
		const mss, una, wnd = 1000, 5000, 0xffff
		s := newTestSplice(mss)
		s.out = out
		s.sndUna, s.sndNxt, s.sndMax, s.recover = una, una+20*mss, una+20*mss, una-1
		s.sndWnd, s.cwnd, s.ssthresh = wnd, 20*mss, 1<<30
		for range 3 {
			s.ackLocked0(una, wnd, true, false)
		}
		s.refusedLocked()
		s.stopLocked()
		s.mu.Unlock()
		st := &s.u.stats
		in := []uint64{st.InboundFastRetransmits.Load(), st.InboundRequeued.Load()}
		outs := []uint64{st.OutboundFastRetransmits.Load(), st.OutboundRequeued.Load()}
		want, none := in, outs
		if out {
			want, none = outs, in
		}
		if want[0] != 1 || want[1] != 1 || none[0] != 0 || none[1] != 0 {
			t.Errorf("out %v: counted inbound %v, outbound %v (fast retransmissions, requeued)", out, in, outs)
		}
	}
}

// synOptions reads a SYN's MSS (536 without one) and window scale (-1
// without one, at most 14), past no-operations, and stops at the end of
// options or at a malformed one.
func TestSynOptions(t *testing.T) {
	for _, c := range []struct {
		name    string
		opts    []byte
		mss, ws int
		sack    bool
	}{
		{"none", nil, 536, -1, false},
		{"Linux's", []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7}, 1460, 7, true},
		{"scale too large", []byte{1, 3, 3, 15}, 536, 14, false},
		{"after the end", []byte{0, 2, 4, 0x05, 0xb4, 4, 2}, 536, -1, false},
		{"malformed length", []byte{2, 4, 0x05, 0xb4, 3, 9, 7}, 1460, -1, false},
		{"zero length", []byte{8, 0, 2, 4, 0x05, 0xb4}, 536, -1, false},
		{"cut short", []byte{2, 4, 0x05}, 536, -1, false},
		{"MSS 0", []byte{2, 4, 0, 0, 1, 3, 3, 2}, 536, 2, false},
		{"SACK permitted of a wrong length", []byte{4, 3, 0}, 536, -1, false},
	} {
		if mss, ws, sack := synOptions(c.opts); mss != c.mss || ws != c.ws || sack != c.sack {
			t.Errorf("%s: MSS %d, window scale %d, SACK %v; want %d, %d, %v", c.name, mss, ws, sack, c.mss, c.ws, c.sack)
		}
	}
	// And a splice never sends with less than minMSS.
	s := newTestSplice(1000)
	defer s.mu.Unlock()
	s.u.mtu = 1500
	s.synOptsLocked([]byte{2, 4, 0, 1})
	if s.mss != minMSS {
		t.Errorf("MSS 1 in the SYN: the splice sends %d-byte segments, want %d", s.mss, minMSS)
	}
}

// Whatever a container sends does not fail the uplink: read as a SYN's
// options and a header's fields, as a segment of no flow (the stray
// reset, which only goes to the link's queue), and as a segment of a
// splice in each state (with no host socket: whatever would use it ends
// the splice). No socket is opened.
func FuzzContainerSegment(f *testing.F) {
	f.Add([]byte{2, 4, 0x05, 0xb4, 1, 3, 3, 7})
	seg := make([]byte, 24)
	for i := range 4 { // a SYN-ACK to a splice in each state
		putTCPHeader(seg, uint16(i)<<8, 0, 1, 2, conntrack.TCPSyn|conntrack.TCPAck, 502, 24)
		copy(seg[20:], []byte{2, 4, 0x05, 0xb4})
		f.Add(append([]byte(nil), seg...))
	}
	from, to := netip.MustParseAddrPort("192.0.2.7:80"), netip.MustParseAddrPort("10.0.2.100:40000")
	f.Fuzz(func(t *testing.T, b []byte) {
		synOptions(b)
		if len(b) < tcpMinSize {
			return
		}
		h := tcpSeg(b)
		_, _, _, _, _, _ = h.srcPort(), h.dstPort(), h.seq(), h.ack(), h.flags(), h.window()
		h.options()
		h.payload()
		p, err := newPoller()
		if err != nil {
			t.Skip(err)
		}
		defer p.close()
		u := testUplink()
		u.poll, u.mtu, u.splices = p, 1500, map[conntrack.Tuple]*splice{}
		s := u.spliceOf(-1, from, to, false)
		s.state = []spliceState{spliceSynSent, spliceConnecting, spliceSynRcvd, spliceOpen}[b[0]%4]
		s.out = s.state == spliceConnecting || s.state == spliceSynRcvd
		s.mss, s.rcvNxt, s.rcvAcked, s.sndWnd, s.cwnd = 1000, 1, 1, 1<<16, 10000
		u.splices[s.key] = s
		pkt := make([]byte, 20+len(b))
		ipv4Header(pkt, len(pkt), conntrack.ProtoTCP, defaultTTL, to.Addr(), from.Addr())
		copy(pkt[20:], b)
		binary.BigEndian.PutUint16(pkt[20:], to.Port()) // the splice's
		binary.BigEndian.PutUint16(pkt[22:], from.Port())
		u.toSplice(pkt)
		s.abort(false, false, "the test ends") // its timers too
		pkt[21]++                              // another port: no flow's
		var dp conntrack.Packet
		if dp.Decode(pkt) == nil && dp.Kind == conntrack.KindFlow {
			u.resetStray(&dp) // as Send would, but for a SYN, which would connect
		}
		for len(u.ln.q) > 0 {
			fr := <-u.ln.q
			u.ln.putBuf(fr.buf)
		}
	})
}

// A reset from the container ends the splice only at the next byte
// expected (RFC 5961 3.2, as Linux): one elsewhere in the window draws a
// challenge ACK of where the splice is, at most one each oowLimit, whose
// answer an exact reset would be; one outside the window, nothing.
func TestSpliceResetExact(t *testing.T) {
	state := func(s *splice) spliceState {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.state
	}
	s, h := receivingSplice(t) // rcvNxt 5000
	for _, seq := range []uint32{5000 + 1000, 5000 + 2000} {
		putTCPHeader(h, 0, 0, seq, 0, conntrack.TCPRst, 0, tcpMinSize)
		s.input(h, nil)
	}
	if st := state(s); st == spliceDone {
		t.Fatal("a reset at 6000, rcvNxt 5000, ended the splice")
	}
	select {
	case f := <-s.u.ln.q:
		if seg := tcpSeg((*f.buf)[nat.Headroom+20 : f.n]); seg.flags() != conntrack.TCPAck || seg.ack() != 5000 {
			t.Fatalf("answer to an inexact reset: flags %#x ack %d; want an ACK of 5000", seg.flags(), seg.ack())
		}
	case <-time.After(time.Second):
		t.Fatal("no challenge ACK for a reset in the window")
	}
	if len(s.u.ln.q) != 0 {
		t.Errorf("%d more answers to the second inexact reset within oowLimit, want none", len(s.u.ln.q))
	}
	putTCPHeader(h, 0, 0, 5000-1, 0, conntrack.TCPRst, 0, tcpMinSize) // behind: outside the window
	s.input(h, nil)
	if st := state(s); st == spliceDone || len(s.u.ln.q) != 0 {
		t.Fatalf("a reset outside the window: state %d, %d answers; want nothing", st, len(s.u.ln.q))
	}
	putTCPHeader(h, 0, 0, 5000, 0, conntrack.TCPRst, 0, tcpMinSize)
	s.input(h, nil)
	if st := state(s); st != spliceDone {
		t.Fatalf("a reset at rcvNxt left the splice in state %d", st)
	}
}

// RFC 6582's recover follows the acknowledgements while no recovery is
// under way: compared modulo 2^32, a recover left at the ISS would be
// ahead of every acknowledgement once 2 GiB went, and three duplicate
// ACKs would no longer retransmit at once.
func TestSpliceRecoverFollows(t *testing.T) {
	const mss, wnd = 1000, 0xffff
	s := newTestSplice(mss)
	defer s.mu.Unlock()
	defer s.stopLocked()
	s.iss = 1000
	s.establishLocked()
	s.sndWnd, s.ssthresh = wnd, 1<<30
	for range 2049 { // 2^31 + 1 MiB, a MiB at a time, nothing lost
		s.sndNxt, s.sndMax = s.sndUna+1<<20, s.sndUna+1<<20
		s.ackLocked0(s.sndUna+1<<20, wnd, false, false)
	}
	s.sndNxt, s.sndMax = s.sndUna+20*mss, s.sndUna+20*mss
	una := s.sndUna
	for range 3 {
		s.ackLocked0(una, wnd, true, false)
	}
	if !s.rewind {
		t.Fatalf("3 duplicate ACKs after %d bytes: no fast retransmission (recover %d, una %d)", una-s.iss, s.recover, una)
	}
}

// The inbound SYN goes without the splice's lock, and so reads nothing
// the container's SYN-ACK writes under it (the MSS): a SYN sent again by
// the timer as the SYN-ACK comes is no data race (go test -race).
func TestSpliceSynUnlocked(t *testing.T) {
	u := testUplink()
	u.mtu = 1500
	var err error
	if u.poll, err = newPoller(); err != nil {
		t.Fatal(err)
	}
	defer u.poll.close()
	s := u.spliceOf(-1, netip.MustParseAddrPort("192.0.2.1:40000"), netip.MustParseAddrPort("10.0.2.100:80"), true)
	s.state = spliceSynSent
	h := make(tcpSeg, 24)
	putTCPHeader(h, 0, 0, 7000, s.iss+1, conntrack.TCPSyn|conntrack.TCPAck, 0xffff, 24)
	copy(h[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	done := make(chan struct{})
	go func() { s.sendSyn(); close(done) }()
	s.input(h, nil)
	<-done
	s.abort(false, false, "the test is done")
}

// hostPeer gives the splice s a fresh host socket, and returns the fd of
// its other end, from which a test reads what the splice wrote.
func hostPeer(t *testing.T, s *splice) int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	s.mu.Lock()
	unix.Close(s.fd)
	s.fd = fds[0]
	s.mu.Unlock()
	return fds[1]
}

// Segments from the container that come out of order are kept until the
// bytes before them come, then go on to the host socket with them, in
// order, a FIN among them too, acknowledged at once; meanwhile each draws
// a duplicate ACK. (Discarded, a sender without SACK, told by the
// duplicates that they arrived, finds each again only by a timeout, and
// an upload through a lossy link stalls.)
func TestSpliceOutOfOrderKept(t *testing.T) {
	s, h := receivingSplice(t)
	peer := hostPeer(t, s)
	s.mu.Lock()
	s.sackOK = true // the container's SYN permitted SACK
	s.mu.Unlock()
	var sack []uint32 // the SACK blocks of the last ACK
	ackOf := func(what string) uint32 {
		t.Helper()
		select {
		case f := <-s.u.ln.q:
			seg := tcpSeg((*f.buf)[nat.Headroom+20 : f.n])
			sack = sackBlocks(seg.options())
			return seg.ack()
		case <-time.After(time.Second):
			t.Fatalf("%s: no ACK", what)
			return 0
		}
	}
	host := func() string {
		b := make([]byte, 64)
		n, _ := unix.Read(peer, b)
		return string(b[:max(n, 0)])
	}
	seg := func(seq uint32, data string, fin bool) {
		flags := uint8(conntrack.TCPAck | conntrack.TCPPsh)
		if fin {
			flags |= conntrack.TCPFin
		}
		putTCPHeader(h, 0, 0, seq, 1000, flags, 0xffff, tcpMinSize)
		s.input(h, []byte(data))
	}
	seg(5004, "bbbb", false) // 5000-5003 lost
	if a := ackOf("a segment after a hole"); a != 5000 || fmt.Sprint(sack) != "[5004 5008]" {
		t.Fatalf("ACK %d SACK %v after a hole, want a duplicate of 5000 with SACK [5004 5008]", a, sack)
	}
	seg(5008, "cccc", true)
	if a := ackOf("a FIN after a hole"); a != 5000 || fmt.Sprint(sack) != "[5004 5013]" {
		t.Fatalf("ACK %d SACK %v, want a duplicate of 5000 with SACK [5004 5013] (the FIN counts)", a, sack)
	}
	seg(5004, "bbbb", false) // a duplicate of one kept
	ackOf("a duplicate")
	if got := host(); got != "" {
		t.Fatalf("the host socket got %q before the hole was filled", got)
	}
	seg(5000, "aaaa", false) // the fast retransmission
	if a := ackOf("the hole filled"); a != 5013 || sack != nil {
		t.Fatalf("ACK %d SACK %v once the hole was filled, want 5013 (12 bytes and the FIN), no SACK", a, sack)
	}
	if got := host(); got != "aaaabbbbcccc" {
		t.Fatalf("the host socket got %q, want aaaabbbbcccc", got)
	}
	if n, err := unix.Read(peer, make([]byte, 8)); n != 0 || err != nil {
		t.Errorf("after the stream: read %d, %v; want the end of stream (the kept FIN)", n, err)
	}
	s.mu.Lock()
	kept := len(s.ooo)
	s.mu.Unlock()
	if kept != 0 {
		t.Errorf("%d segments still kept", kept)
	}
}

// What a splice keeps out of order is bounded in segments as well as in
// bytes, and kept in order at a logarithmic cost: zero-length FINs (which
// hold no bytes) or one-byte segments at distinct places in the window,
// as a broken or hostile container may send, held megabytes and took
// seconds of the gateway's goroutine in a quadratic insertion.
func TestSpliceOutOfOrderBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		desc bool
		data []byte
	}{
		{"FINs ascending", 1 << 16, false, nil},
		{"1-byte segments descending", 1 << 15, true, []byte{'x'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, h := receivingSplice(t)
			flags := uint8(conntrack.TCPAck)
			if tc.data == nil {
				flags |= conntrack.TCPFin
			}
			for i := range tc.n {
				off := 1 + 2*i // holes between: nothing joins
				if tc.desc {
					off = 1 + 2*(tc.n-1-i)
				}
				putTCPHeader(h, 0, 0, 5000+uint32(off), 1000, flags, 0xffff, tcpMinSize)
				s.input(h, tc.data)
				for len(s.u.ln.q) > 0 { // the duplicate ACKs
					<-s.u.ln.q
				}
			}
			s.mu.Lock()
			kept, counted := len(s.ooo), s.oooBytes
			s.mu.Unlock()
			if kept > oooMaxSegs || counted > spliceWnd {
				t.Errorf("%d segments kept (%d bytes); want at most %d segments and %d bytes", kept, counted, oooMaxSegs, spliceWnd)
			}
		})
	}
}

// What the splices of an uplink hold, for host sockets that do not read
// and out of order, is bounded in all (Config.MaxBuffered), not only per
// splice: four connections whose peers read nothing held over 4 MB
// against a bound of 1 MiB, a thousand would hold a gigabyte. What is not
// kept is counted, and the count goes back to zero as the splices end.
func TestSpliceBufferedBounded(t *testing.T) {
	const limit, conns, segs, mss = 1 << 20, 4, 1200, 1000
	u := testUplink()
	u.cfg.MaxBuffered = limit
	u.ln = newLink(64)
	var err error
	if u.poll, err = newPoller(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.poll.close)
	var ss []*splice
	for range conns {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[1]) }) // the peer, which reads nothing
		s := &splice{u: u, fd: -1, mss: mss, state: spliceOpen, rto: spliceMinRTO,
			from: netip.MustParseAddrPort("192.0.2.1:40000"), to: netip.MustParseAddrPort("10.0.2.100:80")}
		openOn(t, s, fds[0])
		s.rcvNxt, s.rcvAcked = 5000, 5000
		ss = append(ss, s)
	}
	h := make(tcpSeg, tcpMinSize)
	payload := make([]byte, mss)
	held := func() (n int) {
		for _, s := range ss {
			s.mu.Lock()
			n += len(s.over) + s.oooBytes
			s.mu.Unlock()
		}
		return n
	}
	for i := range segs {
		for _, s := range ss {
			putTCPHeader(h, 0, 0, 5000+uint32(i*mss), 1000, conntrack.TCPAck, 0xffff, tcpMinSize)
			s.input(h, payload)
			for len(u.ln.q) > 0 { // the ACKs
				<-u.ln.q
			}
		}
	}
	if n := held(); n > limit || int64(n) != u.held.Load() {
		t.Errorf("the splices hold %d bytes (the uplink counts %d); want at most %d", n, u.held.Load(), limit)
	}
	if u.stats.DropBuffered.Load() == 0 {
		t.Error("nothing counted in drop_buffered")
	}
	for _, s := range ss {
		s.abort(false, false, "the test is done")
	}
	if n := u.held.Load(); n != 0 {
		t.Errorf("the uplink counts %d bytes held once every splice ended, want 0", n)
	}
}

// sackBlocks returns the edges of the SACK option in TCP options o, nil
// for none.
func sackBlocks(o []byte) []uint32 {
	for len(o) > 0 {
		if o[0] == 0 {
			return nil
		}
		if o[0] == 1 {
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return nil
		}
		if o[0] == 5 {
			var e []uint32
			for b := o[2:o[1]]; len(b) >= 4; b = b[4:] {
				e = append(e, binary.BigEndian.Uint32(b))
			}
			return e
		}
		o = o[o[1]:]
	}
	return nil
}

// The SACK blocks name what is kept beyond the ACK: the block of the
// segment kept last first (RFC 2018), then the others from the highest
// down, four at most; nothing when SACK was not permitted.
func TestSpliceSACKBlocks(t *testing.T) {
	s := newTestSplice(1000)
	defer s.mu.Unlock()
	s.rcvNxt = 5000
	for _, seq := range []uint32{5090, 5010, 5070, 5050, 5030, 5035} { // 5035-5044 joins 5030's
		s.queueOOOLocked(seq, make([]byte, 10), false)
	}
	var b [sackOptMax]byte
	if n := s.sackLocked(b[:], 5000); n != 0 {
		t.Errorf("SACK not permitted: %d bytes of option", n)
	}
	s.sackOK = true
	n := s.sackLocked(b[:], 5000)
	if got := fmt.Sprint(sackBlocks(b[:n])); got != "[5030 5045 5090 5100 5070 5080 5050 5060]" {
		t.Errorf("SACK blocks %s, want the last kept's (5030-5045) first, then the highest three", got)
	}
	if b[0] != 1 || b[1] != 1 || n != 4+4*8 {
		t.Errorf("option % x: want NOP NOP SACK, four blocks", b[:n])
	}
	// An ACK that covers some of it: blocks start above it.
	n = s.sackLocked(b[:], 5055)
	if got := fmt.Sprint(sackBlocks(b[:n])); got != "[5090 5100 5070 5080 5055 5060]" {
		t.Errorf("SACK blocks above 5055: %s", got)
	}
}

// The SYN offers SACK; the SYN-ACK to a container's SYN permits it only
// when that SYN did.
func TestSynOffersSACK(t *testing.T) {
	for _, out := range []bool{false, true} {
		for _, permitted := range []bool{false, true} {
			s := newTestSplice(1000)
			s.u.ln, s.u.mtu = newLink(4), 1500
			s.out, s.sackOK = out, permitted
			s.state = spliceSynRcvd
			s.mu.Unlock()
			s.sendSyn()
			f := <-s.u.ln.q
			_, _, sack := synOptions(tcpSeg((*f.buf)[nat.Headroom+20 : f.n]).options())
			if want := !out || permitted; sack != want {
				t.Errorf("outbound %v, the container permitting SACK %v: SACK permitted %v, want %v", out, permitted, sack, want)
			}
		}
	}
}

// sackInput returns a receiving splice that permits SACK (rcvNxt 5000),
// a function feeding it a segment of n bytes at seq, and one returning
// the SACK blocks of the ACK it answers with.
func sackInput(t *testing.T) (func(seq uint32, n int), func() string) {
	s, h := receivingSplice(t)
	hostPeer(t, s)
	s.mu.Lock()
	s.sackOK = true
	s.mu.Unlock()
	seg := func(seq uint32, n int) {
		putTCPHeader(h, 0, 0, seq, 1000, conntrack.TCPAck|conntrack.TCPPsh, 0xffff, tcpMinSize)
		s.input(h, []byte(strings.Repeat("x", n)))
	}
	sack := func() string {
		t.Helper()
		select {
		case f := <-s.u.ln.q:
			return fmt.Sprint(sackBlocks(tcpSeg((*f.buf)[nat.Headroom+20 : f.n]).options()))
		case <-time.After(time.Second):
			t.Fatal("no ACK")
			return ""
		}
	}
	return seg, sack
}

// Kept segments that hold one another, or overlap, make one block: the
// run of what is kept (a retransmission cut otherwise than the first
// sending makes them). And the block of a duplicate of a kept segment
// goes first, as RFC 2018 (4) says the block of the segment that drew the
// ACK must.
func TestSpliceSACKRuns(t *testing.T) {
	seg, sack := sackInput(t)
	seg(5010, 90) // 5010-5099
	sack()
	seg(5030, 10) // within it
	sack()
	seg(5090, 20) // over its end
	if got := sack(); got != "[5010 5110]" {
		t.Errorf("SACK %s, want [5010 5110]: 5010-5109 are all kept", got)
	}

	seg, sack = sackInput(t)
	seg(5004, 4) // 5000-5003 lost
	sack()
	seg(5012, 4) // 5008-5011 lost
	sack()
	seg(5004, 4) // a duplicate
	if got := sack(); !strings.HasPrefix(got, "[5004 5008") {
		t.Errorf("SACK %s, want the duplicate's block, 5004-5008, first", got)
	}
}

// After a loss, the splice sends again only what the container's SACK
// blocks do not say it holds (RFC 2018, 6675): each hole, as far as the
// next block, and what it holds is not counted in flight, so the second
// hole goes in the same turn. Going back N, it sent everything again
// from the first hole, as much as the halved window took.
func TestSpliceSACKRetransmitsHoles(t *testing.T) {
	const una = 1000
	s := sackingSplice(t, 8000, 0xffff)
	s.pump()
	if got := fmt.Sprint(framesSent(s)); got != "[1000+8000]" {
		t.Fatalf("sent %s, want the 8000 bytes", got)
	}
	// [1000, 2000) and [5000, 6000) lost: three duplicate ACKs, each
	// naming the rest, and each with a smaller window (the container
	// holds what came out of order): duplicates all the same, for they
	// name more than the splice knew the container held (RFC 6675).
	for i := range uint32(3) {
		s.input(containerAck(una, uint16(0xffff-1000*i), 6000, 9000-1000*(2-i), 2000, 5000), nil)
	}
	s.pump()
	if got := fmt.Sprint(framesSent(s)); got != "[1000+1000 5000+1000]" {
		t.Errorf("after the third duplicate ACK, sent %s; want the two holes alone, [1000+1000 5000+1000]", got)
	}
}

// The container's SACK blocks are kept as ranges in order, merged when
// they touch or overlap, bounded in number; what sndUna passed, and
// blocks outside what was sent, are not kept.
func TestSpliceSACKScoreboard(t *testing.T) {
	s := newTestSplice(1000)
	defer s.mu.Unlock()
	s.sackOK = true
	s.sndUna, s.sndMax = 1000, 100000
	opt := func(blocks ...uint32) []byte {
		o := []byte{1, 1, 5, byte(2 + 4*len(blocks))}
		for _, b := range blocks {
			o = binary.BigEndian.AppendUint32(o, b)
		}
		return o
	}
	s.scoreLocked(opt(5000, 6000, 2000, 3000))
	s.scoreLocked(opt(3000, 4000))            // touches [2000, 3000)
	s.scoreLocked(opt(5500, 7000, 500, 1500)) // overlaps; below sndUna
	s.scoreLocked(opt(99000, 101000))         // past what was sent
	if got := fmt.Sprint(s.sacked); got != "[{2000 4000} {5000 7000}]" {
		t.Fatalf("sacked %s, want [{2000 4000} {5000 7000}]", got)
	}
	s.sndUna = 3000 // acknowledged into the first range
	s.trimSackedLocked()
	if got := fmt.Sprint(s.sacked); got != "[{3000 4000} {5000 7000}]" {
		t.Fatalf("after sndUna moved to 3000: sacked %s", got)
	}
	for i := range 40 {
		s.scoreLocked(opt(uint32(10000+2000*i), uint32(10000+2000*i+1000)))
	}
	if len(s.sacked) != sackedMax || s.sacked[0] != (seqRange{3000, 4000}) {
		t.Fatalf("%d ranges (first %v), want %d, the lowest kept", len(s.sacked), s.sacked[0], sackedMax)
	}
}

// A frame carries a quarter of the congestion window at most (two
// segments at least): a window sent in one GSO frame, lost, leaves no
// frame after it to draw a duplicate ACK or a SACK block, and only the
// retransmission timer finds the loss.
func TestSpliceFramesAQuarterOfTheWindow(t *testing.T) {
	s := sendingSplice(t, strings.Repeat("x", 9000), 64)
	s.pump()
	var sizes []int
	for len(s.u.ln.q) > 0 {
		f := <-s.u.ln.q
		sizes = append(sizes, len(tcpSeg((*f.buf)[nat.Headroom+20:f.n]).payload()))
	}
	if got := fmt.Sprint(sizes); got != "[2000 2000 2000 2000 1000]" {
		t.Errorf("with a window of 10000 bytes, frames of %s; want [2000 2000 2000 2000 1000]", got)
	}
}

// containerAck is a pure ACK from the container (seq 7000, sendingSplice's
// rcvNxt in these tests) of ack, with window wnd and the SACK blocks
// given as start, end pairs.
func containerAck(ack uint32, wnd uint16, blocks ...uint32) tcpSeg {
	o := []byte{1, 1}
	if len(blocks) > 0 {
		o = append(o, 5, byte(2+4*len(blocks)))
		for _, b := range blocks {
			o = binary.BigEndian.AppendUint32(o, b)
		}
	}
	h := make(tcpSeg, tcpMinSize+len(o))
	putTCPHeader(h, 0, 0, 7000, ack, conntrack.TCPAck, wnd, len(h))
	copy(h[tcpMinSize:], o)
	return h
}

// framesSent is what the splice sent since last asked, as seq+len.
func framesSent(s *splice) (segs []string) {
	for {
		select {
		case f := <-s.u.ln.q:
			seg := tcpSeg((*f.buf)[nat.Headroom+20 : f.n])
			segs = append(segs, fmt.Sprintf("%d+%d", seg.seq(), len(seg.payload())))
		default:
			return segs
		}
	}
}

// After a retransmission timeout the scoreboard is cleared, so the first
// ACK that names what the container holds "names more": it is taken for a
// duplicate, and the SACKed bytes pass DupThresh at once. A fast recovery
// then starts inside the timeout's recovery and sets cwnd to half of what
// was in flight, undoing the timeout's one segment. RFC 6582 (3.2, step
// 6) and Linux (tcp_enter_loss sets high_seq; no fast recovery from
// TCP_CA_Loss) record recover = the highest sequence sent at a timeout.
func TestSpliceNoFastRecoveryAfterTimeout(t *testing.T) {
	s := sackingSplice(t, 20000, 0xffff)
	s.pump()
	framesSent(s)
	fire(s) // the timeout: cwnd one segment, the first goes again
	if got := fmt.Sprint(framesSent(s)); got != "[1000+1000]" {
		t.Fatalf("after the timeout, sent %s, want [1000+1000]", got)
	}
	// The container's ACK for the originals still on their way: it holds
	// all but the first 4000 bytes, and says so.
	s.input(containerAck(1000, 0xffff, 5000, 21000), nil)
	s.mu.Lock()
	cwnd, fast := s.cwnd, s.u.stats.InboundFastRetransmits.Load()
	s.mu.Unlock()
	if fast != 0 || cwnd > 2*1000 {
		t.Errorf("after a timeout, one ACK with SACK blocks: %d fast retransmissions, cwnd %d; want none, cwnd still about one segment (1000)", fast, cwnd)
	}
}

// A SACK block whose start lies past sndMax and whose end wraps round to
// at or below sndMax passes scoreLocked's three checks (start after
// sndUna, end after start, end not after sndMax) though it names no byte
// that was sent. Kept behind a real block, it is subtracted from the pipe
// whole (its end "is" below sndNxt): pipe underflows, and int32(cwnd-pipe)
// wraps to a huge positive number, so the congestion window no longer
// bounds what is sent.
func TestSpliceSACKBlockWrapsPastSndMax(t *testing.T) {
	s := newTestSplice(1000)
	defer s.mu.Unlock()
	s.peekOff, s.sackOK = true, true
	s.sndUna, s.sndNxt, s.sndMax = 1000, 11000, 11000
	s.sndWnd, s.cwnd = 1<<20, 9000
	opt := func(blocks ...uint32) []byte {
		o := []byte{1, 1, 5, byte(2 + 4*len(blocks))}
		for _, b := range blocks {
			o = binary.BigEndian.AppendUint32(o, b)
		}
		return o
	}
	s.scoreLocked(opt(3000, 4000))
	if can := s.canLocked(); can != 0 {
		t.Fatalf("9000 bytes in flight, cwnd 9000: can %d, want 0", can)
	}
	start := s.sndMax + 100
	s.scoreLocked(opt(start, start+1<<31-50))
	s.trimSackedLocked()
	if got := fmt.Sprint(s.sacked); got != "[{3000 4000}]" {
		t.Errorf("sacked %s, want [{3000 4000}]: a block past sndMax names nothing sent", got)
	}
	if can := s.canLocked(); can != 0 {
		t.Errorf("after the bogus block, can %d; want 0 (the congestion window is full)", can)
	}
}

// The duplicate ACK that starts a recovery is not a window update too:
// ackLocked0 returns at dupAckLocked's true before it takes the window,
// which RFC 6675's definition now lets differ ("whatever its window").
// Here the container's window opened (its application read) as it
// SACKed the segments after a loss; the splice keeps the old, smaller
// one, and sends no new data after the hole.
func TestSpliceRecoveryTakesTheWindow(t *testing.T) {
	s := sackingSplice(t, 20000, 8000)
	s.pump()
	if got := fmt.Sprint(framesSent(s)); !strings.HasPrefix(got, "[1000+") {
		t.Fatalf("sent %s", got)
	}
	s.input(containerAck(1000, 0xffff, 2000, 9000), nil) // [1000, 2000) lost
	s.mu.Lock()
	wnd, rewind := s.sndWnd, s.rewind
	s.mu.Unlock()
	if !rewind {
		t.Fatal("no recovery")
	}
	if wnd != 0xffff {
		t.Errorf("sndWnd %d after the ACK that started the recovery, want its window, %d", wnd, 0xffff)
	}
}

// A frame is cut into segments of mss by GSO; a frame that is not a
// multiple of mss ends in a short segment. The quarter-of-cwnd cap is
// not rounded to mss, so while it applies (cwnd below 4 x 64 KiB) every
// frame carries a runt: with cwnd 8 mss + 4, frames of 2 mss + 1 bytes,
// three segments each (the last of one byte), 50% more packets than
// needed. Linux's tcp_tso_autosize sizes TSO frames in whole segments.
func TestSpliceFramesWholeSegments(t *testing.T) {
	const mss = 1000
	s := sendingSplice(t, strings.Repeat("x", 8*mss), 64)
	s.mu.Lock()
	s.cwnd = 8*mss + 4
	s.mu.Unlock()
	s.pump()
	for _, seg := range framesSent(s) {
		var seq, n int
		fmt.Sscanf(seg, "%d+%d", &seq, &n)
		if n%mss != 0 {
			t.Errorf("a frame of %d bytes (%s): not whole segments of %d", n, seg, mss)
		}
	}
}

// Linux reads SACK blocks only on a connection that agreed to SACK
// (tcp_parse_options: opt_rx->sack_ok); a container whose SYN did not
// permit it gets no scoreboard kept for it.
func TestSpliceSACKOnlyWhenPermitted(t *testing.T) {
	s := newTestSplice(1000)
	defer s.mu.Unlock()
	s.sndUna, s.sndNxt, s.sndMax = 1000, 11000, 11000
	s.sackOK = false
	s.scoreLocked([]byte{1, 1, 5, 10, 0, 0, 0x0b, 0xb8, 0, 0, 0x0f, 0xa0}) // [3000, 4000)
	if len(s.sacked) != 0 {
		t.Errorf("sacked %v without SACK permitted", s.sacked)
	}
}

// A reset to the container after a retransmission timeout, which moved
// sndNxt back to what is unacknowledged, is sent at the highest sequence
// number sent (Linux's snd_nxt, which never moves back): the container
// may hold all that was sent, its ACK lost, and takes a reset below its
// next byte for an old one and drops it; one inside its window at
// least draws a challenge ACK, which the done splice answers.
func TestSpliceResetAfterTimeoutAtSndMax(t *testing.T) {
	s := sackingSplice(t, 5000, 0xffff)
	s.pump()
	framesSent(s)
	fire(s) // the timeout: the first segment goes again
	if got := fmt.Sprint(framesSent(s)); got != "[1000+1000]" {
		t.Fatalf("after the timeout, sent %s, want [1000+1000]", got)
	}
	s.abort(true, true, "the client reset")
	f := <-s.u.ln.q
	seg := tcpSeg((*f.buf)[nat.Headroom+20 : f.n])
	if seg.flags()&conntrack.TCPRst == 0 || seg.seq() != 6000 {
		t.Errorf("sent flags %#x at %d; want a reset at 6000, past all that was sent", seg.flags(), seg.seq())
	}
}

// A splice whose SYN draws an ACK of something else (a challenge ACK from
// a connection the container still holds on the tuple: the FIN_WAIT2 our
// client's last connection left, its last FIN lost) resets that
// connection at the ACK's acknowledgement, as RFC 9293 says of SYN-SENT,
// and sends its SYN again at once, the first time only; a reset with a
// wrong acknowledgement is dropped. (It ignored them: the container kept
// its stale connection, and our SYN drew challenge ACKs until it
// died.)
func TestSpliceSynSentStaleAck(t *testing.T) {
	u := testUplink()
	u.mtu = 1500
	s := u.spliceOf(-1, netip.MustParseAddrPort("192.0.2.1:40000"), netip.MustParseAddrPort("10.0.2.100:80"), true)
	s.state = spliceSynSent
	frames := func() (out []string) {
		for len(u.ln.q) > 0 {
			f := <-u.ln.q
			seg := tcpSeg((*f.buf)[nat.Headroom+20 : f.n])
			out = append(out, fmt.Sprintf("%#x@%d", seg.flags(), seg.seq()))
		}
		return out
	}
	stale := func(flags uint8) {
		h := make(tcpSeg, 20)
		putTCPHeader(h, 0, 0, 7000, 555, flags, 0xffff, 20)
		s.input(h, nil)
	}
	stale(conntrack.TCPAck)
	want := fmt.Sprint([]string{fmt.Sprintf("%#x@555", conntrack.TCPRst), fmt.Sprintf("%#x@%d", conntrack.TCPSyn, s.iss)})
	if got := fmt.Sprint(frames()); got != want {
		t.Errorf("after a stale ACK in SYN-SENT, sent %s; want %s: a reset at its acknowledgement, our SYN again", got, want)
	}
	stale(conntrack.TCPAck)
	if got, want := fmt.Sprint(frames()), fmt.Sprint([]string{fmt.Sprintf("%#x@555", conntrack.TCPRst)}); got != want {
		t.Errorf("after a second stale ACK, sent %s; want %s: the reset alone", got, want)
	}
	stale(conntrack.TCPRst | conntrack.TCPAck)
	if got := frames(); len(got) != 0 {
		t.Errorf("after a reset of something else, sent %v; want nothing", got)
	}
	s.abort(false, false, "the test is done")
}

// While the container's window is closed, the persist timer probes it
// every rto, however often the client's bytes come: they cannot go, and
// must not push the probe back. (Linux arms ICSK_TIME_PROBE0 only when no
// timer is pending, tcp_check_probe_timer; RFC 9293 3.8.6.1 / RFC 1122
// 4.2.2.17: the sender must probe a zero window.) A client that writes a
// little every 100 ms (an interactive session), with the container's
// window update lost, kept the flow stalled as long as it wrote.
func TestSplicePersistNotPushedBackByClient(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	unix.Write(fds[1], []byte("a"))
	s := spliceOn(t, fds[0], 64)
	s.mu.Lock()
	s.rcvNxt, s.sndWnd = 7000, 0 // the container's window is closed
	s.mu.Unlock()
	s.pump() // nothing can go: the persist timer is armed (rto 200 ms)
	probes := 0
	for range 12 { // 1.2 s: six times the first rto
		time.Sleep(100 * time.Millisecond)
		unix.Write(fds[1], []byte("b")) // the client types on
		s.pump()                        // as the poller's EPOLLIN does
		for len(s.u.ln.q) > 0 {
			f := <-s.u.ln.q
			seg := tcpSeg((*f.buf)[nat.Headroom+20 : f.n])
			if len(seg.payload()) != 0 {
				t.Fatalf("%d bytes sent into a closed window", len(seg.payload()))
			}
			if seg.seq() == 999 && seg.flags() == conntrack.TCPAck {
				probes++
			}
		}
	}
	if probes == 0 {
		t.Fatal("no window probe in 1.2 s with the container's window closed: each client write pushed the persist timer back")
	}
}

// A published port's handshake with a container that never answers ends
// within ConnectTimeout, as Config says ("bounds ... each handshake with a
// container, until it answers the SYN"): the client is reset then, and
// its place among the connections being opened (maxInFlightPerSource)
// freed. The deadline was only looked at when the SYN's doubling timer
// fired: at 1, 3, 7, 15, 31 s, so a 20 s ConnectTimeout ended at 31 s.
func TestSpliceSynDeadlineBounds(t *testing.T) {
	defer func(d time.Duration) { spliceSynRTO = d }(spliceSynRTO)
	spliceSynRTO = 100 * time.Millisecond // SYNs at 0, 100, 300, 700 ms
	u := testUplink()
	u.mtu = 1500
	u.cfg.ConnectTimeout = 350 * time.Millisecond
	s := u.spliceOf(-1, netip.MustParseAddrPort("192.0.2.1:40000"), netip.MustParseAddrPort("10.0.2.100:80"), true)
	s.state = spliceSynSent
	var mu sync.Mutex
	var ended time.Duration
	start := time.Now()
	done := make(chan struct{})
	s.start(func(ok bool) {
		mu.Lock()
		ended = time.Since(start)
		mu.Unlock()
		close(done)
	})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handshake never ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if ended > 350*time.Millisecond+100*time.Millisecond {
		t.Fatalf("a handshake with a silent container ended after %v, ConnectTimeout 350ms", ended.Round(time.Millisecond))
	}
}

// In congestion avoidance, cwnd grows only with ACKs that acknowledge new
// data (RFC 5681 3.1, eq. 3: "executed on every incoming ACK that
// acknowledges new data"; Linux's tcp_cong_avoid_ai adds nothing for 0
// bytes acked). The container's data segments, which acknowledge nothing
// new while ours are in flight, each added a byte to cwnd, which the
// splice took for a window that opened, and it sent a segment of one
// byte for each (silly window syndrome, RFC 9293 3.8.6.2.1).
func TestSpliceCwndNotGrownByNonAdvancingAcks(t *testing.T) {
	s := sendingSplice(t, string(make([]byte, 20000)), 64)
	s.mu.Lock()
	s.rcvNxt, s.rcvAcked = 7000, 7000
	s.cwnd, s.ssthresh = 4000, 4000 // congestion avoidance, cwnd-limited
	s.mu.Unlock()
	s.pump()
	framesSent(s)
	s.mu.Lock()
	cwnd0, una := s.cwnd, s.sndUna
	s.mu.Unlock()
	h := make(tcpSeg, tcpMinSize)
	for i := range 5 {
		// The container's bytes, each with the same acknowledgement.
		putTCPHeader(h, 0, 0, 7000+uint32(i), una, conntrack.TCPAck|conntrack.TCPPsh, 0xffff, tcpMinSize)
		s.input(h, []byte("x"))
		s.pump() // as the poller does after input's rearm
	}
	s.mu.Lock()
	cwnd := s.cwnd
	s.mu.Unlock()
	var tiny []string
	for _, f := range framesSent(s) {
		var seq, n int
		fmt.Sscanf(f, "%d+%d", &seq, &n)
		if n > 0 && n < 1000 {
			tiny = append(tiny, f)
		}
	}
	if cwnd != cwnd0 || len(tiny) > 0 {
		t.Fatalf("after 5 segments from the container acknowledging nothing new: cwnd %d, was %d; segments of less than the MSS sent: %v", cwnd, cwnd0, tiny)
	}
}

// A FIN that the container acknowledges after a retransmission timeout
// took the splice back before it (the acknowledgement of the originals
// was late) is not sent again: the end of stream was read already. It
// went again, an old FIN the container answered for nothing; without a
// peek offset, every later pump found nothing one byte past the end
// (errAtMark), and was asked for again. The host socket is a TCP
// connection over loopback: run it through .ci/test (unshare --net).
func TestSpliceFinAckedAfterRewind(t *testing.T) {
	for _, peek := range []bool{true, false} {
		t.Run(fmt.Sprintf("peek=%v", peek), func(t *testing.T) {
			s := spliceOn(t, endedHost(t, []byte(strings.Repeat("x", 3000))), 64)
			s.mu.Lock()
			s.peekOff, s.toEmpty = peek, true // the poller told of the end of stream
			s.rcvNxt = 7000                   // containerAck's
			s.mu.Unlock()
			s.pump()
			if got := fmt.Sprint(framesSent(s)); got != "[1000+2000 3000+1000 4000+0]" {
				t.Fatalf("sent %s, want the 3000 bytes and the FIN", got)
			}
			fire(s) // the timeout: back to 1000, one segment
			if got := fmt.Sprint(framesSent(s)); got != "[1000+1000]" {
				t.Fatalf("after the timeout, sent %s, want [1000+1000]", got)
			}
			s.input(containerAck(4001, 0xffff), nil) // the originals', FIN included
			s.pump()
			if got := framesSent(s); len(got) > 0 {
				t.Errorf("after the FIN was acknowledged, sent %v, want nothing", got)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.state != spliceOpen || !s.finAcked || !s.finSent || !s.hostEOF || s.blocked {
				t.Errorf("state %d, finAcked %v, finSent %v, hostEOF %v, blocked %v; want open, the FIN acknowledged and sent, the end read, nothing to repump", s.state, s.finAcked, s.finSent, s.hostEOF, s.blocked)
			}
		})
	}
}

// The retransmission timeout follows the round trip to the container
// (RFC 6298), as Linux's does: the smoothed round trip and four times its
// variation, spliceMinRTO at least. A container whose ACKs come 300 ms
// after the segments (a busy machine) draws one timeout at first, which
// backs the timeout off until a segment not sent again is acknowledged
// (Karn), and then none: not everything sent again every 200 ms, with
// the congestion window down to a segment each time, for nothing.
func TestSpliceRTOFollowsRoundTrip(t *testing.T) {
	const rtt = 300 * time.Millisecond
	s := spliceOn(t, endedHost(t, make([]byte, 100000)), 64)
	s.mu.Lock()
	s.rcvNxt = 7000 // containerAck's seq
	s.mu.Unlock()
	high := uint32(1000)
	for range 6 {
		s.pump()
		for _, seg := range framesSent(s) {
			var seq, n uint32
			fmt.Sscanf(seg, "%d+%d", &seq, &n)
			high = max(high, seq+n)
		}
		time.Sleep(rtt)
		s.input(containerAck(high, 0xffff), nil)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.u.stats.InboundRetransmits.Load(); n > 2 || s.srtt < rtt || s.srtt > 2*rtt || s.rto < s.srtt+spliceMinRTO {
		t.Errorf("ACKs %v after the segments, six times: %d timeouts, smoothed round trip %v, timeout %v; want at most 2, about %v, at least %v more", rtt, n, s.srtt, s.rto, rtt, spliceMinRTO)
	}
}

// Window probes back the persist timer off, but they are no retransmission
// timeout (Linux's probe backoff is apart from icsk_rto, and ends when the
// window opens). A splice whose last timeout had no round trip measured
// after it (backedOff) keeps, once the container's window opens again, the
// timeout the probes doubled, for the data that follows.
func TestSpliceProbesDoNotBackOffRTO(t *testing.T) {
	c, fd := loopbackHost(t)
	c.Write([]byte("a"))
	time.Sleep(10 * time.Millisecond)
	s := spliceOn(t, fd, 64)
	s.mu.Lock()
	s.rcvNxt = 7000
	s.mu.Unlock()
	s.pump()
	framesSent(s)
	fire(s) // a retransmission timeout: rto 400 ms, backed off
	framesSent(s)
	s.input(containerAck(1001, 0), nil) // the copy sent again is acknowledged; the window closes
	c.Write([]byte("b"))
	time.Sleep(10 * time.Millisecond)
	s.pump() // the persist timer
	for range 6 {
		fire(s) // window probes
	}
	framesSent(s)
	s.mu.Lock()
	if d := time.Until(s.timerAt); d < 10*spliceMinRTO {
		t.Errorf("after six window probes the next is due in %v: the probes do not back off", d)
	}
	s.mu.Unlock()
	s.input(containerAck(1001, 0xffff), nil) // the window opens
	s.pump()                                 // and "b" goes
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != spliceOpen || s.sndMax != 1002 {
		t.Fatalf("state %d, sndMax %d", s.state, s.sndMax)
	}
	if s.rto > 2*spliceMinRTO {
		t.Errorf("after six window probes and the window open again: rto %v (the new byte's timer due in %v), want at most %v (one retransmission timeout's backoff)", s.rto, time.Until(s.timerAt).Round(time.Millisecond), 2*spliceMinRTO)
	}
}
