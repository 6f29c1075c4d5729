package hostnet

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// testUplink is an uplink for a splice in a unit test, whose timers may
// fire before the test ends: frames wait in a link with no gateway, and
// the log says nothing. The splice's socket is -1, so a timer's pump only
// fails.
func testUplink() *Uplink {
	return &Uplink{ln: newLink(1500, 1024), log: slog.New(slog.DiscardHandler)}
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
	defer func(old int32) { peekOffs.Store(old) }(peekOffs.Load())
	peekOffs.Store(1)
	const mss = 1000
	s := newTestSplice(mss)
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
		s.ackLocked0(s.sndUna+2*mss, uint16(s.sndWnd>>s.sndShift), false)
	}
	if s.cwnd != 20*mss {
		t.Errorf("after ten segments acknowledged, cwnd %d, want %d", s.cwnd, 20*mss)
	}
	// An ACK of a huge stretch counts two segments at most.
	s.sndNxt, s.sndMax = s.sndUna+20*mss, s.sndUna+20*mss
	s.ackLocked0(s.sndUna+20*mss, 0xffff, false)
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
		s.ackLocked0(s.sndUna+mss, 0xffff, false)
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
			s.ackLocked0(ack, wnd, true)
		}
	}
	dups(una, 2)
	s.ackLocked0(una, wnd, false) // the container's bytes, with the same ACK
	dups(una, 2)
	if s.rewind {
		t.Fatal("a rewind after two duplicates in a row")
	}
	if !s.ackLocked0(una, wnd, true) || !s.rewind {
		t.Fatal("no rewind at the third duplicate")
	}
	if s.cwnd != 10*mss || s.ssthresh != 10*mss || s.recover != una+20*mss || u.stats.InboundFastRetransmits.Load() != 1 {
		t.Fatalf("after the third duplicate: cwnd %d, ssthresh %d, recover %d, counted %d", s.cwnd, s.ssthresh, s.recover, u.stats.InboundFastRetransmits.Load())
	}
	// The pump rewinds; the lost segment's copy fills the hole, and
	// copies of what the container holds beyond draw duplicates.
	s.rewind, s.sndNxt = false, una
	s.ackLocked0(una+12*mss, wnd, true)
	s.sndNxt = una + 14*mss
	dups(una+12*mss, 5)
	if s.rewind {
		t.Fatal("a second rewind before recover was acknowledged")
	}
	// Past recover, a new loss goes again at once.
	s.sndNxt, s.sndMax = una+30*mss, una+30*mss
	s.ackLocked0(una+21*mss, wnd, true)
	dups(una+21*mss, 3)
	if !s.rewind || u.stats.InboundFastRetransmits.Load() != 2 {
		t.Fatalf("a loss past recover: rewind %v, counted %d", s.rewind, u.stats.InboundFastRetransmits.Load())
	}
}

// A segment the full queue refused is taken back: sndNxt goes back to it
// (never below sndUna, which an acknowledgement of an earlier copy may
// have moved past it meanwhile, nor forward), the window halves, the
// acknowledgement it carried is due again, and the timer is to send it
// again soon, not after a retransmission timeout.
func TestSpliceRefused(t *testing.T) {
	const mss = 1000
	s := newTestSplice(mss)
	defer s.mu.Unlock()
	defer s.stopLocked()
	s.sndUna, s.sndNxt, s.sndMax = 10*mss, 14*mss, 14*mss
	s.cwnd = 20 * mss
	s.refusedLocked(12 * mss)
	if s.sndNxt != 12*mss || !s.reseek || !s.blocked || !s.ackDue || !s.requeue || s.cwnd != 10*mss {
		t.Fatalf("after a refusal: sndNxt %d, reseek %v, blocked %v, ackDue %v, requeue %v, cwnd %d", s.sndNxt, s.reseek, s.blocked, s.ackDue, s.requeue, s.cwnd)
	}
	s.sndUna, s.sndNxt = 13*mss, 13*mss // acknowledged past it
	s.refusedLocked(12 * mss)
	if s.sndNxt != 13*mss {
		t.Fatalf("a refusal behind sndUna took sndNxt to %d, want sndUna %d", s.sndNxt, s.sndUna)
	}
	s.sndNxt = 13 * mss
	s.refusedLocked(13*mss + 500)
	if s.sndNxt != 13*mss {
		t.Fatalf("a refusal past sndNxt moved it to %d", s.sndNxt)
	}
	if s.refused != 3 || s.u.stats.InboundRequeued.Load() != 3 {
		t.Fatalf("refused %d in a row, counted %d; want 3", s.refused, s.u.stats.InboundRequeued.Load())
	}
}

// A queue that stays full ends the flow: a SYN refused past the
// handshake's deadline, or any segment refused spliceRetries times in a
// row; they are not sent every millisecond for ever.
func TestSpliceRefusedForGood(t *testing.T) {
	for _, syn := range []bool{true, false} {
		s := newTestSplice(1000)
		var opened []bool
		s.onOpen = func(ok bool) { opened = append(opened, ok) }
		if syn {
			s.state = spliceSynSent
			s.deadline = time.Now().Add(-time.Millisecond)
		} else {
			s.refused = spliceRetries + 1
		}
		s.requeue = true
		s.mu.Unlock()
		s.onTimer()
		s.mu.Lock()
		if s.state != spliceDone {
			t.Errorf("SYN %v: the splice goes on", syn)
		}
		if syn && (len(opened) != 1 || opened[0]) {
			t.Errorf("the caller was told %v, want that it failed", opened)
		}
		s.mu.Unlock()
	}
}
