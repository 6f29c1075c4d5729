package conntrack

import "time"

// TCPState is the state of a tracked TCP connection, with the kernel's
// names and meanings.
type TCPState uint8

const (
	TCPNone        TCPState = iota // no segment seen yet
	TCPSynSent                     // a SYN seen
	TCPSynRecv                     // the SYN/ACK seen
	TCPEstablished                 // the ACK of the SYN/ACK seen, or a connection picked up mid-stream
	TCPFinWait                     // a FIN seen
	TCPCloseWait                   // the ACK of that FIN seen
	TCPLastAck                     // FINs seen both ways
	TCPTimeWait                    // the last ACK seen
	TCPClose                       // closed by RST
	TCPSynSent2                    // a SYN from the reply side too: simultaneous open
	tcpInvalid                     // the table's "invalid" (sIV)
	tcpIgnore                      // the table's "ignore" (sIG)
)

var tcpStateNames = [...]string{
	TCPNone:        "NONE",
	TCPSynSent:     "SYN_SENT",
	TCPSynRecv:     "SYN_RECV",
	TCPEstablished: "ESTABLISHED",
	TCPFinWait:     "FIN_WAIT",
	TCPCloseWait:   "CLOSE_WAIT",
	TCPLastAck:     "LAST_ACK",
	TCPTimeWait:    "TIME_WAIT",
	TCPClose:       "CLOSE",
	TCPSynSent2:    "SYN_SENT2",
}

// String returns the state's name as conntrack -L prints it.
func (s TCPState) String() string {
	if int(s) < len(tcpStateNames) {
		return tcpStateNames[s]
	}
	return "INVALID"
}

// closing reports whether the connection is being torn down; assured
// entries in these states may still be evicted when the table is full.
func (s TCPState) closing() bool {
	return s >= TCPFinWait && s <= TCPClose
}

func (t *Timeouts) tcp(s TCPState) time.Duration {
	switch s {
	case TCPSynSent:
		return t.TCPSynSent
	case TCPSynRecv:
		return t.TCPSynRecv
	case TCPEstablished:
		return t.TCPEstablished
	case TCPFinWait:
		return t.TCPFinWait
	case TCPCloseWait:
		return t.TCPCloseWait
	case TCPLastAck:
		return t.TCPLastAck
	case TCPTimeWait:
		return t.TCPTimeWait
	case TCPSynSent2:
		return t.TCPSynSent2
	}
	return t.TCPClose
}

// Segment classes, the rows of the transition table.
const (
	segSyn = iota
	segSynAck
	segFin
	segAck
	segRst
	segNone
	segClasses
)

func segClass(f uint8) uint8 {
	switch {
	case f&TCPRst != 0:
		return segRst
	case f&TCPSyn != 0 && f&TCPAck != 0:
		return segSynAck
	case f&TCPSyn != 0:
		return segSyn
	case f&TCPFin != 0:
		return segFin
	case f&TCPAck != 0:
		return segAck
	}
	return segNone
}

// tcpNext is the transition table: tcpNext[dir][segment class][state] is the
// next state. It follows the kernel's (nf_conntrack_proto_tcp.c), written
// out row by row from its documented transitions.
var tcpNext = func() (t [2][segClasses][TCPSynSent2 + 1]TCPState) {
	const (
		NO, SS, SR, ES, FW = TCPNone, TCPSynSent, TCPSynRecv, TCPEstablished, TCPFinWait
		CW, LA, TW, CL, S2 = TCPCloseWait, TCPLastAck, TCPTimeWait, TCPClose, TCPSynSent2
		IV, IG             = tcpInvalid, tcpIgnore
	)
	// Columns: NONE SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT
	// LAST_ACK TIME_WAIT CLOSE SYN_SENT2.
	t[Original] = [segClasses][TCPSynSent2 + 1]TCPState{
		segSyn:    {SS, SS, IG, IG, IG, IG, IG, SS, SS, S2}, // a SYN in TIME_WAIT or CLOSE reopens
		segSynAck: {IV, IV, SR, IV, IV, IV, IV, IV, IV, SR}, // the originator answers a SYN only in a simultaneous open
		segFin:    {IV, IV, FW, FW, LA, LA, LA, TW, CL, IV},
		segAck:    {ES, IV, ES, ES, CW, CW, TW, TW, CL, IV}, // an ACK with no entry: picked up mid-stream
		segRst:    {IV, CL, CL, CL, CL, CL, CL, CL, CL, CL},
		segNone:   {IV, IV, IV, IV, IV, IV, IV, IV, IV, IV},
	}
	t[Reply] = [segClasses][TCPSynSent2 + 1]TCPState{
		segSyn:    {IV, S2, IV, IV, IV, IV, IV, SS, IV, S2}, // simultaneous open; the server reopening from TIME_WAIT
		segSynAck: {IV, SR, IG, IG, IG, IG, IG, IG, IG, SR},
		segFin:    {IV, IV, FW, FW, LA, LA, LA, TW, CL, IV},
		segAck:    {IV, IG, SR, ES, CW, CW, TW, TW, CL, IG}, // an ACK to a SYN is ignored: the SYN/ACK may have been lost
		segRst:    {IV, CL, CL, CL, CL, CL, CL, CL, CL, CL},
		segNone:   {IV, IV, IV, IV, IV, IV, IV, IV, IV, IV},
	}
	return t
}()

// Per-direction flags of the window tracker.
const (
	tfWindowScale  = 1 << iota // the SYN carried a window scale option
	tfSACKPerm                 // the SYN carried SACK-permitted
	tfCloseInit                // this side sent the first FIN
	tfLiberal                  // do not check sequence numbers from this side
	tfDataUnacked              // this side sent data the other has not acknowledged
	tfMaxAckSet                // maxack holds an acknowledgment seen
	tfSimOpen                  // SYN_SENT2 was seen (flags[Original] only)
	tfChallengeAck             // a SYN was ignored in LAST_ACK (flags[Original] only)
)

// tcpRetransLimit is how many identical retransmissions make a connection
// fall back to the TCPMaxRetrans timeout (the kernel's
// nf_conntrack_tcp_max_retrans).
const tcpRetransLimit = 3

// tcpSide is what the window tracker knows of one direction's sender.
type tcpSide struct {
	end    uint32 // highest sequence number sent, plus one
	maxend uint32 // highest sequence number the receiver allows
	maxwin uint32 // largest window the receiver advertised
	maxack uint32 // highest acknowledgment this side sent
}

// tcpConn is the TCP part of an entry, guarded by the entry's lock.
type tcpConn struct {
	side      [2]tcpSide
	scale     [2]uint8 // window scale of each side
	flags     [2]uint8 // tf* flags of each side
	state     TCPState
	lastDir   Dir
	lastClass uint8
	retrans   uint8
	lastWin   uint16
	lastScale uint8 // window scale of the last ignored SYN
	lastOpts  uint8 // tfWindowScale, tfSACKPerm of the last ignored SYN (in padding: the entry stays 200 bytes)
	lastSeq   uint32
	lastAck   uint32
	lastEnd   uint32
}

// tcpVerdict is what the state machine decided about one segment.
type tcpVerdict uint8

const (
	tcpAccept    tcpVerdict = iota // valid: state and timeout updated
	tcpIgnored                     // let through, changes nothing
	tcpBad                         // invalid for the state: changes nothing
	tcpReopen                      // a SYN on a closed connection: replace the entry
	tcpKill                        // a RST before any reply: the entry goes now
	tcpBadShrink                   // invalid, and the entry's timeout falls to the duration returned, if longer
)

// segEnd is the sequence number after the segment: SYN and FIN count as one
// byte each.
func segEnd(h *TCPHeader) uint32 {
	end := h.Seq + uint32(h.DataLen)
	if h.Flags&TCPSyn != 0 {
		end++
	}
	if h.Flags&TCPFin != 0 {
		end++
	}
	return end
}

// start sets up the tracker for the first segment of a new entry and
// reports whether that segment may create one: a SYN, or (unless noPickup)
// a segment of a connection already running, which is then tracked
// liberally because its history is unknown.
func (c *tcpConn) start(h *TCPHeader, noPickup, liberal bool) bool {
	*c = tcpConn{lastClass: segNone}
	s := &c.side[Original]
	switch tcpNext[Original][segClass(h.Flags)][TCPNone] {
	case TCPSynSent:
		s.end = segEnd(h)
		s.maxend = s.end
		s.maxwin = max(uint32(h.Window), 1)
		c.options(Original, h)
	case TCPEstablished:
		if noPickup {
			return false
		}
		s.end = segEnd(h)
		s.maxwin = max(uint32(h.Window), 1)
		s.maxend = s.end + s.maxwin
		c.flags[Original] = tfSACKPerm | tfLiberal
		c.flags[Reply] = tfSACKPerm | tfLiberal
	default:
		return false
	}
	if liberal {
		c.flags[Original] |= tfLiberal
		c.flags[Reply] |= tfLiberal
	}
	return true
}

// initSender starts side d's window data from its SYN or SYN/ACK (Linux's
// tcp_init_sender). Scaling is settled on the reply side's SYN: RFC 7323
// lets it hold only if both sides offered it, and on a retransmitted SYN
// from the original side the reply side's options are not known yet.
func (c *tcpConn) initSender(h *TCPHeader, d Dir, end, win uint32) {
	c.side[d].end, c.side[d].maxend = end, end
	c.side[d].maxwin = max(win, 1)
	c.options(d, h)
	if d == Reply && (c.flags[d]&tfWindowScale == 0 || c.flags[1-d]&tfWindowScale == 0) {
		c.scale[d], c.scale[1-d] = 0, 0
	}
}

// options records the options of a SYN sent by side d.
func (c *tcpConn) options(d Dir, h *TCPHeader) {
	c.flags[d] &^= tfWindowScale | tfSACKPerm
	c.scale[d] = 0
	if h.WScale >= 0 {
		c.flags[d] |= tfWindowScale
		c.scale[d] = uint8(h.WScale)
	}
	if h.SACKPerm {
		c.flags[d] |= tfSACKPerm
	}
}

// segment runs the state machine for one segment going in dir. status is
// the entry's status before the segment; liberal is Config.TCPLiberal. It
// returns the verdict and, for tcpAccept, the timeout to set (zero: leave
// the timeout alone).
func (c *tcpConn) segment(h *TCPHeader, dir Dir, status Status, to *Timeouts, liberal bool) (tcpVerdict, time.Duration) {
	old := c.state
	class := segClass(h.Flags)
	next := tcpNext[dir][class][old]
	skipWindow := false

	switch next {
	case TCPSynSent:
		if old >= TCPTimeWait {
			// RFC 1122: a SYN may reopen a connection in TIME_WAIT;
			// the kernel lets it reopen a closed one too.
			return tcpReopen, 0
		}
	case tcpIgnore:
		if class == segSynAck && c.lastClass == segSyn && c.lastDir != dir && h.Ack == c.lastEnd {
			// The SYN/ACK answers the SYN we ignored: the ends are in
			// sync and we are not. Resynchronise from that SYN.
			// The SYN's sender takes its flags from that SYN alone: a
			// picked-up connection's liberal tracking ends for it, unless
			// the table is liberal (Linux's tcp_be_liberal, a setting
			// apart). The other side keeps its own (nf_ct_tcp_state_reset).
			o := c.lastDir
			c.side[o] = tcpSide{end: c.lastEnd, maxend: c.lastEnd, maxwin: max(uint32(c.lastWin), 1)}
			c.scale[o], c.flags[o] = c.lastScale, c.lastOpts
			if liberal {
				c.flags[o] |= tfLiberal
			}
			c.side[dir], c.scale[dir] = tcpSide{}, 0
			c.flags[dir] &= tfLiberal
			old, next = TCPSynSent, TCPSynRecv
			break
		}
		c.lastDir, c.lastClass = dir, class
		c.lastSeq, c.lastAck, c.lastEnd, c.lastWin = h.Seq, h.Ack, segEnd(h), h.Window
		if class == segSyn {
			c.lastScale, c.lastOpts = 0, 0
			if h.WScale >= 0 {
				c.lastScale, c.lastOpts = uint8(h.WScale), tfWindowScale
			}
			if h.SACKPerm {
				c.lastOpts |= tfSACKPerm
			}
			// Linux notes the SYN in last_flags, afresh: what it held
			// goes, the mark of a simultaneous open with it. The other
			// side may answer the SYN with a challenge ACK (RFC 5961),
			// which in LAST_ACK would pass for the ACK of its FIN.
			c.flags[Original] &^= tfChallengeAck | tfSimOpen
			if old == TCPLastAck {
				c.flags[Original] |= tfChallengeAck
			}
		}
		return tcpIgnored, 0
	case TCPTimeWait:
		if old == TCPLastAck && class == segAck && c.lastClass == segSyn && c.lastDir != dir &&
			c.flags[Original]&tfChallengeAck != 0 {
			// The challenge ACK to the SYN let through, not the ACK of
			// the last FIN (Linux's IP_CT_EXP_CHALLENGE_ACK): the state
			// stays, and only this one ACK is taken for it.
			c.flags[Original] &^= tfChallengeAck
			return tcpIgnored, 0
		}
	case TCPSynSent2:
		c.flags[Original] |= tfSimOpen
	case TCPSynRecv:
		if dir == Reply && class == segAck && c.flags[Original]&tfSimOpen != 0 {
			next = TCPEstablished
		}
	case tcpInvalid:
		return tcpBad, 0
	case TCPClose:
		if class != segRst {
			break
		}
		if old.closing() {
			// The connection is closing (Linux's tcp_can_early_drop):
			// the tuple may be in use by a new connection already, so
			// maxack and the windows say nothing of where its reset
			// belongs. A reset refused here would keep the entry in its
			// closing state's timeout; Linux takes it unchecked.
			skipWindow = true
			break
		}
		// What the other side acknowledged says where a reset belongs,
		// unless a SYN let through since made it stale.
		established := old == TCPEstablished && status&Assured != 0
		if c.flags[1-dir]&tfMaxAckSet != 0 && c.lastClass != segSyn {
			if h.Seq == 0 && !established {
				// Most likely the answer to a SYN let through, which
				// a later ACK hid from lastClass: the window check
				// alone judges it, as Linux's nf_conntrack_tcp_packet.
				break
			}
			maxack := c.side[1-dir].maxack
			if seqBefore(h.Seq, maxack) {
				// Below it: stale or forged. Liberal tracking does not
				// exempt a reset: Linux lets such resets through only
				// under nf_conntrack_tcp_ignore_invalid_rst.
				return tcpBad, 0
			}
			// An established connection's reset not at it, nor just
			// after this side's last segment (a train of them), leaves
			// the state as it is (challenge ACK, RFC 5961).
			if !established || h.Seq == maxack ||
				c.lastClass == segAck && c.lastDir == dir && h.Seq == c.lastEnd {
				break
			}
			next = old
		}
		if (status&SeenReply != 0 && c.lastClass == segSyn && c.lastDir != dir ||
			status&Assured == 0 && c.lastClass == segAck) && h.Ack == c.lastEnd {
			// A reset answering a SYN, or the ACK of a half-open
			// connection, that we let through: no window check. A
			// reset from the SYN's own sender answers nothing of it.
			skipWindow = true
		} else if old == TCPSynSent && c.lastClass == segAck && c.lastDir == Reply && h.Seq == c.lastAck {
			// A reset answering a challenge ACK to the SYN.
			skipWindow = true
		}
	}

	if !skipWindow {
		switch c.inWindow(h, dir, class, old) {
		case winIgnore:
			return tcpIgnored, 0
		case winInvalid:
			return c.invalidLocked(dir, class, status, to)
		}
	}

	c.lastDir, c.lastClass = dir, class
	c.state = next
	if old != next && next == TCPFinWait {
		c.flags[dir] |= tfCloseInit
	}

	if status&SeenReply == 0 {
		if h.Flags&TCPRst != 0 {
			// The only answer was a RST: there never was a connection.
			return tcpKill, 0
		}
		if class == segSyn && old == TCPSynSent {
			// A retransmitted SYN does not renew the timeout, or a client
			// that keeps reusing a port would keep a dead entry alive.
			return tcpAccept, 0
		}
	}

	d := to.tcp(next)
	switch {
	case c.retrans >= tcpRetransLimit && d > to.TCPMaxRetrans:
		d = to.TCPMaxRetrans
	case class == segRst:
		d = to.TCPClose
	case (c.flags[0]|c.flags[1])&tfDataUnacked != 0 && d > to.TCPUnacknowledged:
		d = to.TCPUnacknowledged
	case c.lastWin == 0 && d > to.TCPMaxRetrans:
		// A zero window: the peers are probing, not talking.
		d = to.TCPMaxRetrans
	}
	if status&SeenReply == 0 && next == TCPEstablished && d > to.TCPUnacknowledged {
		// Picked up mid-stream and not answered yet: perhaps no
		// connection at all (an ACK of one long gone, whose peer drops
		// it unanswered). As Linux (nf_conntrack_tcp_packet), it gets
		// the unacknowledged timeout, not ESTABLISHED's 5 days, until
		// the other side answers.
		d = to.TCPUnacknowledged
	}
	return tcpAccept, d
}

// assures reports whether a segment accepted in state old that led to the
// current state makes the connection assured: the handshake completed, or a
// picked-up connection was answered.
func (c *tcpConn) assures(old TCPState) bool {
	return (old == TCPSynRecv || old == TCPEstablished) && c.state == TCPEstablished
}

// maxAckWindowFloor is the least an acknowledgment may lag behind the
// receiver's highest sequence number and still count (Linux's
// MAXACKWINCONST): a sender that advertised small windows may still send
// an ACK delayed or reordered behind several windows' worth of data.
const maxAckWindowFloor = 66000

// winVerdict is what the window check made of a segment (Linux's
// nf_ct_tcp_action).
type winVerdict uint8

const (
	winAccept  winVerdict = iota // in the window: the tracked windows updated
	winIgnore                    // let through, changes nothing (NFCT_TCP_IGNORE)
	winInvalid                   // out of the window (NFCT_TCP_INVALID)
)

// inWindow is the kernel's window check (after Rooij, "Real stateful TCP
// packet filtering in IP Filter"): the segment must lie in the receiver's
// window and its acknowledgment in what the receiver has sent. It updates
// the tracked windows of an accepted segment. Since Linux 6.0 only a
// segment beyond the window, or acknowledging data not seen, is invalid;
// one behind it (data sent again, an ACK overly delayed) is ignored.
func (c *tcpConn) inWindow(h *TCPHeader, dir Dir, class uint8, state TCPState) winVerdict {
	sender, receiver := &c.side[dir], &c.side[1-dir]
	seq, ack, win, winRaw := h.Seq, h.Ack, uint32(h.Window), h.Window
	end := segEnd(h)

	sack := ack
	if c.flags[1-dir]&tfSACKPerm != 0 && h.HasSACK && seqAfter(h.SACKMax, ack) {
		sack = h.SACKMax
	}

	switch {
	case sender.maxwin == 0:
		// The first segment from this side.
		if h.Flags&TCPSyn != 0 {
			// A SYN/ACK answering the SYN, or a SYN of a simultaneous open.
			c.initSender(h, dir, end, win)
			if h.Flags&TCPAck == 0 {
				return winAccept
			}
		} else {
			// Mid-stream: learn what this segment tells.
			sender.end = end
			sender.maxwin = max(win<<c.scale[dir], 1)
			sender.maxend = end + sender.maxwin
			if receiver.maxwin == 0 {
				receiver.end, receiver.maxend = sack, sack
			} else if sack == receiver.end+1 {
				receiver.end++ // the answer to a keepalive probe
			}
		}
	case h.Flags&TCPSyn != 0 && (state == TCPSynSent || state == TCPSynRecv) && seqAfter(end, sender.end):
		// A new SYN or SYN/ACK with a higher sequence number, from either
		// side: the sender restarted (RFC 793), or the server answers
		// properly after a stale SYN/ACK that set up its side but was
		// refused. Start the sender afresh, as for its first SYN.
		c.initSender(h, dir, end, win)
		if dir == Reply && h.Flags&TCPAck == 0 {
			return winAccept
		}
	}

	if h.Flags&TCPAck == 0 || h.Flags&(TCPAck|TCPRst) == TCPAck|TCPRst && ack == 0 {
		// No acknowledgment (or a broken stack's RST|ACK with ack 0):
		// pretend it acknowledged everything.
		ack, sack = receiver.end, receiver.end
	}
	if h.Flags&TCPRst != 0 && seq == 0 && state == TCPSynSent {
		seq, end = sender.end, sender.end // a RST answering a SYN
	}

	maxAckWin := max(sender.maxwin, maxAckWindowFloor)
	ackOver := !seqBefore(sack, receiver.end+1)
	ackUnder := !seqAfter(sack, receiver.end-maxAckWin-1)
	seqUnder := receiver.maxwin != 0 && !seqAfter(end, sender.end-receiver.maxwin-1)
	switch {
	case !seqBefore(seq, sender.maxend+1):
		// Beyond the receiver's window. A sender that overshoots it by
		// no more than the receiver's largest window, in order
		// otherwise, is let through, and its end taken, so that the
		// receiver's ACK of those bytes is not beyond what it was sent.
		if receiver.maxwin != 0 && !seqUnder && !ackOver && !ackUnder &&
			end-sender.maxend+1 <= receiver.maxwin {
			sender.end = end
			c.flags[dir] |= tfDataUnacked
			return c.outOfWindow(dir, winIgnore)
		}
		return c.outOfWindow(dir, winInvalid)
	case ackOver:
		// It acknowledges data the other side has not sent.
		return c.outOfWindow(dir, winInvalid)
	case seqUnder, ackUnder:
		// Data already acknowledged, sent again, or an ACK overly
		// delayed: refusing it would keep the receiver from answering
		// it, which can leave a connection stuck after a lost ACK.
		return c.outOfWindow(dir, winIgnore)
	}

	if h.Flags&TCPSyn == 0 {
		win <<= c.scale[dir]
	}
	if swin := win + (sack - ack); sender.maxwin < swin {
		sender.maxwin = swin
	}
	if seqAfter(end, sender.end) {
		sender.end = end
		c.flags[dir] |= tfDataUnacked
	}
	if h.Flags&TCPAck != 0 {
		if c.flags[dir]&tfMaxAckSet == 0 || seqAfter(ack, sender.maxack) {
			sender.maxack = ack
			c.flags[dir] |= tfMaxAckSet
		}
	}
	if receiver.maxwin != 0 && seqAfter(end, sender.maxend) {
		receiver.maxwin += end - sender.maxend
	}
	if seqAfter(sack+win, receiver.maxend-1) {
		receiver.maxend = sack + win
		if win == 0 {
			receiver.maxend++
		}
	}
	if ack == receiver.end {
		c.flags[1-dir] &^= tfDataUnacked
	}
	if class == segAck {
		if c.lastDir == dir && c.lastSeq == seq && c.lastAck == ack && c.lastEnd == end && c.lastWin == winRaw {
			if c.retrans < 255 {
				c.retrans++
			}
		} else {
			c.lastSeq, c.lastAck, c.lastEnd, c.lastWin = seq, ack, end, winRaw
			c.retrans = 0
		}
	}
	return winAccept
}

// invalidLocked is the verdict on a segment from dir of class that failed
// the window check, as Linux's nf_tcp_handle_invalid: invalid, and for an
// assured connection where it is a FIN or RST answering an out-of-window
// FIN or RST from the other side, the endpoints and the tracker no longer
// agree on the sequence numbers, so the entry's timeout falls to the
// unacknowledged one (5 min) rather than stay ESTABLISHED's 5 days. The
// first such FIN or RST is remembered as the last segment seen.
func (c *tcpConn) invalidLocked(dir Dir, class uint8, status Status, to *Timeouts) (tcpVerdict, time.Duration) {
	if status&Assured == 0 || class != segFin && class != segRst {
		return tcpBad, 0
	}
	if c.lastDir != dir && (c.lastClass == segFin || c.lastClass == segRst) {
		return tcpBadShrink, to.TCPUnacknowledged
	}
	c.lastDir, c.lastClass = dir, class
	return tcpBad, 0
}

// outOfWindow is the verdict on a segment from side d that failed the
// window check: v, or accepted all the same from a liberal side (Linux's
// nf_tcp_log_invalid). The tracked windows are left as they are.
func (c *tcpConn) outOfWindow(d Dir, v winVerdict) winVerdict {
	if c.flags[d]&tfLiberal != 0 {
		return winAccept
	}
	return v
}
