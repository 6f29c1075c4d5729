package hostnet

import (
	"encoding/binary"
	"errors"
	"hash/maphash"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// A splice carries a TCP connection between a container and a host
// socket: a client of a published port into the container (inbound: the
// splice sends the SYN), or a connection the container opens (outbound:
// the splice answers its SYN once the host socket connected). The host
// socket holds the other end's side, and the splice speaks TCP to the
// container with the segments it needs and no buffers of its own, as
// pasta does. In the following, the client is the host socket's peer, a
// published port's client or the destination of an outbound connection.
// Bytes from the client stay in the host socket until the container
// acknowledges them: the splice peeks
// them out (SO_PEEK_OFF keeps its place), sends them, and discards what
// was acknowledged; going back to the last acknowledged byte is the
// whole of retransmission. Bytes from the container are written to the
// host socket as they come and acknowledged once written; what the host
// socket cannot take at once waits in a buffer the splice's receive window
// bounds, and the window closes while it waits.
//
// A splice has no goroutine: the uplink's poller says when its host socket
// has something, the gateway's goroutine brings the container's segments,
// and timers (armed only while something is outstanding) the rest. Each
// sends what it can there and then (pump). Measured with bench/rootless
// against the gVisor stack's path, which both directions took before:
// see bench/README.md.
type splice struct {
	u    *Uplink
	from netip.AddrPort // the client as the container sees it
	to   netip.AddrPort // the container
	key  conntrack.Tuple
	f    *flow
	// peekOff says the host socket peeks from its peek offset
	// (SO_PEEK_OFF), set when it is made: else each peek skips the bytes
	// in flight.
	peekOff bool

	mu      sync.Mutex
	fd      int    // the host socket, the splice's own: used under mu, closed when done
	pollID  uint64 // its id in the poller
	state   spliceState
	pumping bool // a goroutine is in pump; again asks it for one more turn
	again   bool
	// blocked says the last pump stopped with bytes maybe left to send
	// (the window was full, or its turn over): an acknowledgement that
	// opens the window has the poller pump again.
	blocked bool
	// toEmpty says a pump reads the host socket until it is empty. Else
	// a short read ends the pump's reading: it took all the socket held,
	// and what comes after is news the poller brings (edge-triggered).
	// Not so once the poller told of the client's end of stream, an error
	// or urgent data: a read takes bytes up to any of them but not it,
	// and the news of it may have come already.
	toEmpty bool
	// Sequence space of the bytes to the container: iss is the SYN's,
	// sndUna the first byte not acknowledged, sndNxt the next to send,
	// sndMax the highest sent, discarded the first byte still in the
	// host socket.
	iss, sndUna, sndNxt, sndMax, discarded uint32
	sndWnd                                 uint32 // the container's window, in bytes
	cwnd, ssthresh                         uint32 // congestion window and slow-start threshold, in bytes (RFC 5681)
	sndShift                               uint8  // its window scale
	rcvShift                               uint8  // ours: 0 when the container does not scale
	mss                                    int    // largest segment to the container
	rcvNxt                                 uint32 // the next byte from the container
	rcvAcked                               uint32 // the last acknowledgement sent
	ackDue                                 bool   // rcvNxt is to be acknowledged: by the next segment, or the delayed-ACK timer
	ackNow                                 bool   // by the next segment, or at the end of the pump that looks for one (the handshake's)
	ackMust                                bool   // the acknowledgement due must go even if not new (sendAck's must): a window that opens
	synAgain                               bool   // our SYN went again at once, after the reset of a stale connection on the tuple (synSentLocked)
	dtimer                                 *time.Timer
	dtimerSet                              bool       // dtimer will fire for the bytes not acknowledged: not armed again for more
	finAt, finSent, finAcked, hostEOF      bool       // the stream's end is known; our FIN went (since the last rewind); it is acknowledged; the host socket's read side ended
	finSeq                                 uint32     // the sequence number of our FIN, once finAt
	finRcvd, shutWr                        bool       // the container's FIN came; the host socket's write side shut
	failed                                 bool       // a call took the host socket's error, and the abort comes: it reads 0 now, which is no FIN (pumpLocked)
	keepAlive                              bool       // the host socket keeps alive, to probe its peer for the container's probes (probedLocked)
	over                                   []byte     // bytes from the container the host socket has not taken yet
	ooo                                    []oooSeg   // segments from the container that came out of order, by seq
	oooBytes                               int        // the bytes in ooo
	oooLast                                uint32     // the seq of the last segment kept in ooo, whose block a SACK names first
	sackOK                                 bool       // the container's SYN (or SYN-ACK) permitted SACK
	sacked                                 []seqRange // what the container's SACK blocks say it holds past sndUna, in order, merged (at most sackedMax)
	flushing                               bool       // the poller watches the host socket for room for them
	rewind, wantWnd                        bool       // go back to the first byte not acknowledged; the window is closed with nothing in flight
	reseek                                 bool       // the peek offset must follow sndNxt, moved other than by a peek
	dupAcks                                int        // duplicate ACKs in a row (RFC 5681)
	recover                                uint32     // sndMax at the last fast retransmission: none again before it is acknowledged (RFC 6582); then one below sndUna
	requeue                                bool       // the timer is to send again what the queue to the gateway refused (localRetry)
	retrying                               bool       // the timer's retry of that is under way
	refused                                int        // the timer's retries the queue refused in a row
	oowAt                                  time.Time  // when a segment out of the window was last answered (oowLimit)
	refusedSince                           time.Time  // since when the queue refused every frame
	wake                                   func()     // wakeNow, made once
	awaitingRoom                           bool       // wake is in the link's list
	refusing                               bool       // segments are being refused: the window halved once for it
	retries                                int
	rto                                    time.Duration
	srtt, rttvar                           time.Duration // the round trip to the container, smoothed, and its variation (RFC 6298); 0 before the first
	rttEnd                                 uint32        // the end of the segment being timed for them,
	rttStart                               time.Time     // sent then; zero when none is (Karn: never one sent again)
	backedOff                              bool          // rto was doubled by a retransmission timeout, and stays so until a round trip is measured (Karn)
	synSends                               int           // our SYNs (or SYN-ACKs) sent, or tried
	probes                                 int           // window probes in a row: the persist timer is rto doubled as many times (not rto itself, as Linux's icsk_backoff)
	timer                                  *time.Timer
	timerAt                                time.Time // when timer is due; zero when stopped
	deadline                               time.Time // of the handshake
	// onOpen, until called (once, then nil), tells the caller whether
	// the handshake succeeded.
	onOpen   func(ok bool)
	finished bool
	// out says the container opened the flow (outbound): its SYN came
	// first, and our SYN-ACK answers it once the host connected. syn is
	// that SYN until then, which an ICMP error about the flow quotes.
	out bool
	syn []byte
	// entry is the ID of the conntrack entry an outbound splice's SYN
	// created, which goes with the splice should it never open.
	entry uint64
	// held are bytes from the container taken in the gateway's batch
	// that is under way, which go to the host socket at its end
	// (sendHeld), with those after them and the FIN, if it came; pending
	// says the splice is on the uplink's list for that.
	held    []byte
	pending bool
}

type spliceState uint8

const (
	spliceSynSent    spliceState = iota // inbound: our SYN went to the container
	spliceConnecting                    // outbound: the container's SYN came; the host socket connects
	spliceSynRcvd                       // outbound: the host connected; our SYN-ACK went to the container
	spliceOpen
	spliceDone
)

// handshaking says the splice is not open yet, and its handshake with
// the container has a deadline.
func (st spliceState) handshaking() bool { return st < spliceOpen }

// Parameters of a splice.
const (
	// spliceWnd is the receive window offered to the container: what it
	// may send that the host socket has not taken yet.
	spliceWnd   = 512 << 10
	spliceShift = 7 // our window scale: spliceWnd>>7 fits the 16-bit field
	// spliceDiscard batches the discarding of acknowledged bytes from the
	// host socket: one system call per this many, or at the end.
	spliceDiscard = 64 << 10
	spliceMaxRTO  = 30 * time.Second
	// spliceRetries is how many times a segment is sent again before the
	// flow is reset, as Linux's tcp_retries2 (15) roughly.
	spliceRetries = 15
	// spliceMaxPayload is the most a segment to the container carries: a
	// GSO frame of the largest IPv4 packet.
	spliceMaxPayload = 0xffff - 40
	// spliceBurst is the most segments one turn of a pump sends (512 KiB
	// of 64 KiB ones) before it lets the other flows go first.
	spliceBurst = 8
)

// spliceMinRTO is the least retransmission timeout of a segment to the
// container, and its timeout before a round trip is measured (baseRTOLocked);
// doubled at each timeout in a row (a variable for the tests).
var spliceMinRTO = 200 * time.Millisecond

// spliceSynRTO is the first timeout of a SYN or SYN-ACK to the container
// (a variable for the tests).
var spliceSynRTO = time.Second

// Events the poller watches a splice's host socket for: news to read (the
// client's bytes, its end of stream, urgent data), and room to write while
// bytes wait for it (flushing).
const (
	spliceWatch      = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLPRI
	spliceWatchFlush = spliceWatch | unix.EPOLLOUT
)

var (
	isnSeed  = maphash.MakeSeed()
	peekOffs atomic.Int32 // 1: SO_PEEK_OFF works on TCP; -1: it does not; 0: unknown
)

// isn is the initial sequence number of a splice from src to dst (RFC
// 6528): a clock that advances every 64 ns, plus a secret hash of the
// tuple, so a client reusing its port starts above its last connection
// and the container's TIME_WAIT takes the new SYN.
var isnOf = isn // tests move it, to cross the sequence space's end

func isn(src, dst netip.AddrPort) uint32 {
	var h maphash.Hash
	h.SetSeed(isnSeed)
	s, d := src.Addr().As4(), dst.Addr().As4()
	h.Write(s[:])
	h.Write(d[:])
	var p [4]byte
	binary.BigEndian.PutUint16(p[:], src.Port())
	binary.BigEndian.PutUint16(p[2:], dst.Port())
	h.Write(p[:])
	return uint32(h.Sum64()) + uint32(time.Now().UnixNano()>>6)
}

// spliceOf makes a splice of the host socket fd (-1 until there is one)
// that speaks to the container at to as from, not watched yet.
func (u *Uplink) spliceOf(fd int, from, to netip.AddrPort, peek bool) *splice {
	s := &splice{u: u, fd: fd, from: from, to: to, rto: spliceMinRTO, peekOff: peek}
	s.key = conntrack.Tuple{Src: to.Addr(), Dst: from.Addr(), SrcPort: to.Port(), DstPort: from.Port(), Proto: conntrack.ProtoTCP}
	s.iss = isnOf(from, to)
	s.sndUna, s.sndNxt, s.sndMax, s.discarded = s.iss, s.iss+1, s.iss+1, s.iss+1
	return s
}

// watch has the poller watch the splice's host socket for events.
func (s *splice) watch(events uint32) error {
	id, err := s.u.poll.add(s.fd, events, s.ready)
	s.pollID = id
	return err
}

// count adds one to the counter of the splice's direction: in, a
// published port's client's, or out, a container's own connection's.
func (s *splice) count(in, out *atomic.Uint64) {
	if s.out {
		out.Add(1)
		return
	}
	in.Add(1)
}

// sockOpts gives the TCP socket fd the options of a splice's host socket:
//   - no Nagle: each segment of the container's goes on as it came;
//   - urgent data inline (SO_OOBINLINE): else a read skips the urgent
//     byte, and the stream to the container loses it;
//   - a peek offset (SO_PEEK_OFF, Linux 6.10 and later for TCP), so each
//     peek starts where the last one ended; without it, each peek skips
//     the bytes sent and not acknowledged into a scratch buffer. Always
//     when peek, which says fd's listener has one; else where the kernel
//     has it (peekOffs).
//
// It reports whether fd peeks from its offset. A listening socket given
// them passes them on to the sockets it accepts (Linux copies the
// listener's socket), which saves a system call each (acceptor.optsOf).
func sockOpts(fd int, peek bool) (bool, error) {
	if err := setOn(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil {
		return false, err
	}
	if err := setOn(fd, unix.SOL_SOCKET, unix.SO_OOBINLINE); err != nil {
		return false, err
	}
	if !peek && peekOffs.Load() < 0 {
		return false, nil
	}
	err := rawSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0)
	switch {
	case err == nil:
		peekOffs.Store(1)
		return true, nil
	case !peek && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT)):
		peekOffs.Store(-1)
		return false, nil
	}
	return false, os.NewSyscallError("setsockopt", err)
}

// hasSockOpts reports whether the socket fd has the options sockOpts
// gives, with a peek offset of 0 when peek.
func hasSockOpts(fd int, peek bool) bool {
	is := func(level, name, want int) bool {
		v, err := unix.GetsockoptInt(fd, level, name)
		return err == nil && v == want
	}
	return is(unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) && is(unix.SOL_SOCKET, unix.SO_OOBINLINE, 1) &&
		(!peek || is(unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0))
}

// start sends the SYN; the container's answer arrives on the gateway's
// goroutine (input), which opens the splice and sends what the client
// sent meanwhile, or resets the client. onOpen is told which, once.
func (s *splice) start(onOpen func(ok bool)) {
	s.mu.Lock()
	if s.state == spliceDone {
		s.mu.Unlock()
		onOpen(false)
		return
	}
	s.onOpen = onOpen
	s.deadline = time.Now().Add(s.u.cfg.ConnectTimeout)
	s.rto = spliceSynRTO
	s.armLocked()
	s.mu.Unlock()
	s.sendSynOrRequeue()
}

// sendSynOrRequeue sends the SYN (or the SYN-ACK, outbound); one the
// queue to the gateway refused goes again after localRetry rather than
// after the SYN's timeout, until the handshake's deadline.
func (s *splice) sendSynOrRequeue() {
	s.mu.Lock()
	// The first SYN (or SYN-ACK) is timed, the handshake's round trip
	// the first sample of the timeout's (as Linux takes it): one sent
	// again is not, nor is the first then (Karn).
	if s.synSends == 0 {
		s.rttEnd, s.rttStart = s.iss+1, time.Now()
	} else {
		s.rttStart = time.Time{}
	}
	s.synSends++
	s.mu.Unlock()
	sent := s.sendSyn()
	s.mu.Lock()
	if s.state != spliceSynSent && s.state != spliceSynRcvd {
		s.mu.Unlock()
		return
	}
	if sent {
		s.sentLocked()
		s.mu.Unlock()
		return
	}
	if s.refusedLocked() || time.Now().After(s.deadline) {
		s.mu.Unlock()
		s.abort(true, false, "the queue to the container stayed full")
		return
	}
	s.mu.Unlock()
}

// localRetry is how soon what the queue to the gateway refused (a local
// drop: it never left) is sent again, at the latest: the link says when
// its queue has room (onRoom), and the retry goes then. The timer is the
// fallback; it doubles for each retry the queue refused in a row, to
// 256 ms. A flow whose frames the queue refused for spliceQueueTimeout
// ends, a SYN's at the handshake's deadline.
const localRetry = time.Millisecond

// spliceQueueTimeout is how long the queue to the gateway may refuse a
// splice every frame before the flow ends: the gateway is stuck.
const spliceQueueTimeout = time.Minute

// refusedLocked is the answer to a frame the queue to the gateway
// refused: the timer is to send again, after localRetry or its back-off,
// unless it is to already; the retransmission timer starts again after
// (onTimer), and is not armed meanwhile. It reports whether to give up: a
// retry of the timer's was refused the last time allowed.
func (s *splice) refusedLocked() (giveUp bool) {
	s.count(&s.u.stats.InboundRequeued, &s.u.stats.OutboundRequeued)
	now := time.Now()
	if s.refusedSince.IsZero() {
		s.refusedSince = now
	}
	if s.retrying {
		s.retrying = false
		s.refused++
		if now.Sub(s.refusedSince) > spliceQueueTimeout {
			return true
		}
	}
	if s.requeue {
		return false // the retry due stands
	}
	s.requeue = true
	s.setTimerLocked(localRetry << min(s.refused, 8))
	if !s.awaitingRoom { // once: the link's list stays one entry a splice
		if s.wake == nil {
			s.wake = s.wakeNow
		}
		s.awaitingRoom = s.u.ln.onRoom(s.wake)
		if !s.awaitingRoom {
			s.setTimerLocked(0) // room already
		}
	}
	return false
}

// wakeNow is the link's news that its queue has room: a retry due goes
// at once.
func (s *splice) wakeNow() {
	s.mu.Lock()
	s.awaitingRoom = false
	if s.requeue && s.state != spliceDone {
		s.setTimerLocked(0)
	}
	s.mu.Unlock()
}

// sentLocked notes a segment the queue took: the refusals in a row end,
// and a retry still due comes at once (it then arms the retransmission
// timer), not after a back-off the queue no longer needs.
func (s *splice) sentLocked() {
	s.refused, s.retrying, s.refusing, s.refusedSince = 0, false, false, time.Time{}
	if s.requeue {
		s.setTimerLocked(localRetry)
	}
}

// unackLocked undoes ackLocked for a segment the queue refused: its
// acknowledgement, if it was new (ack, past prev, the last one sent), is
// due again, with whatever goes next or the timer's retry.
func (s *splice) unackLocked(prev, ack uint32) {
	if ack != prev {
		s.rcvAcked, s.ackDue = prev, true
	}
}

// openedLocked takes onOpen, to be called once unlocked.
func (s *splice) openedLocked() func(bool) {
	f := s.onOpen
	s.onOpen = nil
	if f == nil {
		f = func(bool) {}
	}
	return f
}

// sendSyn sends the SYN, with our MSS, window scale and SACK permitted,
// or, outbound, the SYN-ACK (with a window scale and SACK permitted only
// if the container's SYN had them, RFC 7323 and 2018), and reports
// whether it left (send).
func (s *splice) sendSyn() bool {
	var opts [12]byte
	binary.BigEndian.PutUint32(opts[0:], 2<<24|4<<16|uint32(s.u.mtu-40)) // MSS
	binary.BigEndian.PutUint32(opts[4:], 1<<24|3<<16|3<<8|spliceShift)   // NOP, window scale
	binary.BigEndian.PutUint32(opts[8:], 1<<24|1<<16|4<<8|2)             // NOP, NOP, SACK permitted
	if !s.out {
		// Unlocked: what send reads under the lock (the MSS, which the
		// container's SYN-ACK sets) a segment without payload needs not.
		return s.u.sendTCP(s.from, s.to, 0, s.iss, 0, conntrack.TCPSyn, 0xffff, opts[:], nil, 0)
	}
	// Sent under the lock: an abort meanwhile (the destination reset
	// the host connection as soon as it was made) sends its reset after
	// it, not before, and one before it leaves nothing to send.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != spliceSynRcvd {
		return true // nothing to send, and nothing refused
	}
	n := 8
	if s.rcvShift == 0 {
		n = 4
	}
	if s.sackOK {
		n += copy(opts[n:], opts[8:12])
	}
	return s.send(s.iss, s.rcvNxt, conntrack.TCPSyn|conntrack.TCPAck, 0xffff, opts[:n], nil, 0)
}

// send sends the container one segment: without payload when bp is nil,
// else with n bytes already at the payload's place in the pooled frame
// bp, which send takes. It reports false when the queue to the gateway
// was full: the segment did not leave.
func (s *splice) send(seq, ack uint32, flags uint8, wnd uint16, opts []byte, bp *[]byte, n int) bool {
	return s.u.sendTCP(s.from, s.to, s.mss, seq, ack, flags, wnd, opts, bp, n)
}

// sendTCP sends a container at to a segment from from, as splice.send
// does, cut into segments of mss when it carries more (GSO).
func (u *Uplink) sendTCP(from, to netip.AddrPort, mss int, seq, ack uint32, flags uint8, wnd uint16, opts []byte, bp *[]byte, n int) bool {
	hl := 20 + len(opts)
	if bp == nil {
		bp, n = u.ln.getBuf(20+hl), 0
	}
	b := (*bp)[nat.Headroom:]
	total := 20 + hl + n
	ipv4Header(b, total, conntrack.ProtoTCP, defaultTTL, from.Addr(), to.Addr())
	t := b[20:]
	putTCPHeader(t, from.Port(), to.Port(), seq, ack, flags, wnd, hl)
	copy(t[20:], opts)
	// The checksum is left to the bridge or the container's kernel: the
	// field holds the pseudo-header's sum.
	binary.BigEndian.PutUint16(t[16:], pseudo(b, conntrack.ProtoTCP, hl+n))
	off := bridge.Offload{Flags: bridge.OffloadNeedsCsum, CsumStart: nat.Headroom + 20, CsumOffset: 16}
	if n > 0 && n > mss && mss > 0 { // a splice's mss is set before any payload goes
		off.GSO, off.GSOSize, off.HdrLen = bridge.GSOTCPv4, uint16(mss), uint16(nat.Headroom+20+hl)
	}
	return u.ln.push(bp, nat.Headroom+total, off)
}

// windowLocked is the receive window to advertise, scaled.
func (s *splice) windowLocked() uint16 {
	w := max(spliceWnd-len(s.over), 0) >> s.rcvShift
	return uint16(min(w, 0xffff))
}

// ackLocked returns what a segment acknowledging the container carries,
// and the acknowledgement sent before it (prev, for unackLocked should the
// segment not go), and notes it sent: the caller sends the segment.
func (s *splice) ackLocked() (seq, ack uint32, wnd uint16, prev uint32) {
	prev = s.rcvAcked
	s.rcvAcked, s.ackDue, s.ackNow, s.ackMust = s.rcvNxt, false, false, false
	// The next byte's delay starts from it: the timer is armed again
	// then (Linux clears its delayed ACK's pending mark when an ACK goes).
	s.dtimerSet = false
	return s.sndNxt, s.rcvNxt, s.windowLocked(), prev
}

// ackDelay is how long an acknowledgement of the container's bytes may
// wait for a segment of ours to ride on (an answer from the client, or
// our FIN): far below the container's retransmission timeout (200 ms at
// least), and short enough for a sender that waits for it (Nagle).
var ackDelay = time.Millisecond // a variable for the tests

// delayAckLocked schedules the acknowledgement of what came: within
// ackDelay of the first byte not acknowledged since the last
// acknowledgement went, as Linux's delayed ACK does, not pushed back by
// each segment after it (a timer operation less per segment, and a
// sender of small segments at short intervals would otherwise wait for
// its acknowledgement without end).
func (s *splice) delayAckLocked() {
	s.ackDue = true
	if s.dtimerSet {
		return
	}
	s.dtimerSet = true
	if s.dtimer == nil {
		s.dtimer = s.u.afterFunc(ackDelay, s.ackIfDue)
		return
	}
	s.dtimer.Reset(ackDelay)
}

// ackIfDue sends the acknowledgement that waits, if one does.
func (s *splice) ackIfDue() {
	s.mu.Lock()
	s.dtimerSet = false
	if !s.ackDue || s.state != spliceOpen {
		s.mu.Unlock()
		return
	}
	must := s.ackMust
	seq, ack, wnd, prev := s.ackLocked()
	sack := s.sackOptLocked(ack)
	s.mu.Unlock()
	s.sendAck(seq, ack, wnd, prev, must, &sack)
}

// sendAck sends a segment that only acknowledges; prev is the last
// acknowledgement sent before it. One the full queue to the gateway
// refused goes again with the timer's retry (refusedLocked) when it
// acknowledged something new, or when must (the handshake's, a window
// that opens): a lost handshake's ACK kept the container's accept waiting
// a second, for its SYN-ACK's second try. sack is the SACK option the
// caller built with the ACK, under the lock.
func (s *splice) sendAck(seq, ack uint32, wnd uint16, prev uint32, must bool, sack *sackOpt) {
	if s.send(seq, ack, conntrack.TCPAck, wnd, sack.b[:sack.n], nil, 0) {
		return
	}
	s.mu.Lock()
	if s.state != spliceOpen || !must && ack == prev {
		s.mu.Unlock()
		return
	}
	s.unackLocked(prev, ack)
	s.ackDue, s.ackMust = true, s.ackMust || must // due again, even if not new
	giveUp := s.refusedLocked()
	s.mu.Unlock()
	if giveUp {
		s.abort(true, true, "the queue to the container stayed full")
	}
}

// armLocked starts the timer for the segment outstanding, or a probe;
// not while it waits to send again what the queue refused (requeue),
// which arms it after.
func (s *splice) armLocked() {
	if s.requeue {
		return
	}
	d := s.rto
	if s.wantWnd {
		for i := 0; i < s.probes && d < spliceMaxRTO; i++ {
			d = min(2*d, spliceMaxRTO)
		}
	}
	if s.state.handshaking() && !s.deadline.IsZero() {
		// Not past the handshake's deadline, which only a firing
		// looks at.
		d = min(d, max(time.Until(s.deadline), 0))
	}
	s.setTimerLocked(d)
}

// setTimerLocked (re)arms the splice's one timer for d from now. A firing
// of the timer's from before (it fired while this goroutine held the lock,
// and waits for it) then finds it is not due, and does nothing: else it
// would act as the timeout just re-armed, a retransmission for nothing.
func (s *splice) setTimerLocked(d time.Duration) {
	s.timerAt = time.Now().Add(d)
	if s.timer == nil {
		s.timer = s.u.afterFunc(d, s.onTimer)
		return
	}
	s.timer.Reset(d)
}

func (s *splice) disarmLocked() {
	if s.timer != nil && !s.requeue {
		s.timer.Stop()
		s.timerAt = time.Time{}
	}
	s.unbackLocked()
}

// unbackLocked ends the timeouts in a row, with an acknowledgement that
// moved: the timeout comes back to the base, unless a retransmission
// timeout backed it off and no round trip was measured since
// (rttSampleLocked).
func (s *splice) unbackLocked() {
	s.retries, s.probes = 0, 0
	if !s.backedOff {
		s.rto = s.baseRTOLocked()
	}
}

// baseRTOLocked is the retransmission timeout with none in a row: the
// smoothed round trip to the container and four times its variation, or
// spliceMinRTO if more, as Linux computes it (__tcp_set_rto, whose
// variation's part is at least tcp_rto_min): spliceMinRTO on a quick path,
// and on one slowed by a busy machine (a container's ACKs 300 ms late) no
// timeout that fires before them, sends everything again and takes the
// congestion window down to a segment for nothing.
func (s *splice) baseRTOLocked() time.Duration {
	return min(s.srtt+max(4*s.rttvar, spliceMinRTO), spliceMaxRTO)
}

// timeLocked starts timing the segment [seq, end) for a round trip, if
// none is timed and it is new (not sent before: Karn's algorithm).
func (s *splice) timeLocked(seq, end uint32) {
	if s.rttStart.IsZero() && seq == s.sndMax {
		s.rttEnd, s.rttStart = end, time.Now()
	}
}

// rttSampleLocked takes the round trip of the segment timed, if ack
// acknowledges it (RFC 6298, 2.2 and 2.3), and then, with a round trip
// measured, the timeout backed off by earlier timeouts comes back to the
// base (RFC 6298 5.7 and Karn; Linux's tcp_ack_update_rtt resets its
// backoff only then): an acknowledgement of bytes sent again may be of
// either copy, and says nothing of how long one takes.
func (s *splice) rttSampleLocked(ack uint32) {
	if s.rttStart.IsZero() || int32(ack-s.rttEnd) < 0 {
		return
	}
	r := time.Since(s.rttStart)
	s.rttStart = time.Time{}
	if s.srtt == 0 {
		s.srtt, s.rttvar = r, r/2
	} else {
		d := s.srtt - r
		if d < 0 {
			d = -d
		}
		s.rttvar = (3*s.rttvar + d) / 4
		s.srtt = (7*s.srtt + r) / 8
	}
	s.backedOff = false
	s.rto = s.baseRTOLocked()
}

// onTimer sends the SYN again, goes back to the last acknowledged byte,
// or probes a closed window; a handshake past its deadline, or a segment
// sent spliceRetries times, ends the flow.
func (s *splice) onTimer() {
	s.mu.Lock()
	if s.state == spliceDone || s.timerAt.IsZero() || time.Now().Before(s.timerAt) {
		s.mu.Unlock()
		return // stopped, or armed again since this firing
	}
	s.timerAt = time.Time{}
	if s.requeue {
		// What the queue refused goes again, and the retransmission
		// timer starts again for it: neither is a retransmission.
		s.requeue = false
		syn := s.state.handshaking()
		if syn && time.Now().After(s.deadline) {
			s.mu.Unlock()
			s.abort(true, false, "the queue to the container stayed full")
			return
		}
		s.retrying = true
		s.armLocked()
		s.mu.Unlock()
		if syn {
			s.sendSynOrRequeue()
		} else {
			s.pump()
			s.ackIfDue() // an acknowledgement the queue refused, if no segment took it
		}
		s.mu.Lock()
		if s.retrying {
			s.refused, s.refusedSince = 0, time.Time{} // nothing the retry sent was refused
		}
		s.retrying = false
		s.mu.Unlock()
		return
	}
	if s.state == spliceConnecting {
		s.mu.Unlock()
		s.refuse(unix.ETIMEDOUT) // the destination stayed silent
		return
	}
	if s.state.handshaking() {
		if !time.Now().Before(s.deadline) {
			s.mu.Unlock()
			s.abort(true, false, "the container did not answer")
			return
		}
		s.rto = min(2*s.rto, spliceMaxRTO)
		s.armLocked()
		s.mu.Unlock()
		s.sendSynOrRequeue()
		return
	}
	if s.sndUna == s.sndNxt && !s.wantWnd {
		s.mu.Unlock() // stopped too late: nothing is outstanding
		return
	}
	if s.retries++; s.retries > spliceRetries {
		s.mu.Unlock()
		s.abort(true, true, "retransmissions exhausted")
		return
	}
	if s.sndUna == s.sndNxt {
		s.probes++ // a window probe: its backoff is not the retransmission timeout's
	} else {
		s.rto = min(2*s.rto, spliceMaxRTO)
	}
	s.armLocked()
	switch {
	case s.finSent && s.sndUna == s.finSeq:
		// Only the FIN is outstanding: it goes again by itself.
		s.rttStart, s.backedOff = time.Time{}, true
		s.count(&s.u.stats.InboundRetransmits, &s.u.stats.OutboundRetransmits)
		_, ack, wnd, prev := s.ackLocked()
		s.mu.Unlock()
		if !s.send(s.finSeq, ack, conntrack.TCPFin|conntrack.TCPAck, wnd, nil, nil, 0) {
			s.ackRefused(prev, ack)
		}
	case s.sndUna != s.sndNxt:
		s.count(&s.u.stats.InboundRetransmits, &s.u.stats.OutboundRetransmits)
		s.lossLocked()
		s.rewind, s.backedOff = true, true
		if s.retries > 1 {
			// A second timeout in a row: the container may have
			// dropped what it said it held (RFC 2018, 8), and all goes
			// again. After the first, what it holds is skipped, as
			// Linux keeps its SACK scoreboard through a timeout
			// unless it finds the receiver reneging.
			s.sacked = s.sacked[:0]
		}
		s.mu.Unlock()
		s.pump()
	default: // wantWnd
		seq, ack, wnd, prev := s.ackLocked()
		s.mu.Unlock()
		// A byte already acknowledged draws the container's window.
		if !s.send(seq-1, ack, conntrack.TCPAck, wnd, nil, nil, 0) {
			s.ackRefused(prev, ack)
		}
	}
}

// ackRefused is the answer to a retransmission or probe the queue refused
// that carried ack, the acknowledgement after prev: the segment is the
// retransmission timer's to send again, but the acknowledgement, if new,
// is due again now (after ackDelay), not at that timeout.
func (s *splice) ackRefused(prev, ack uint32) {
	s.mu.Lock()
	if s.state == spliceOpen {
		s.unackLocked(prev, ack)
		if s.ackDue {
			s.delayAckLocked()
		}
	}
	s.mu.Unlock()
}

// ready is the poller's news of the host socket.
func (s *splice) ready(events uint32) {
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLPRI|unix.EPOLLOUT) != 0 {
		s.mu.Lock()
		if s.state == spliceConnecting {
			s.connectedLocked(events)
			return
		}
		if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLPRI) != 0 {
			s.toEmpty = true
		}
		s.mu.Unlock()
	}
	if events&unix.EPOLLOUT != 0 {
		s.flush()
	}
	if events&^unix.EPOLLOUT != 0 {
		s.pump()
	}
	if events&unix.EPOLLERR != 0 {
		// A reset client, which neither a pump (when the window is
		// closed, or the client's end of stream was read) nor a flush
		// may have looked at.
		s.mu.Lock()
		failed := s.state != spliceDone && sockError(s.fd) != nil
		s.failed = s.failed || failed
		s.mu.Unlock()
		if failed {
			s.abort(false, true, "the client's socket failed")
		}
	}
}

// pump sends the container what the host socket holds, as far as the
// container's window takes it, with a rewind first when one is asked; it
// runs on whichever goroutine has news (the poller's, the gateway's, a
// timer's), one at a time: a pump asked for while one runs makes that one
// go round again, so segments go out in order and no news is lost.
func (s *splice) pump() {
	s.mu.Lock()
	if s.pumping {
		s.again = true
		s.mu.Unlock()
		return
	}
	s.pumping = true
	for {
		s.again = false
		if why := s.pumpLocked(); why != "" {
			s.pumping = false
			s.mu.Unlock()
			s.abort(true, true, why)
			return
		}
		if !s.again || s.state == spliceDone {
			break
		}
	}
	s.pumping = false
	done := s.state == spliceDone
	s.mu.Unlock()
	if done {
		s.finish()
	}
}

// pumpLocked is one turn of pump; it unlocks to send, and says why the
// splice must end, if it must.
func (s *splice) pumpLocked() string {
	if s.state != spliceOpen {
		return ""
	}
	if s.rewind {
		// Back to the first byte not acknowledged; a FIN not
		// acknowledged goes again after it, when the peek finds the
		// end of stream again. The segment timed is sent again: its
		// acknowledgement would time either copy.
		s.rewind, s.reseek = false, true
		s.rttStart = time.Time{}
		s.sndNxt = s.sndUna
		if s.finSent && !s.finAcked {
			s.finSent, s.hostEOF = false, false
		}
	}
	if !s.discardLocked(s.hostEOF) {
		return "discarding from the host socket failed"
	}
	tries := 0
	for sent := 0; s.state == spliceOpen && !s.hostEOF; sent++ {
		if sent == spliceBurst {
			// The rest on the poller's next round.
			if !s.rearmLocked() {
				return "watching the host socket failed"
			}
			s.blocked = true
			break
		}
		if len(s.sacked) > 0 && int32(s.sndNxt-s.sndMax) < 0 && s.skipSackedLocked() {
			// Sending again after a loss: what the container holds
			// is skipped, and a segment ends where it begins.
			s.reseek = true
		}
		if s.reseek && s.peekOff {
			// sndNxt moved: a rewind, a skip, or an acknowledgement
			// beyond it (ackLocked0), which may come while this loop
			// is unlocked to send, with no discard to move the
			// kernel's offset (the container's bytes held with it).
			s.reseek = false
			if err := rawSetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, int(s.sndNxt-s.discarded)); err != nil {
				return "setting the peek offset failed"
			}
		}
		can := s.canLocked()
		if len(s.sacked) > 0 && int32(s.sndNxt-s.sndMax) < 0 {
			can = min(can, s.holeLocked())
		}
		s.blocked = can <= 0
		if can <= 0 {
			s.wantWnd = s.sndUna == s.sndNxt
			if s.wantWnd && s.timerAt.IsZero() {
				// Probe the closed window, unless the timer is armed
				// already: the client's next bytes must not push the
				// probe back (Linux's tcp_check_probe_timer).
				s.armLocked()
			}
			break
		}
		s.wantWnd, s.probes = false, 0
		// A quarter of the congestion window a frame at most (two
		// segments at least), as Linux sizes its TSO frames by a
		// fraction of what it may send: a small window sent as one GSO
		// frame is one loss with nothing after it, no duplicate ACK or
		// SACK block to tell of it, and only the retransmission timer
		// to find it.
		can = min(can, max(int(s.cwnd/4)/s.mss*s.mss, 2*s.mss)) // whole segments: no runt in each frame
		seq := s.sndNxt
		bp := s.u.ln.getBuf(40 + can)
		b := (*bp)[nat.Headroom+40 : nat.Headroom+40+can]
		var n int
		var err error
		if s.peekOff {
			n, err = recvPeek(s.fd, b)
		} else {
			n, err = recvPeekSkip(s.fd, b, int(s.sndNxt-s.discarded))
		}
		if err != nil || n == 0 {
			s.u.ln.putBuf(bp)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN && s.toEmpty && tries < atMarkTries && s.unpeekedLocked():
				// A peek from urgent data's mark finds nothing while a
				// signal waits (as discardLocked's reads); the bytes
				// are there, and the poller's news of them was taken.
				tries++
				continue
			case err == unix.EAGAIN:
				emptyPeeks.Add(1)
			case err == errAtMark:
				s.blocked = true // the acknowledgement of what went repumps
			case err != nil:
				s.failed = true
				return "reading the host socket failed"
			case s.failed:
				// Not the client's FIN: its reset, whose error another
				// call took, and whose abort comes.
				return "the client's socket failed"
			default: // the client closed its side
				if s.sendFinLocked() {
					return "the queue to the container stayed full"
				}
			}
			break
		}
		s.timeLocked(seq, seq+uint32(n)) // before the send, whose ACK may come before this goroutine locks again
		s.sndNxt += uint32(n)
		if int32(s.sndNxt-s.sndMax) > 0 {
			s.sndMax = s.sndNxt
		}
		if s.timer == nil || s.sndUna == seq {
			s.armLocked()
		}
		_, ack, wnd, prev := s.ackLocked()
		s.mu.Unlock()
		sent := s.send(seq, ack, conntrack.TCPAck|conntrack.TCPPsh, wnd, nil, bp, n)
		s.mu.Lock()
		if s.state != spliceOpen {
			break // ended meanwhile
		}
		if !sent {
			if s.rttEnd == seq+uint32(n) {
				s.rttStart = time.Time{} // it never left
			}
			s.unsendLocked(seq)
			s.unackLocked(prev, ack)
			if s.refusedLocked() {
				return "the queue to the container stayed full"
			}
			break
		}
		s.sentLocked()
		if n < can && !s.toEmpty {
			break // a read that would find nothing saved (toEmpty)
		}
	}
	if s.ackNow && s.state == spliceOpen {
		s.mu.Unlock()
		s.ackIfDue() // the handshake's: sent again if the queue refuses it
		s.mu.Lock()
	}
	return ""
}

// rearmLocked has the poller pump the splice on its next round: watching
// again a socket that has something to read makes it news again.
func (s *splice) rearmLocked() bool {
	if s.state == spliceDone {
		return true
	}
	watch := uint32(spliceWatch)
	if s.flushing {
		watch = spliceWatchFlush
	}
	return s.u.poll.modify(s.fd, s.pollID, watch) == nil
}

// canLocked is how many bytes the container's window takes now, in one
// segment.
func (s *splice) canLocked() int {
	// The container's window from sndUna, and the congestion window
	// less what is in flight: sent, not acknowledged, nor held by the
	// container (SACK; RFC 6675's pipe).
	pipe := s.sndNxt - s.sndUna
	for _, r := range s.sacked {
		if int32(r.end-s.sndNxt) <= 0 {
			pipe -= r.end - r.start
		}
	}
	can := int(min(int32(s.sndUna+s.sndWnd-s.sndNxt), int32(s.cwnd-pipe)))
	if !s.peekOff {
		// The scratch buffer bounds what is in flight.
		can = min(can, len(skipBuf())-int(s.sndNxt-s.discarded))
	}
	return min(can, spliceMaxPayload)
}

// unsendLocked takes back a segment from seq that the queue to the
// gateway refused: it never left, so the bytes go again from there, on
// the next acknowledgement (blocked) or the timer's retry, whichever
// comes first. The congestion window halves, once a run of refusals, as
// for any sign of a full path. An acknowledgement that came meanwhile may
// have passed seq (of an earlier copy, after a rewind): sndNxt never goes
// below sndUna, nor forward.
func (s *splice) unsendLocked(seq uint32) {
	if int32(s.sndUna-seq) > 0 {
		seq = s.sndUna
	}
	if int32(s.sndNxt-seq) > 0 {
		s.sndNxt = seq
	}
	s.reseek, s.blocked = true, true
	if !s.refusing {
		s.refusing = true
		s.cwnd = max(s.cwnd/2, 2*uint32(s.mss))
		s.ssthresh = s.cwnd
	}
}

// sendFinLocked sends the container our FIN, the client's end of stream,
// once (again after a rewind); it unlocks to send. It reports whether to
// give up: the queue refused the last retry allowed (refusedLocked).
func (s *splice) sendFinLocked() (giveUp bool) {
	s.hostEOF = true
	if !s.finAt {
		s.finAt, s.finSeq = true, s.sndNxt
	}
	if s.finSent {
		return false
	}
	s.finSent = true
	s.sndNxt = s.finSeq + 1
	if int32(s.sndNxt-s.sndMax) > 0 {
		s.sndMax = s.sndNxt
	}
	s.armLocked()
	_, ack, wnd, prev := s.ackLocked()
	seq := s.finSeq
	s.mu.Unlock()
	sent := s.send(seq, ack, conntrack.TCPFin|conntrack.TCPAck, wnd, nil, nil, 0)
	s.mu.Lock()
	switch {
	case s.state != spliceOpen:
	case sent:
		s.sentLocked()
	case s.finSent && !s.finAcked && s.sndNxt == seq+1:
		// Never left: the next pump finds the end of stream again.
		s.finSent, s.hostEOF, s.sndNxt = false, false, seq
		s.unackLocked(prev, ack)
		return s.refusedLocked()
	}
	return false
}

func recvPeek(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// atMarkTries bounds the reads that find nothing at urgent data's mark
// while a signal waits, and are tried again.
const atMarkTries = 8

// unpeekedLocked reports whether the host socket holds bytes past those
// sent (SIOCINQ), which a peek did not find.
func (s *splice) unpeekedLocked() bool {
	inq, err := unix.IoctlGetInt(s.fd, unix.SIOCINQ)
	return err == nil && inq > int(s.sndNxt-s.discarded)
}

// emptyPeeks counts the reads of host sockets that found nothing (for the
// tests).
var emptyPeeks atomic.Int64

// skippingPeeks counts the peeks that skipped bytes in flight (the tests
// check the fallback ran).
var skippingPeeks atomic.Int64

// skipBuf takes the bytes a peek without a peek offset skips, for every
// splice at once: nobody reads it. It bounds the bytes in flight then.
var skipBuf = sync.OnceValue(func() []byte { return make([]byte, 1<<20) })

// errAtMark says a peek past the bytes in flight found none, though the
// host socket holds more: the peek stopped at urgent data's mark, as a
// read does when it has read something. Only a peek from the mark passes
// it: the splice waits for the bytes before it to be acknowledged and
// discarded.
var errAtMark = errors.New("hostnet: the peek stopped at urgent data")

// peekSkipBetween, when set, runs between recvPeekSkip's two questions to
// the socket (for the tests: bytes and a FIN that come then).
var peekSkipBetween func()

// recvPeekSkip peeks past skip bytes, into skipBuf. With nothing past
// them, it says errAtMark when the socket holds more (SIOCINQ), else
// EAGAIN unless the client's end of stream came (n 0, no error), which it
// asks the socket's TCP state for, or its reset (the error), which the
// peek does not report when it found the bytes skipped. The state first: a FIN comes after
// every byte before it, so once the state shows it, SIOCINQ counts them
// all; asked the other way round, bytes and a FIN that came between the
// two would have looked like the end, and been lost.
func recvPeekSkip(fd int, b []byte, skip int) (int, error) {
	iov := [2]unix.Iovec{{Base: &skipBuf()[0]}, {Base: &b[0]}}
	iov[0].SetLen(skip)
	iov[1].SetLen(len(b))
	msg := unix.Msghdr{Iov: &iov[0], Iovlen: 2}
	if skip == 0 {
		msg.Iov, msg.Iovlen = &iov[1], 1
	}
	if skip > 0 {
		skippingPeeks.Add(1)
	}
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if e != 0 {
		return 0, e
	}
	n := int(r) - skip
	switch {
	case r == 0 && skip == 0:
		return 0, nil // the end of stream
	case n < 0:
		// What was sent is still there: the peek stopped at a mark
		// among those bytes (urgent data a sender pointed back at).
		return 0, errAtMark
	case n == 0:
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, err
		}
		if peekSkipBetween != nil {
			peekSkipBetween()
		}
		inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ) // without a FIN's
		if err != nil {
			return 0, err
		}
		if inq > skip {
			return 0, errAtMark // or bytes that came since the peek: their news comes too
		}
		switch info.State {
		case tcpClose:
			// After the FIN both ways, or after a reset, whose error
			// the peek did not report: it found bytes, those in flight.
			if err := sockError(fd); err != nil {
				return 0, err
			}
			return 0, nil
		case tcpCloseWait, tcpLastAck, tcpClosing, tcpTimeWait:
			return 0, nil // the client's FIN came: the end of stream
		}
		return 0, unix.EAGAIN
	}
	return n, nil
}

// TCP states of Linux's (include/net/tcp_states.h) in which the peer's FIN
// has come.
const (
	tcpTimeWait  = 6
	tcpClose     = 7
	tcpCloseWait = 8
	tcpLastAck   = 9
	tcpClosing   = 11
)

// discardLocked drops the acknowledged bytes from the host socket when
// they are spliceDiscard or more, or when all is true, or when every byte
// sent is acknowledged: the peeked bytes take room in the socket's receive
// window, which may be small, and once nothing is in flight no other
// acknowledgement would come to free it. It reports false when the host
// socket failed.
func (s *splice) discardLocked(all bool) bool {
	end := s.sndUna // the bytes acknowledged end here; the FIN is none
	if s.finAt && int32(end-s.finSeq) > 0 {
		end = s.finSeq
	}
	n := int(int32(end - s.discarded))
	if n <= 0 || n < spliceDiscard && !all && s.sndUna != s.sndNxt || s.state == spliceDone {
		return true
	}
	for tries := 0; n > 0; tries++ {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, uintptr(n), unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
		case e == unix.EAGAIN && tries < atMarkTries:
			// The bytes are there: a read from urgent data's mark
			// finds none while a signal waits (Go's runtime sends
			// SIGURG to preempt), and the signal is taken on the way
			// back.
		case e != 0 || r == 0:
			s.failed = true
			return false
		default:
			n -= int(r)
			s.discarded += uint32(r)
		}
	}
	return true
}

// input handles a segment from the container: h is its TCP header and
// payload its data. It runs on the gateway's goroutine.
func (s *splice) input(h tcpSeg, payload []byte) {
	flags := h.flags()
	seq, ack := h.seq(), h.ack()
	s.mu.Lock()
	switch s.state {
	case spliceDone:
		s.mu.Unlock()
		return
	case spliceSynSent:
		s.synSentLocked(h, flags, seq, ack)
		return
	}
	if flags&conntrack.TCPRst != 0 {
		// As RFC 5961 and Linux: a reset at the next byte expected (or
		// at the container's FIN, which Linux takes too) ends the
		// splice; one elsewhere in the window advertised draws a
		// challenge ACK, which a container that meant it answers with
		// an exact reset; anything else is not the container's. Before
		// its SYN is acknowledged (an outbound handshake), only the
		// exact one counts.
		switch {
		case seq == s.rcvNxt || s.finRcvd && seq == s.rcvNxt-1:
			s.mu.Unlock()
			s.abort(true, false, "reset by the container")
		case !s.state.handshaking() && seq-s.rcvNxt < max(uint32(s.windowLocked())<<s.rcvShift, 1):
			s.challengeLocked(s.sndNxt)
		default:
			s.mu.Unlock()
		}
		return
	}
	switch s.state {
	case spliceConnecting:
		s.mu.Unlock() // its SYN again: the host connection is not made yet
		return
	case spliceSynRcvd:
		s.synRcvdLocked(h, payload, flags, seq, ack)
		return
	}
	if flags&conntrack.TCPSyn != 0 && s.out {
		// A SYN on an open connection (RFC 5961 4.2): the container
		// forgot it (its FIN_WAIT_2 timed out while the destination
		// kept its side open, or it restarted) and opens a new one
		// from the same port. The challenge ACK draws its reset, which
		// ends this splice, and its SYN again makes a new one.
		s.challengeLocked(s.sndNxt)
		return
	}
	if flags&conntrack.TCPAck == 0 {
		s.mu.Unlock()
		return
	}
	if flags&conntrack.TCPSyn != 0 {
		// The SYN-ACK again: our ACK of it was lost, or is late.
		s.u.stats.InboundSynAckAgain.Add(1)
		seqNxt, ackNxt, wnd, prev := s.ackLocked()
		sack := s.sackOptLocked(ackNxt)
		s.mu.Unlock()
		s.sendAck(seqNxt, ackNxt, wnd, prev, true, &sack)
		return
	}
	pure := len(payload) == 0 && flags&(conntrack.TCPFin|conntrack.TCPSyn) == 0
	sackMore := s.scoreLocked(h.options())
	opened := s.ackLocked0(ack, h.window(), pure, sackMore)
	s.trimSackedLocked()
	now := false // acknowledge at once, else maybe later
	if len(payload) > 0 || flags&conntrack.TCPFin != 0 {
		now = true // out of order, or old: a duplicate ACK says where we are
		if d := s.rcvNxt - seq; int32(d) >= 0 && !s.finRcvd && (int(d) < len(payload) || flags&conntrack.TCPFin != 0) {
			if int(d) < len(payload) && !s.takeLocked(payload[d:]) {
				s.mu.Unlock()
				s.abort(false, true, "writing to the host socket failed") // the client is gone
				return
			}
			if flags&conntrack.TCPFin != 0 && seq+uint32(len(payload)) == s.rcvNxt {
				s.rcvNxt++
				s.finRcvd = true
				s.shutLocked()
			}
			// As a receiver's delayed ACK: at once for a window that
			// shrank (bytes kept for the host socket), or every second
			// full segment; else with our next segment, or after
			// ackDelay. A FIN's too: the client usually closes its side
			// within that time, and our FIN carries it.
			// Segments that came out of order and now follow go on too.
			filled := len(s.ooo) > 0
			if filled && !s.drainOOOLocked() {
				s.mu.Unlock()
				s.abort(false, true, "writing to the host socket failed")
				return
			}
			now = filled || len(s.over) > 0 || s.rcvNxt-s.rcvAcked >= 2*uint32(s.mss)
			if !now {
				s.delayAckLocked()
			}
		} else if int32(seq-s.rcvNxt) > 0 && !s.finRcvd {
			// Out of order: kept until the bytes before it come (RFC
			// 9293 3.10.7.4), so the container's fast retransmission of
			// the one lost segment repairs the hole, rather than every
			// segment after it being sent again (a Reno sender without
			// SACK then takes the duplicates for reordering, and falls
			// back on its timeouts).
			s.queueOOOLocked(seq, payload, flags&conntrack.TCPFin != 0)
		}
	}
	// What the segment acknowledged leaves the host socket after its
	// bytes went on: the client waits for them, no one for the discard
	// (at the batch's end, then, when they are held: sendHeld).
	if opened && len(s.held) == 0 && !s.discardLocked(false) {
		s.mu.Unlock()
		s.abort(false, true, "discarding from the host socket failed")
		return
	}
	if len(payload) == 0 && flags&conntrack.TCPFin == 0 && seq != s.rcvNxt {
		now = true // a keep-alive or window probe, or a stray: the answer is where we are
	}
	if now && len(payload) <= 1 && flags&conntrack.TCPFin == 0 && seq == s.rcvNxt-1 && !s.probedLocked() {
		now = false // a probe the client did not answer: nor does the splice
	}
	done := s.doneLocked()
	// Done, the splice has no timer left to acknowledge the container's
	// last FIN with, and nothing of ours to carry it: now, then.
	now = now || done && s.ackDue
	// A window that opened lets the client's next bytes go, if some
	// wait: in the poller's next round, so this one goes back to reading
	// what the containers send first.
	repump := opened && !done && (s.blocked || s.rewind)
	if repump {
		if !s.rearmLocked() {
			s.mu.Unlock()
			s.abort(true, true, "watching the host socket failed")
			return
		}
		// The poller's pump is due: the next ACKs need not ask again
		// (an epoll_ctl each); the pump says if it stays blocked.
		s.blocked = false
	}
	s.unlockAcking(now, done)
}

// unlockAcking unlocks s, after it sends the container an acknowledgement
// of all that came if ack, and then finishes s if done.
func (s *splice) unlockAcking(ack, done bool) {
	var seq, ackNxt, prev uint32
	var wnd uint16
	var sack sackOpt
	if ack {
		seq, ackNxt, wnd, prev = s.ackLocked()
		sack = s.sackOptLocked(ackNxt)
	}
	s.mu.Unlock()
	if ack {
		s.sendAck(seq, ackNxt, wnd, prev, false, &sack)
	}
	if done {
		s.finish()
	}
}

// Linux's largest keep-alive interval and count (MAX_TCP_KEEPINTVL,
// MAX_TCP_KEEPCNT).
const (
	maxKeepIntvl = 32767
	maxKeepCnt   = 127
)

// probedLocked takes the container's probe of an open splice to the
// client, as the kernel's NAT forwards it, and reports whether to answer
// it. A probe is a keep-alive (RFC 9293 3.8.4: the byte before rcvNxt,
// with no data or one byte; Linux sends one after the socket's idle time,
// then every interval until answered or its count runs out) or, the same
// on the wire, a probe of a closed window. The host socket probes its
// peer for it at once: on a socket that keeps alive, a TCP_KEEPIDLE of a
// second makes the kernel's keep-alive timer fire now, if the socket was
// idle that long, which it is when the container probes; the interval and
// count set to the most leave the next probe to the container's next,
// and the giving up to the container's count. The container's probe is
// answered when the client answered the host socket's last probe and all
// else in flight (TCP_INFO: no probe or retransmission outstanding, as
// before the first probe): else it goes unanswered, as a vanished client
// leaves it, and the container's own keep-alive ends the connection, a
// probe later than through the kernel's NAT. Answered always, the splice
// kept a connection to a vanished client open for ever, and the NATs and
// firewalls on the client's path, which saw nothing, forgot it.
//
// Answered too whenever the host socket still holds bytes of the
// container's (in flight, not sent yet, or waiting in over): through the
// kernel's NAT the container would hold them itself, and would not keep
// alive but send them again, or probe a closed window, until its own
// retransmission limit (tcp_retries2, some 15 minutes). The host socket
// does that for it now, and its error resets the container. Its
// retransmissions and window probes back off to minutes, and each leaves
// TCP_INFO's counts up until it is answered: read as a vanished client,
// they had a container's keep-alive (1 s idle, 3 probes of 1 s) end with
// ETIMEDOUT, 4 s into a 5 s outage of the path, a connection the
// kernel's NAT carries through it.
func (s *splice) probedLocked() (answer bool) {
	info, err := unix.GetsockoptTCPInfo(s.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	busy := len(s.over) > 0 || len(s.held) > 0 || err == nil && (info.Unacked > 0 || info.Notsent_bytes > 0)
	answer = err != nil || busy || info.Probes == 0 && info.Retransmits == 0
	if !s.keepAlive {
		s.keepAlive = true
		rawSetsockoptInt(s.fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, maxKeepIntvl)
		rawSetsockoptInt(s.fd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, maxKeepCnt)
		rawSetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	}
	rawSetsockoptInt(s.fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 1)
	return answer
}

// synSentLocked handles the container's answer to the SYN, and unlocks.
func (s *splice) synSentLocked(h tcpSeg, flags uint8, seq, ack uint32) {
	if flags&conntrack.TCPAck == 0 || ack != s.iss+1 {
		// An ACK of something else is the container's other connection on
		// this tuple, one our client's last connection left there (its
		// FIN_WAIT2, say, whose last FIN never came), answering our SYN
		// with a challenge ACK (RFC 5961). As RFC 9293 says (3.10.7.3), a
		// reset at its acknowledgement ends that connection; and our SYN
		// goes again at once, the first time, rather than at its timer.
		stale := flags&(conntrack.TCPAck|conntrack.TCPRst) == conntrack.TCPAck
		again := stale && !s.synAgain
		s.synAgain = s.synAgain || again
		s.mu.Unlock()
		if stale {
			s.send(ack, 0, conntrack.TCPRst, 0, nil, nil, 0)
		}
		if again {
			s.sendSynOrRequeue()
		}
		return
	}
	if flags&conntrack.TCPRst != 0 {
		s.mu.Unlock()
		s.u.stats.InboundRefused.Add(1)
		s.abort(true, false, "refused by the container") // refused: so is the client
		return
	}
	if flags&conntrack.TCPSyn == 0 {
		s.mu.Unlock()
		return
	}
	s.synOptsLocked(h.options())
	s.sndWnd = uint32(h.window()) // not scaled in a SYN
	s.rcvNxt = seq + 1
	s.rcvAcked = seq // nothing acknowledged yet: the handshake's ACK is new, whatever the ISN
	open := s.establishLocked()
	// The handshake's ACK goes with the client's first bytes when they
	// are there already, else alone: what the client sent meanwhile is
	// read here.
	s.ackDue, s.ackNow = true, true
	s.mu.Unlock()
	open(true)
	s.pump()
}

// synOptsLocked takes the options of the container's SYN (or SYN-ACK):
// its MSS, not below Linux's least (tcp_min_snd_mss, 48), and its window
// scale, with which ours is offered or agreed.
func (s *splice) synOptsLocked(opts []byte) {
	mss, ws, sack := synOptions(opts)
	s.mss = max(min(mss, s.u.mtu-40), minMSS)
	if ws >= 0 {
		s.sndShift, s.rcvShift = uint8(ws), spliceShift
	}
	s.sackOK = sack
}

// oowLimit is the least time between two answers to segments out of a
// splice's window, as Linux's tcp_invalid_ratelimit (500 ms): a container
// sending such segments in a loop draws one each oowLimit.
const oowLimit = 500 * time.Millisecond

// challengeLocked answers a segment the splice does not take as it comes
// (a SYN on a connection already made, a reset not at the next byte
// expected: RFC 5961) with an ACK of where the splice is, from seq, at
// most one each oowLimit, and unlocks. The container's answer to it, if
// it meant the segment, is a reset the splice takes.
func (s *splice) challengeLocked(seq uint32) {
	now := time.Now()
	answer := now.Sub(s.oowAt) >= oowLimit
	if answer {
		s.oowAt = now
	}
	ack, wnd := s.rcvNxt, s.windowLocked()
	s.mu.Unlock()
	if answer {
		s.send(seq, ack, conntrack.TCPAck, wnd, nil, nil, 0)
	}
}

// minMSS is the least MSS a splice sends with, whatever the container's
// SYN says: a tiny one would cost a segment every few bytes, and 0 none.
const minMSS = 48

// establishLocked opens the splice, whose handshake is done, and returns
// onOpen, to be called once unlocked.
func (s *splice) establishLocked() func(bool) {
	// An initial window of ten segments (RFC 6928), no threshold yet.
	s.cwnd, s.ssthresh = 10*uint32(s.mss), 1<<30
	s.rttSampleLocked(s.iss + 1)
	s.sndUna = s.iss + 1
	s.recover = s.iss // as RFC 6582 says: below every acknowledgement
	s.refused = 0
	s.state = spliceOpen
	s.disarmLocked()
	return s.openedLocked()
}

// synRcvdLocked handles a segment of the container's (not a reset) while
// our SYN-ACK waits for its acknowledgement, and unlocks: the ACK opens
// the splice, and what else the segment carries is taken as an open
// splice's.
func (s *splice) synRcvdLocked(h tcpSeg, payload []byte, flags uint8, seq, ack uint32) {
	switch {
	case flags&conntrack.TCPSyn != 0 && flags&conntrack.TCPAck == 0 && seq+1 != s.rcvNxt:
		// A SYN with another initial sequence number: the container
		// forgot this connection and opens a new one from the same
		// port. The answer is an ACK of where we are, at most one each
		// oowLimit, as Linux answers a SYN outside a request's window
		// (one inside it, rare, Linux resets with the request; this
		// answers it the same as the others): the container's reset
		// of the ACK ends this splice, and its next SYN makes a new one.
		s.challengeLocked(s.iss + 1)
		return
	case flags&conntrack.TCPSyn != 0:
		// The SYN again: our SYN-ACK was lost, or is late.
		again := flags&conntrack.TCPAck == 0 && !s.requeue
		s.mu.Unlock()
		if again {
			s.u.stats.OutboundSynAgain.Add(1)
			s.sendSynOrRequeue()
		}
		return
	case flags&conntrack.TCPAck == 0 || ack != s.iss+1:
		s.mu.Unlock()
		return
	}
	s.sndWnd = uint32(h.window()) << s.sndShift
	open := s.establishLocked()
	s.mu.Unlock()
	open(true)
	if len(payload) > 0 || flags&conntrack.TCPFin != 0 {
		s.input(h, payload)
	}
	s.pump() // what the destination sent meanwhile (a server that speaks first)
}

// connectedLocked takes the poller's news of an outbound splice's host
// socket while it connects, and unlocks: connected, the SYN-ACK goes to
// the container; failed, the container hears what the network said.
func (s *splice) connectedLocked(events uint32) {
	err := sockError(s.fd)
	if err == nil && events&unix.EPOLLOUT == 0 {
		s.mu.Unlock()
		return // not yet
	}
	if err != nil {
		s.mu.Unlock()
		s.refuse(err)
		return
	}
	if err := s.u.poll.modify(s.fd, s.pollID, spliceWatch); err != nil {
		s.mu.Unlock()
		s.abort(true, true, "watching the host socket failed")
		return
	}
	s.synAckDueLocked()
	s.mu.Unlock()
	s.sendSynOrRequeue()
}

// synAckDueLocked moves an outbound splice whose host socket connected on
// to answering the container: the caller sends the SYN-ACK once unlocked
// (sendSynOrRequeue), which goes again until the handshake's deadline.
func (s *splice) synAckDueLocked() {
	s.state, s.syn = spliceSynRcvd, nil
	s.deadline = time.Now().Add(s.u.cfg.ConnectTimeout)
	s.rto = spliceSynRTO
	s.armLocked()
}

// refuse ends an outbound splice whose host connection failed with err,
// and answers the container as the network would: a reset for a refusal,
// ICMP unreachable for an unreachable destination, nothing for one that
// stayed silent.
// The splice must still be connecting: one that connected, or ended,
// meanwhile (the poller, the timer and the gateway's goroutine each may
// call this) is left as it is, and nothing is counted or sent.
func (s *splice) refuse(err error) {
	st := &s.u.stats
	s.mu.Lock()
	syn := s.syn
	s.mu.Unlock()
	switch {
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.EPIPE), errors.Is(err, unix.ECONNABORTED):
		// Refused, or connected and reset at once (EPIPE: reset after
		// its FIN): the container's SYN is reset, as a connection that
		// never was, rather than left to be sent again (a connection
		// more to a server that took one).
		if s.abortIn(spliceConnecting, false, true, "refused: "+err.Error()) {
			st.TCPRefused.Add(1)
		}
	case unreachableCode(err) >= 0:
		if !s.abortIn(spliceConnecting, false, false, "unreachable: "+err.Error()) {
			return
		}
		st.TCPUnreachable.Add(1)
		s.u.sendUnreachable(syn, uint8(unreachableCode(err)))
	case errors.Is(err, unix.EADDRNOTAVAIL):
		// The host has no local port left for the destination: its
		// trouble, as a kernel's NAT with no port left drops the SYN,
		// and the container hears nothing.
		if s.abortIn(spliceConnecting, false, false, "no local port: "+err.Error()) {
			st.DropNoSocket.Add(1)
			s.u.warnOnce("port", "hostnet: the host has no local port left for a container's connection (counted in drop_no_socket)", "err", err)
		}
	default: // timed out, or any other failure: the container hears nothing
		if s.abortIn(spliceConnecting, false, false, "connecting failed: "+err.Error()) && !outOfSockets(err) {
			st.TCPTimedOut.Add(1) // (no socket: counted in DropNoSocket)
		}
	}
}

// unreachableCode is the ICMP destination unreachable code a router
// sends for a connection that failed with err, as the kernel would: the
// inverse of its icmp_err_convert (the code of an ICMP error the host
// socket got), and ip_error's code for a route of its own that refused
// (EACCES: a "prohibit" route, code 13). -1 for none: silence.
func unreachableCode(err error) int {
	var e unix.Errno
	if !errors.As(err, &e) {
		return -1
	}
	switch e {
	case unix.ENETUNREACH:
		return 0
	case unix.EHOSTUNREACH:
		return 1
	case unix.ENOPROTOOPT:
		return 2
	case unix.EOPNOTSUPP:
		return 5
	case unix.EHOSTDOWN:
		return 7
	case unix.ENONET:
		return 8
	case unix.EACCES:
		return 13
	}
	return -1
}

// lossLocked is the congestion window's answer to a retransmission
// timeout: the way to the container is full (a bridge port's queue, the
// container's backlog), so it starts again from one segment, as RFC 5681
// says, rather than send the whole window into it again.
func (s *splice) lossLocked() {
	s.ssthresh = max((s.sndMax-s.sndUna)/2, 2*uint32(s.mss))
	s.cwnd = uint32(s.mss)
	// No fast recovery before what was sent is acknowledged (RFC 6582
	// 3.2 (6); Linux's high_seq in TCP_CA_Loss): the duplicates the
	// rewind draws, and the SACK blocks the cleared scoreboard takes
	// again as new, would halve the window from what was in flight,
	// undoing the timeout's one segment.
	s.recover, s.dupAcks = s.sndMax, 0
}

// ackLocked0 takes the acknowledgement ack and window wnd of an open
// splice, from a segment that carried nothing else when pure, and reports
// whether more may be sent now (or a rewind is due).
func (s *splice) ackLocked0(ack uint32, wnd uint16, pure, sackMore bool) bool {
	if int32(ack-s.sndUna) < 0 || int32(ack-s.sndMax) > 0 {
		return false // old, or for bytes never sent
	}
	if s.dupAckLocked(ack, wnd, pure, sackMore) {
		s.sndWnd = uint32(wnd) << s.sndShift // a duplicate by its SACK blocks may bring a new window
		return true
	}
	before := s.sndUna + min(s.sndWnd, s.cwnd)
	advanced := ack != s.sndUna
	s.rttSampleLocked(ack)
	if acked := ack - s.sndUna; acked == 0 {
		// Nothing new acknowledged: cwnd stays (RFC 5681 3.1).
	} else if s.cwnd < s.ssthresh {
		s.cwnd += min(acked, 2*uint32(s.mss)) // slow start, by bytes (RFC 3465, L = 2)
	} else if s.cwnd > 0 {
		s.cwnd += max(uint32(uint64(s.mss)*uint64(acked)/uint64(s.cwnd)), 1) // congestion avoidance
	}
	s.cwnd = min(s.cwnd, 1<<30)
	s.sndUna = ack
	if int32(ack-s.recover) > 0 {
		// Past the last recovery: recover follows, one below the
		// acknowledgement, so the two stay within 2^31 of each other
		// and compare right however far the stream goes.
		s.recover = ack - 1
	}
	if int32(s.sndNxt-ack) < 0 {
		s.sndNxt = ack // acknowledged past a rewind: the peek follows
		s.reseek = true
	}
	s.sndWnd = uint32(wnd) << s.sndShift
	if s.finAt && ack == s.finSeq+1 {
		// The container has the FIN, whatever a rewind since undid:
		// the end of stream is not read, nor the FIN sent, again.
		s.finAcked, s.finSent, s.hostEOF = true, true, true
	}
	opened := advanced || s.sndUna+min(s.sndWnd, s.cwnd) != before
	switch {
	case s.sndUna == s.sndNxt && !(s.wantWnd && s.sndWnd == 0):
		s.disarmLocked()
	case s.sndUna == s.sndNxt:
		// The answer to a window probe: still closed. The container is
		// there, so the probes go on, but never run out.
		s.retries = 0
	case advanced:
		s.unbackLocked()
		s.armLocked()
	}
	return opened
}

// dupAckLocked counts duplicate ACKs (RFC 5681: bytes in flight, none
// acknowledged, nothing carried, the same window) and at the third has
// the pump go back to the first byte not acknowledged, at once rather
// than after a timeout: fast retransmission, with the congestion window
// halved. What follows the lost segment goes again too (the splice, as a
// sender, does not read the SACK blocks the container's ACKs may carry),
// so the recovery
// ends with its first acknowledgement; duplicates those copies draw are
// not counted again until recover is acknowledged (RFC 6582). It reports
// whether the rewind is due.
func (s *splice) dupAckLocked(ack uint32, wnd uint16, pure, sackMore bool) bool {
	// A duplicate: the same ACK, window and nothing else (RFC 5681), or
	// with SACK blocks that name more than before, whatever its window,
	// which the bytes the container holds out of order shrink (RFC 6675).
	if !pure || ack != s.sndUna || s.sndMax == s.sndUna || uint32(wnd)<<s.sndShift != s.sndWnd && !sackMore {
		s.dupAcks = 0
		return false
	}
	// The third, or one after which the container holds three segments
	// past the hole (RFC 6675's DupThresh in segments, as Linux counts
	// them: one GSO frame of the splice's may be 40), starts a recovery,
	// unless one covers this loss already.
	if s.dupAcks++; s.dupAcks < 3 && s.sackedBytesLocked() < 3*uint32(s.mss) || int32(ack-s.recover) <= 0 {
		return false
	}
	s.ssthresh = max((s.sndMax-s.sndUna)/2, 2*uint32(s.mss))
	s.cwnd = s.ssthresh
	s.recover = s.sndMax
	s.rewind = true
	s.count(&s.u.stats.InboundFastRetransmits, &s.u.stats.OutboundFastRetransmits)
	s.armLocked() // the timeout now counts from the rewind
	return true
}

// oooSeg is a segment of the container's that came out of order.
type oooSeg struct {
	seq  uint32
	data []byte
	fin  bool
}

// seqRange is the bytes [start, end) of a stream.
type seqRange struct{ start, end uint32 }

// sackedMax bounds the ranges a splice remembers the container's SACK
// blocks as: four a segment, merged as they come.
const sackedMax = 16

// scoreLocked takes the SACK blocks of an ACK from the container, whose
// options are opts, into what the splice knows the container holds past
// sndUna (RFC 2018), which a retransmission then skips, and reports
// whether they name bytes it did not know the container held (which
// makes the ACK a duplicate, whatever its window: RFC 6675). Blocks
// outside (sndUna, sndMax] are ignored.
func (s *splice) scoreLocked(opts []byte) bool {
	if !s.sackOK {
		return false // not agreed: not read (Linux's tcp_parse_options)
	}
	before := s.sackedBytesLocked()
walk:
	for len(opts) > 0 {
		switch opts[0] {
		case 0:
			break walk
		case 1:
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
			break
		}
		if opts[0] == 5 {
			for b := opts[2:opts[1]]; len(b) >= 8; b = b[8:] {
				r := seqRange{binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])}
				// sndUna < start < end <= sndMax, as offsets from
				// sndUna: a block whose start is past sndMax and whose
				// end wraps round below it passes three comparisons
				// of pairs, and names nothing sent.
				if st, en := r.start-s.sndUna, r.end-s.sndUna; st > 0 && st < en && en <= s.sndMax-s.sndUna {
					s.addSackedLocked(r)
				}
			}
		}
		opts = opts[opts[1]:]
	}
	return s.sackedBytesLocked() != before
}

// sackedBytesLocked is how many bytes the container's SACK blocks name.
func (s *splice) sackedBytesLocked() (n uint32) {
	for _, r := range s.sacked {
		n += r.end - r.start
	}
	return n
}

// trimSackedLocked forgets what sndUna passed.
func (s *splice) trimSackedLocked() {
	i := 0
	for i < len(s.sacked) && int32(s.sacked[i].end-s.sndUna) <= 0 {
		i++
	}
	if i > 0 {
		s.sacked = append(s.sacked[:0], s.sacked[i:]...)
	}
	if len(s.sacked) > 0 && int32(s.sacked[0].start-s.sndUna) < 0 {
		s.sacked[0].start = s.sndUna
	}
}

// addSackedLocked merges r into sacked, which stays in order; beyond
// sackedMax ranges, the last goes.
func (s *splice) addSackedLocked(r seqRange) {
	// The first range that ends at or past r's start.
	i := 0
	for i < len(s.sacked) && int32(s.sacked[i].end-r.start) < 0 {
		i++
	}
	j := i // past the last range r touches
	for j < len(s.sacked) && int32(s.sacked[j].start-r.end) <= 0 {
		if int32(s.sacked[j].start-r.start) < 0 {
			r.start = s.sacked[j].start
		}
		if int32(s.sacked[j].end-r.end) > 0 {
			r.end = s.sacked[j].end
		}
		j++
	}
	if i == j {
		if len(s.sacked) == sackedMax {
			if i == sackedMax {
				return
			}
			s.sacked = s.sacked[:sackedMax-1]
		}
		s.sacked = append(s.sacked, seqRange{})
		copy(s.sacked[i+1:], s.sacked[i:])
		s.sacked[i] = r
		return
	}
	s.sacked[i] = r
	s.sacked = append(s.sacked[:i+1], s.sacked[j:]...)
}

// skipSackedLocked moves sndNxt past a range the container holds, if it
// is in one, and reports whether it moved.
func (s *splice) skipSackedLocked() bool {
	for _, r := range s.sacked {
		if int32(s.sndNxt-r.start) >= 0 && int32(s.sndNxt-r.end) < 0 {
			s.sndNxt = r.end
			return true
		}
	}
	return false
}

// holeLocked is how many bytes from sndNxt the container does not hold:
// up to the next range it holds, or to sndMax.
func (s *splice) holeLocked() int {
	for _, r := range s.sacked {
		if int32(r.start-s.sndNxt) > 0 {
			return int(r.start - s.sndNxt)
		}
	}
	return int(s.sndMax - s.sndNxt)
}

// oooMaxSegs bounds the segments kept out of order, whose bytes alone
// spliceWnd bounds: each costs an entry besides (a zero-length FIN costs
// nothing else), and an insertion moves the entries after it. A full
// window of segments of 512 bytes or more fits.
const oooMaxSegs = 1024

// queueOOOLocked keeps a segment from seq, beyond rcvNxt, until the bytes
// before it come: within the window offered, and at most spliceWnd bytes
// and oooMaxSegs segments kept in all.
func (s *splice) queueOOOLocked(seq uint32, payload []byte, fin bool) {
	off := seq - s.rcvNxt
	if off >= spliceWnd {
		return
	}
	if int(off)+len(payload) > spliceWnd {
		payload, fin = payload[:spliceWnd-int(off)], false
	}
	if len(payload) == 0 && !fin || s.oooBytes+len(payload) > spliceWnd || len(s.ooo) >= oooMaxSegs {
		return
	}
	i := sort.Search(len(s.ooo), func(j int) bool { return int32(s.ooo[j].seq-seq) >= 0 })
	if i < len(s.ooo) && s.ooo[i].seq == seq && len(s.ooo[i].data) >= len(payload) && (s.ooo[i].fin || !fin) {
		s.oooLast = seq // a duplicate: its block still goes first (RFC 2018, 4)
		return
	}
	if !s.u.hold(len(payload)) {
		return // the uplink holds all it may (Config.MaxBuffered): sent again
	}
	s.ooo = append(s.ooo, oooSeg{})
	copy(s.ooo[i+1:], s.ooo[i:])
	s.ooo[i] = oooSeg{seq: seq, data: append([]byte(nil), payload...), fin: fin}
	s.oooBytes += len(payload)
	s.oooLast = seq
}

// sackOpt is the SACK option of an ACK, built under the splice's lock
// with the ACK (sackOptLocked), sent after it (sendAck).
type sackOpt struct {
	b [sackOptMax]byte
	n int
}

// sackOptLocked is the SACK option of an ACK of ack: none unless
// segments are kept out of order, and SACK permitted.
func (s *splice) sackOptLocked(ack uint32) (o sackOpt) {
	if len(s.ooo) > 0 {
		o.n = s.sackLocked(o.b[:], ack)
	}
	return o
}

// sackOptMax is the room for SACK blocks in an ACK: two NOPs, the
// option's kind and length, and four blocks (no timestamps take room).
const sackOptMax = 4 + 4*8

// sackLocked writes into b (sackOptMax bytes) the SACK option of an ACK
// of ack (RFC 2018): the blocks of what the splice keeps beyond it, the
// one holding the last segment kept first, then the others from the
// highest down, at most four; it returns the option's length, 0 for
// none (SACK not permitted, nothing kept). A FIN kept counts as a byte.
func (s *splice) sackLocked(b []byte, ack uint32) int {
	if !s.sackOK || len(s.ooo) == 0 {
		return 0
	}
	type block struct{ left, right uint32 }
	var ring [4]block // the highest runs not holding the last kept, ring[k%4]
	k := 0
	var last block // the run of the last segment kept
	haveLast := false
	emit := func(c block, isLast bool) {
		if int32(c.left-ack) < 0 {
			c.left = ack
		}
		if int32(c.right-c.left) <= 0 {
			return
		}
		if isLast {
			last, haveLast = c, true
		} else {
			ring[k%len(ring)] = c
			k++
		}
	}
	// The kept segments, by seq, merged into runs where they touch or
	// overlap: ooo is sorted by left edge, so a run ends only at a
	// segment that starts beyond the furthest end seen in it.
	var cur block
	curLast := false
	for i, g := range s.ooo {
		end := g.seq + uint32(len(g.data))
		if g.fin {
			end++
		}
		if i > 0 && int32(g.seq-cur.right) <= 0 {
			if int32(end-cur.right) > 0 {
				cur.right = end
			}
		} else {
			if i > 0 {
				emit(cur, curLast)
			}
			cur, curLast = block{g.seq, end}, false
		}
		curLast = curLast || g.seq == s.oooLast
	}
	emit(cur, curLast)
	var out [4]block
	n := 0
	if haveLast {
		out[0], n = last, 1
	}
	for j := k - 1; j >= 0 && j >= k-len(ring) && n < len(out); j-- {
		out[n] = ring[j%len(ring)]
		n++
	}
	blocks := out[:n]
	if len(blocks) == 0 {
		return 0
	}
	b[0], b[1], b[2], b[3] = 1, 1, 5, byte(2+8*len(blocks))
	for i, c := range blocks {
		binary.BigEndian.PutUint32(b[4+8*i:], c.left)
		binary.BigEndian.PutUint32(b[8+8*i:], c.right)
	}
	return 4 + 8*len(blocks)
}

// drainOOOLocked takes the segments kept out of order that the stream
// reached. It reports false when the host socket failed.
func (s *splice) drainOOOLocked() bool {
	for len(s.ooo) > 0 && int32(s.ooo[0].seq-s.rcvNxt) <= 0 && !s.finRcvd {
		g := s.ooo[0]
		s.ooo = s.ooo[1:]
		s.oooBytes -= len(g.data)
		s.u.unhold(len(g.data))
		d := s.rcvNxt - g.seq
		if int(d) < len(g.data) && !s.takeLocked(g.data[d:]) {
			return false
		}
		if g.fin && g.seq+uint32(len(g.data)) == s.rcvNxt {
			s.rcvNxt++
			s.finRcvd = true
			s.shutLocked()
		}
	}
	if len(s.ooo) == 0 || s.finRcvd {
		s.u.unhold(s.oooBytes)
		s.ooo, s.oooBytes = nil, 0
	}
	return true
}

// takeLocked writes data from the container to the host socket, or keeps
// what it does not take now, within the window. It reports false when the
// host socket failed.
func (s *splice) takeLocked(data []byte) bool {
	if s.shutWr {
		return true
	}
	if s.holdLocked(data) {
		s.rcvNxt += uint32(len(data))
		return true
	}
	if len(s.held) > 0 && !s.sendHeldLocked(false) {
		return false
	}
	if room := spliceWnd + 0xffff - len(s.over); len(data) > room {
		data = data[:max(room, 0)] // beyond the window: sent again
	}
	n := 0
	if len(s.over) == 0 {
		var err error
		n, err = sendHost(s.fd, data)
		if err != nil && err != unix.EAGAIN {
			s.failed = true
			return false
		}
	}
	if n < len(data) {
		// What the uplink has no room for is not taken: sent again.
		data = data[:n+s.u.holdUpTo(len(data)-n)]
	}
	s.rcvNxt += uint32(len(data))
	if n < len(data) {
		s.over = append(s.over, data[n:]...)
		if !s.flushing {
			// The poller says when there is room.
			s.flushing = true
			if s.u.poll.modify(s.fd, s.pollID, spliceWatchFlush) != nil {
				return false
			}
		}
	}
	return true
}

// holdMax is the most bytes a splice holds for the end of a batch: a
// reply of a request and response protocol, not a bulk transfer's
// segments, which go at once, uncopied.
const holdMax = 4096

// heldBufs are the buffers of held.
var heldBufs = sync.Pool{New: func() any { return new([holdMax]byte) }}

// holdLocked holds data, the container's next bytes, for the end of the
// gateway's batch, and reports whether it did. The gateway must end its
// batches (Uplink.EndBatch), nothing may wait for room in the host socket
// before data (over), and the bytes held must stay within holdMax and
// Config.MaxBuffered. A reply and the FIN after it in the same read from
// the container's port then go to the client as one segment, which the
// client takes in one wake-up and acknowledges with one ACK, not two; and
// the segments of one read, as one write.
func (s *splice) holdLocked(data []byte) bool {
	if !s.u.batchEnds.Load() || len(s.over) > 0 || len(s.held)+len(data) > holdMax || !s.u.holdIfRoom(len(data)) {
		return false
	}
	if s.held == nil {
		s.held = heldBufs.Get().(*[holdMax]byte)[:0]
	}
	s.held = append(s.held, data...)
	if !s.pending {
		s.pending = true
		s.u.pendMu.Lock()
		s.u.pend = append(s.u.pend, s)
		s.u.pendMu.Unlock()
	}
	return true
}

// sendHeld sends what the splice held at the end of the gateway's batch,
// and shuts the host socket's write side after it if the container's FIN
// came: the bytes are sent with MSG_MORE, and the kernel puts the FIN on
// the segment that holds them (tcp_send_fin), which goes when it does.
func (s *splice) sendHeld() {
	s.mu.Lock()
	s.pending = false
	if s.state == spliceDone {
		s.mu.Unlock()
		return
	}
	if len(s.held) > 0 && !s.sendHeldLocked(s.finRcvd) {
		s.mu.Unlock()
		s.abort(false, true, "writing to the host socket failed") // the client is gone
		return
	}
	if !s.discardLocked(false) { // what input left until the bytes went
		s.mu.Unlock()
		s.abort(false, true, "discarding from the host socket failed")
		return
	}
	s.shutLocked()
	done := s.doneLocked()
	// Done, its timer stopped: the container's FIN, held for its delayed
	// acknowledgement, has it now.
	s.unlockAcking(done && s.ackDue, done)
}

// sendHeldLocked writes the bytes held to the host socket, with MSG_MORE
// if more, and keeps what it has no room for in over, as takeLocked does;
// it reports false when the socket failed.
func (s *splice) sendHeldLocked(more bool) bool {
	n, err := sendHostFlags(s.fd, s.held, more)
	if err != nil && err != unix.EAGAIN {
		s.failed = true
		return false // the abort gives back the bytes held
	}
	s.u.unhold(n)
	rest := len(s.held) - n
	if rest > 0 {
		// Counted already: they move from held to over.
		s.over = append(s.over, s.held[n:]...)
	}
	s.dropHeldLocked()
	if rest > 0 && !s.flushing {
		s.flushing = true
		if s.u.poll.modify(s.fd, s.pollID, spliceWatchFlush) != nil {
			return false
		}
	}
	return true
}

// dropHeldLocked empties held, and gives its buffer back.
func (s *splice) dropHeldLocked() {
	if s.held != nil {
		heldBufs.Put((*[holdMax]byte)(s.held[:holdMax]))
		s.held = nil
	}
}

// shutLocked shuts the host socket's write side once the container's FIN
// came and every byte before it went.
func (s *splice) shutLocked() {
	if s.finRcvd && len(s.over) == 0 && len(s.held) == 0 && !s.shutWr && s.state != spliceDone {
		s.shutWr = true
		rawShutdown(s.fd, unix.SHUT_WR)
	}
}

// doneLocked marks the splice done when both sides closed and the
// container has our FIN.
func (s *splice) doneLocked() bool {
	if s.state == spliceOpen && s.finAcked && s.shutWr {
		s.stopLocked()
		return true
	}
	return false
}

// stopLocked marks the splice done and stops its timers.
func (s *splice) stopLocked() {
	s.state = spliceDone
	// What it kept goes, and so does the uplink's count of it.
	s.u.unhold(len(s.over) + len(s.held) + s.oooBytes)
	s.over, s.ooo, s.oooBytes = nil, nil, 0
	s.dropHeldLocked()
	s.requeue = false
	s.disarmLocked()
	if s.dtimer != nil {
		s.dtimer.Stop()
		s.dtimerSet = false
	}
}

func sendHost(fd int, b []byte) (int, error) { return sendHostFlags(fd, b, false) }

// sendHostFlags is sendHost, with MSG_MORE if more: the kernel keeps a
// segment that is not full for what comes next (a FIN), as TCP_CORK does.
func sendHostFlags(fd int, b []byte, more bool) (int, error) {
	flags := uintptr(unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL)
	if more {
		flags |= unix.MSG_MORE
	}
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), flags, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}

// flush writes the bytes kept for the host socket, now that the poller
// says it has room, and opens the window again once they all went.
func (s *splice) flush() {
	s.mu.Lock()
	if s.state == spliceDone || !s.flushing {
		s.mu.Unlock()
		return
	}
	for len(s.over) > 0 {
		n, err := sendHost(s.fd, s.over)
		if err == unix.EAGAIN {
			s.mu.Unlock()
			return // the next room
		}
		if err != nil {
			s.failed = true
			s.mu.Unlock()
			s.abort(false, true, "writing to the host socket failed")
			return
		}
		s.over = s.over[n:]
		s.u.unhold(n)
	}
	s.over, s.flushing = nil, false
	if s.u.poll.modify(s.fd, s.pollID, spliceWatch) != nil {
		s.mu.Unlock()
		s.abort(true, true, "watching the host socket failed")
		return
	}
	s.shutLocked()
	done := s.doneLocked()
	var seq, ack, prev uint32
	var wnd uint16
	var sack sackOpt
	if !done {
		seq, ack, wnd, prev = s.ackLocked()
		sack = s.sackOptLocked(ack)
	}
	s.mu.Unlock()
	if done {
		s.finish()
		return
	}
	s.sendAck(seq, ack, wnd, prev, true, &sack) // the window opens
}

// abort ends the splice at once, for the reason why: resetHost resets the
// client (else its socket closes), resetCtr the container.
func (s *splice) abort(resetHost, resetCtr bool, why string) {
	s.abortIn(anyState, resetHost, resetCtr, why)
}

// anyState is abortIn's state of a splice in any state.
const anyState spliceState = 0xff

// abortIn is abort of a splice in the state in (or in any, anyState), and
// reports whether it ended the splice: not one done already, or in
// another state.
func (s *splice) abortIn(in spliceState, resetHost, resetCtr bool, why string) bool {
	s.mu.Lock()
	if s.state == spliceDone || in != anyState && s.state != in {
		s.mu.Unlock()
		return false
	}
	if s.out {
		s.u.log.Debug("hostnet: outbound flow ends", "ctr", s.to, "dst", s.from, "why", why)
	} else {
		s.u.log.Debug("hostnet: published port: flow ends", "client", s.from, "ctr", s.to, "why", why)
	}
	was := s.state
	s.stopLocked()
	open := s.openedLocked()
	// A reset at the highest sequence number sent: sndNxt moves back
	// at a timeout, and the container may hold all that was sent.
	seq, ack := s.sndMax, s.rcvNxt
	if was == spliceSynSent {
		seq = s.iss + 1
	}
	if resetHost && s.fd >= 0 {
		rawLinger0(s.fd)
	}
	s.closeLocked()
	// An outbound flow that never opened leaves no entry behind: a new
	// SYN from the container starts afresh, with its own host socket's
	// tuple as the reply.
	untrack := s.out && was.handshaking() && s.entry != 0
	s.mu.Unlock()
	if resetCtr {
		flags := uint8(conntrack.TCPRst | conntrack.TCPAck)
		if was == spliceSynSent {
			flags, ack = conntrack.TCPRst, 0
		}
		s.send(seq, ack, flags, 0, nil, nil, 0)
	}
	open(false)
	if untrack {
		s.u.tbl.Load().DeleteID(0, s.key, s.entry)
	}
	s.finish()
	return true
}

// closeLocked closes the host socket of a done splice, once.
func (s *splice) closeLocked() {
	if s.fd >= 0 {
		s.u.poll.forget(s.pollID)
		rawClose(s.fd)
		s.fd = -1
	}
}

// finish releases a done splice: its host socket, its place in the
// uplink's tables.
func (s *splice) finish() {
	s.mu.Lock()
	done := s.finished
	s.finished = true
	s.closeLocked()
	f := s.f
	s.mu.Unlock()
	if done {
		return
	}
	s.u.smu.Lock()
	if s.u.splices[s.key] == s {
		delete(s.u.splices, s.key)
	}
	s.u.smu.Unlock()
	if f != nil {
		f.ended()
	}
}

// toSplice hands a TCP packet from a container to its splice, and reports
// whether there was one.
func (u *Uplink) toSplice(pkt []byte) bool {
	ihl := int(pkt[0]&0xf) * 4
	if ihl < 20 || len(pkt) < ihl+tcpMinSize {
		return false
	}
	t := tcpSeg(pkt[ihl:])
	key := conntrack.Tuple{
		Src: netip.AddrFrom4([4]byte(pkt[12:16])), Dst: netip.AddrFrom4([4]byte(pkt[16:20])),
		SrcPort: t.srcPort(), DstPort: t.dstPort(), Proto: conntrack.ProtoTCP,
	}
	u.smu.RLock()
	s := u.splices[key]
	u.smu.RUnlock()
	if s == nil {
		return false
	}
	if doff := t.dataOff(); doff >= tcpMinSize && doff <= len(t) {
		s.input(t[:doff], t.payload())
	}
	return true
}
