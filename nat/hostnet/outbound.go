package hostnet

import (
	"errors"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// outboundTCP starts carrying a container's new TCP connection to its
// destination over a host socket: pkt, decoded as p, is the connection's
// SYN, and has no splice of its own. The host socket
// connects first, and the container is answered as the network would
// answer it: our SYN-ACK once the host connected (the splice then carries
// the flow as a published port's, see splice), a reset when refused, ICMP
// unreachable when unreachable, nothing when the destination stayed
// silent. It runs on the gateway's goroutine and never waits: a
// connection that did not complete within connect's system call (as one
// on the same machine does) completes on the poller's.
//
// A SYN the uplink cannot carry now is reset (the destination is the
// host's own loopback, the container has its cap of flows, conntrack
// refuses it), or dropped when maxInFlight connections are being made
// already: the container sends it again.
func (u *Uplink) outboundTCP(p *conntrack.Packet, pkt []byte) {
	u.mu.Lock()
	closed := u.closed
	u.mu.Unlock()
	if closed {
		return
	}
	ctr := netip.AddrPortFrom(p.Tuple.Src, p.Tuple.SrcPort)
	named := netip.AddrPortFrom(p.Tuple.Dst, p.Tuple.DstPort) // the destination as the container named it
	s := u.spliceOf(-1, named, ctr, false)
	s.out, s.state = true, spliceConnecting
	s.rcvNxt, s.rcvAcked = p.TCP.Seq+1, p.TCP.Seq
	s.synOptsLocked(tcpSeg(pkt[p.L4Off:]).options())
	s.sndWnd = uint32(p.TCP.Window) // not scaled in a SYN
	s.syn = append([]byte(nil), pkt[:p.Len]...)
	// The splice takes the flow's segments from now on, a resent SYN's
	// too, so the connection is made once. Each step below takes what
	// it needs under s.mu, where a reset from the container may have
	// ended the splice meanwhile (abort): what was taken then goes back.
	u.smu.Lock()
	if u.splices[s.key] != nil {
		u.smu.Unlock()
		return // one came meanwhile
	}
	u.splices[s.key] = s
	u.smu.Unlock()
	dst, v := u.hostDst(named)
	if v != dstOK || !u.reserve(ctr.Addr()) {
		s.abort(false, true, "refused by the uplink")
		return
	}
	// still locks s and reports true while it is connecting; else it
	// unlocks, and gives back the place reserved and what undo releases.
	still := func(undo func()) bool {
		s.mu.Lock()
		if s.state == spliceConnecting {
			return true
		}
		s.mu.Unlock()
		undo()
		u.unreserve(ctr.Addr())
		return false
	}
	// A SYN the table has no room for (every entry assured) is dropped
	// before the host connects, as the kernel's conntrack drops it: the
	// destination hears nothing of it, nor of its retries. Room made by
	// evicting a flow that is not assured ends that flow now.
	if tbl := u.tbl.Load(); tbl != nil {
		evicted, id, ok := tbl.MakeRoom(0, p.Tuple)
		if !ok {
			u.stats.DropTableFull.Add(1)
			u.unreserve(ctr.Addr())
			s.abort(false, false, "conntrack has no room for the flow")
			return
		}
		if id != 0 {
			u.gone(evicted, id)
		}
	}
	if !u.connecting.take(ctr.Addr()) {
		u.stats.DropInFlight.Add(1)
		u.unreserve(ctr.Addr())
		s.abort(false, false, "too many connections being made")
		return
	}
	if !still(func() { u.connecting.give(ctr.Addr()) }) {
		return
	}
	s.onOpen = func(ok bool) {
		u.connecting.give(ctr.Addr())
		if ok {
			u.stats.TCPOpened.Add(1)
		}
	}
	s.mu.Unlock()
	fd, peek, err := u.connectTCP(dst)
	if err != nil {
		u.unreserve(ctr.Addr())
		if se := (*os.SyscallError)(nil); !u.socketFailed("TCP", err) && (!errors.As(err, &se) || se.Syscall != "connect") {
			// No socket, or no outbound address: the host's trouble, not
			// the network's answer, which the container hears as silence.
			u.warnOnce("socket", "hostnet: cannot make a host socket for a container's connection", "dst", dst, "err", err)
		}
		s.refuse(err)
		return
	}
	if !still(func() { rawClose(fd) }) {
		return
	}
	s.fd, s.peekOff = fd, peek
	s.mu.Unlock()
	local, err := rawGetsockname(fd)
	if err != nil {
		u.unreserve(ctr.Addr())
		s.abort(true, true, "the host socket has no address")
		return
	}
	reply := conntrack.Tuple{Src: named.Addr(), Dst: local.Addr(), SrcPort: named.Port(), DstPort: local.Port(), Proto: conntrack.ProtoTCP}
	res, ok := u.track(p, reply)
	if !ok {
		// Counted (track); the container hears nothing, as the
		// kernel's conntrack drops a SYN it has no room for, or finds
		// invalid: its next SYN may find room (early drop, expiry).
		u.unreserve(ctr.Addr())
		s.abort(true, false, "conntrack refused the flow")
		return
	}
	if !still(func() {
		if res.Created {
			u.tbl.Load().DeleteID(0, p.Tuple, res.ID)
		}
	}) {
		return
	}
	if res.Created {
		s.entry = res.ID
	}
	s.mu.Unlock()
	if entryTracked != nil {
		entryTracked(p.Tuple)
	}
	f, ok := u.addFlow(p.Tuple, ctr.Addr(), res.ID, func() {
		// Still connecting, the container has heard nothing, and hears
		// nothing now: its next SYN opens the flow afresh, as through
		// the kernel's NAT, whose flushed or evicted entry leaves the
		// container's SYN sent again to make a new one. A reset would
		// refuse a connection no destination refused.
		if !s.abortIn(spliceConnecting, true, false, "its entry left the table") {
			s.abort(true, true, "its entry left the table")
		}
	}, nil)
	if !ok {
		s.abort(true, true, "the uplink is closed, or the flow is carried already")
		return
	}
	s.mu.Lock()
	if s.state != spliceConnecting {
		// Ended before it had its flow, which it did not release.
		s.mu.Unlock()
		f.ended()
		return
	}
	s.f = f
	// A destination on this machine has often answered already: the
	// handshake ran within connect's system call. Asking again says so
	// (0), or that it goes on (EALREADY), or how it failed; connected,
	// the container is answered now, not after a round through the
	// poller, and the socket is watched without EPOLLOUT from the start.
	watch, connected := uint32(spliceWatchFlush), false
	switch err := rawConnect4(fd, dst); err {
	case nil, unix.EISCONN:
		watch, connected = spliceWatch, true
	case unix.EALREADY, unix.EINTR:
	default:
		s.mu.Unlock()
		s.refuse(os.NewSyscallError("connect", err))
		return
	}
	if err := s.watch(watch); err != nil {
		s.mu.Unlock()
		s.abort(true, true, "watching the host socket failed")
		return
	}
	if !connected {
		s.setTimerLocked(u.cfg.ConnectTimeout) // the poller says when it connects
		s.mu.Unlock()
		return
	}
	s.synAckDueLocked()
	s.mu.Unlock()
	s.sendSynOrRequeue()
}

// entryTracked, when not nil (tests), is called with a container
// connection's tuple between the making of its entry and the registering
// of its flow.
var entryTracked func(conntrack.Tuple)

// resetStray answers a container's TCP segment of no flow as a host with
// no such connection does (RFC 9293, 3.10.7.1): with a reset whose
// sequence number is the segment's acknowledgement. A segment of a flow
// that ended (a FIN sent again after our last ACK was lost, a late
// retransmission) is one. Every valid segment but a SYN (which makes a
// flow) and a reset (which draws nothing) carries an ACK. p is the
// segment, decoded.
func (u *Uplink) resetStray(p *conntrack.Packet) {
	if p.TCP.Flags&(conntrack.TCPRst|conntrack.TCPAck) != conntrack.TCPAck {
		return
	}
	u.stats.TCPStrayReset.Add(1)
	from := netip.AddrPortFrom(p.Tuple.Dst, p.Tuple.DstPort)
	to := netip.AddrPortFrom(p.Tuple.Src, p.Tuple.SrcPort)
	u.sendTCP(from, to, 0, p.TCP.Ack, 0, conntrack.TCPRst, 0, nil, nil, 0)
}

// noRoute answers the first packet of a datagram flow (UDP, echo) whose
// socket's connect failed with err as a router with no route answers it:
// ICMP network or host unreachable (ENETUNREACH, EHOSTUNREACH), from the
// gateway. Other failures are silent (EACCES: a broadcast destination).
func (u *Uplink) noRoute(pkt []byte, err error) {
	if c := unreachableCode(err); c == 0 || c == 1 {
		u.sendUnreachable(pkt, uint8(c))
	}
}

// sendUnreachable sends the container an ICMP destination unreachable
// with code about pkt, one of its packets, from the gateway.
func (u *Uplink) sendUnreachable(pkt []byte, code uint8) {
	u.sendUnreachableFrom(pkt, u.cfg.Gateway, code)
}

// sendUnreachableFrom is sendUnreachable from the address from, within
// the rate Linux sends such errors at (nat.ICMPLimit): the uplink answers
// for the gateway, and a container sending again and again must not draw
// an error each time.
func (u *Uplink) sendUnreachableFrom(pkt []byte, from netip.Addr, code uint8) {
	if len(pkt) < 20 || !u.icmpLimit.Allow(netip.AddrFrom4([4]byte(pkt[12:16])), 3, code, int64(time.Since(u.epoch))) {
		return
	}
	buf := make([]byte, 576)
	msg, err := nat.Unreachable(buf, pkt, from, code)
	if err == nil {
		u.ln.queue(msg, bridgeNone)
	}
}

// connectTCP starts connecting a new host socket to dst, and returns it
// with the options of a splice's (sockOpts: peek says it peeks from its
// offset), from the outbound address when one is set (not to the host's
// loopback). The socket is non-blocking: the connection completes, or
// fails, when it becomes writable; err is a failure to start.
func (u *Uplink) connectTCP(dst netip.AddrPort) (fd int, peek bool, err error) {
	err = u.cfg.Namespace(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		return os.NewSyscallError("socket", err)
	})
	if err != nil {
		return -1, false, err
	}
	if peek, err = sockOpts(fd, false); err != nil {
		rawClose(fd)
		return -1, false, err
	}
	if a := u.cfg.OutboundAddr; a.IsValid() && !dst.Addr().IsLoopback() {
		// The port is the connection's to choose, per destination.
		rawSetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := rawBind4(fd, netip.AddrPortFrom(a, 0)); err != nil {
			rawClose(fd)
			return -1, false, os.NewSyscallError("bind", err)
		}
	}
	switch err := rawConnect4(fd, dst); err {
	case nil, unix.EINPROGRESS, unix.EINTR: // EINTR: it goes on regardless
		return fd, peek, nil
	default:
		rawClose(fd)
		return -1, false, os.NewSyscallError("connect", err)
	}
}
