package hostnet

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// SetPeekOffset makes the published ports made from now on (and their
// splices: each port's listener decides for them) peek with SO_PEEK_OFF
// (on, where the kernel has it) or by skipping the bytes sent, as on
// kernels before 6.10; restore puts the last choice back.
func SetPeekOffset(on bool) (restore func()) {
	old := peekOffs.Load()
	v := int32(-1)
	if on {
		v = 0 // found out again
	}
	peekOffs.Store(v)
	return func() { peekOffs.Store(old) }
}

// SetAckDelay makes splices delay their ACKs by d; restore puts the
// last delay back.
func SetAckDelay(d time.Duration) (restore func()) {
	old := ackDelay
	ackDelay = d
	return func() { ackDelay = old }
}

// SetMinRTO makes the splices started from now on wait d before their
// first retransmission; restore puts the last timeout back. Call it before
// the uplink starts, and restore it after the uplink closes.
func SetMinRTO(d time.Duration) (restore func()) {
	old := spliceMinRTO
	spliceMinRTO = d
	return func() { spliceMinRTO = old }
}

// SetResolvConfPath makes New (and the DNS forwarder's watch) read p as
// /etc/resolv.conf; restore puts the last path back.
func SetResolvConfPath(p string) (restore func()) {
	old := resolvConfPath
	resolvConfPath = p
	return func() { resolvConfPath = old }
}

// SkippingPeeks counts the peeks so far that skipped bytes in flight, as
// splices without SO_PEEK_OFF do.
func SkippingPeeks() int64 { return skippingPeeks.Load() }

// EmptyPeeks counts the reads of host sockets so far that found nothing.
func EmptyPeeks() int64 { return emptyPeeks.Load() }

// SetISN makes the splices made from now on start their sequence numbers
// at iss; restore puts the secret, clocked ones back. uses counts the
// splices that did.
func SetISN(iss uint32) (restore func(), uses *atomic.Int64) {
	uses = new(atomic.Int64)
	isnOf = func(netip.AddrPort, netip.AddrPort) uint32 { uses.Add(1); return iss }
	return func() { isnOf = isn }, uses
}

// StallLink holds the delivery of u's link to the gateway for d, as a
// busy gateway would: meanwhile frames wait in its queue, and a full
// queue refuses them.
func StallLink(u *Uplink, d time.Duration) {
	u.ln.dmu.Lock()
	time.Sleep(d)
	u.ln.dmu.Unlock()
}

// TCPSegment is a TCP segment from src to dst with no options or
// payload, with its checksum: what a raw socket sends.
func TCPSegment(src, dst netip.AddrPort, seq, ack uint32, flags uint8, wnd uint16) []byte {
	b := make([]byte, 40)
	ipv4Header(b, len(b), conntrack.ProtoTCP, defaultTTL, src.Addr(), dst.Addr())
	putTCPHeader(b[20:], src.Port(), dst.Port(), seq, ack, flags, wnd, tcpMinSize)
	binary.BigEndian.PutUint16(b[36:], ^nat.Sum(b[20:], pseudo(b, conntrack.ProtoTCP, tcpMinSize)))
	return b[20:]
}

// SetSweepInterval makes the uplinks started from now on check their
// flows against the table every d; restore puts the last interval back.
func SetSweepInterval(d time.Duration) (restore func()) {
	old := sweepInterval
	sweepInterval = d
	return func() { sweepInterval = old }
}

// SetEventBuffer makes the uplinks attached from now on subscribe to the
// table's destroy events with a buffer of n; restore puts the last size
// back.
func SetEventBuffer(n int) (restore func()) {
	old := eventBuffer
	eventBuffer = n
	return func() { eventBuffer = old }
}

// PollerWatches is how many sockets the uplink's poller delivers the
// events of: every splice's, datagram flow's and published port's.
func PollerWatches(u *Uplink) int {
	u.poll.mu.Lock()
	defer u.poll.mu.Unlock()
	return len(u.poll.subs)
}

// InternalState is the size of each of u's tables of flows, and of what
// they hold: all zero once u carries no flow, but for the poller's
// watches of the published ports' sockets.
func InternalState(u *Uplink) map[string]int {
	u.mu.Lock()
	m := map[string]int{
		"flows": len(u.flows), "unseen": len(u.unseen), "udp": len(u.udp), "udpIn": len(u.udpIn),
		"pings": len(u.pings), "dgOpening": len(u.dgOpening), "inbound": len(u.inbound), "perSrc": u.perSrc.n,
	}
	u.mu.Unlock()
	m["dialing"], m["connecting"] = u.dialing.len(), u.connecting.len()
	u.smu.RLock()
	m["splices"] = len(u.splices)
	u.smu.RUnlock()
	u.pendMu.Lock()
	m["pend"] = len(u.pend)
	u.pendMu.Unlock()
	m["held"] = int(u.held.Load())
	m["pollerWatches"] = PollerWatches(u)
	return m
}
