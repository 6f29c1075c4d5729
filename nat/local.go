package nat

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// ICMP the gateway looks at.
const (
	icmpEchoRequest      = 8
	icmpRedirect         = 5
	codeProtoUnreachable = 2
	protoIGMP            = 2 // which Linux takes, and answers with no error
	codePortUnreachable  = 3
)

// flowTranslator is the gateway's conntrack.Translator. inside says the
// flow starts on the bridge.
type flowTranslator struct {
	g      *Gateway
	inside bool
}

var _ conntrack.Translator = (*flowTranslator)(nil)

// Translate chooses the reply tuple of a new flow:
//
//   - to a published port (an address of the gateway's, the uplink's or
//     its bridge address, as Docker's PREROUTING matches any local one,
//     and a publish rule), DNAT to the container; when the flow comes from
//     the bridge too (hairpin), also SNAT to the gateway's bridge address,
//     so the replies come back through the gateway; when the client's
//     port already reaches the container's port by another published
//     port, the client is shown with another port, as Linux's NAT shows it;
//   - from the subnet to anywhere else outside, masquerade to the uplink
//     address (unless turned off);
//   - anything else is not translated.
func (t *flowTranslator) Translate(tbl *conntrack.Table, zone conntrack.Zone, orig conntrack.Tuple) (conntrack.Tuple, conntrack.Status, error) {
	g := t.g
	own := g.isOwn(orig.Dst)
	// Only for the gateway's own addresses, as Docker's PREROUTING jumps
	// to DOCKER for dst-type LOCAL: a rule that names another host
	// address never takes the containers' traffic to that address.
	if m, _, ok := g.rules.MatchPublish(orig, own); ok && own {
		if t.inside {
			m.SrcAddr = g.subnet.Addr() // hairpin
		}
		reply, st, err := g.ports.Translate(tbl, zone, orig, m)
		if errors.Is(err, ErrPortsExhausted) && !m.SrcAddr.IsValid() {
			// The container port is taken for this client port (the
			// client reached it through another published port):
			// another source port, as Linux's POSTROUTING null
			// binding gives a flow whose reply tuple is taken.
			m.SrcAddr = orig.Src
			return g.ports.Translate(tbl, zone, orig, m)
		}
		return reply, st, err
	}
	if addrs := g.uplink.Addrs(); t.inside && len(addrs) > 0 && !g.subnet.Contains(orig.Dst) && !own {
		if m, _, ok := g.rules.MatchMasquerade(orig, addrs[0]); ok {
			return g.ports.Translate(tbl, zone, orig, m)
		}
	}
	reply, _ := orig.Reverse()
	return reply, 0, nil
}

// local handles a packet for the gateway itself: it answers pings and
// refuses UDP (port unreachable), TCP (RST) and other protocols
// (protocol unreachable) the way a host with no listener does.
func (g *Gateway) local(frame, pkt []byte, p *conntrack.Packet, inside bool) {
	g.stats.local.Add(1)
	ihl := int(pkt[0]&0x0f) * 4
	switch {
	case p.Tuple.Proto == conntrack.ProtoICMP && p.Tuple.ICMPType() == icmpEchoRequest:
		if Checksum(pkt[ihl:]) != 0 {
			g.stats.dropChecksum.Add(1)
			return
		}
		if EchoReply(pkt) != nil {
			g.stats.dropMalformed.Add(1)
			return
		}
		// Track the reply too, so the entry sees both directions.
		var r conntrack.Packet
		if r.Decode(pkt) == nil {
			g.table.Track(0, &r, nil)
		}
		g.stats.icmpSent.Add(1)
		g.sendBack(frame, netip.AddrFrom4([4]byte(pkt[16:20])), inside)
	case p.Tuple.Proto == conntrack.ProtoUDP:
		// From the address it was sent to, as Linux's __icmp_send
		// answers a packet it delivered locally (RTCF_LOCAL).
		g.sendErrorFrom(pkt, inside, netip.AddrFrom4([4]byte(pkt[16:20])), 3, codePortUnreachable, func(buf []byte, from netip.Addr) ([]byte, error) {
			return Unreachable(buf, pkt, from, codePortUnreachable)
		})
	case p.Tuple.Proto == conntrack.ProtoTCP && p.TCP.Flags&conntrack.TCPRst == 0:
		// No listener: refuse the connection as a host does, so the
		// client learns it at once. Tracking the RST ends the entry the
		// segment made.
		sc := &g.scratch[sideIndex(inside)]
		rst := tcpReset(sc.msg[Headroom:Headroom], pkt, &p.TCP)
		var r conntrack.Packet
		if r.Decode(rst) == nil {
			g.table.Track(0, &r, nil)
		}
		g.sendBack(sc.msg[:Headroom+len(rst)], netip.AddrFrom4([4]byte(rst[16:20])), inside)
	case p.Tuple.Proto != conntrack.ProtoICMP && p.Tuple.Proto != conntrack.ProtoTCP && p.Tuple.Proto != protoIGMP:
		// A protocol the gateway has no handler for: protocol
		// unreachable, as Linux's ip_protocol_deliver_rcu answers what
		// no protocol nor raw socket takes, from the address sent to.
		g.sendErrorFrom(pkt, inside, netip.AddrFrom4([4]byte(pkt[16:20])), 3, codeProtoUnreachable, func(buf []byte, from netip.Addr) ([]byte, error) {
			return Unreachable(buf, pkt, from, codeProtoUnreachable)
		})
	}
}

// tcpReset builds in buf (appending to buf[:0]) the RST that answers the
// IPv4 TCP segment pkt, whose header h holds, the way RFC 793 3.4 says a
// closed port answers: a segment that acknowledged something gets a RST
// with that sequence number; otherwise a RST|ACK acknowledging the segment.
func tcpReset(buf, pkt []byte, h *conntrack.TCPHeader) []byte {
	ihl := int(pkt[0]&0x0f) * 4
	b := append(buf[:0], make([]byte, 40)...)
	b[0], b[8], b[9] = 0x45, 64, byte(conntrack.ProtoTCP)
	binary.BigEndian.PutUint16(b[2:], 40)
	copy(b[12:16], pkt[16:20])
	copy(b[16:20], pkt[12:16])
	putIPv4Checksum(b)
	t := b[20:]
	copy(t[0:2], pkt[ihl+2:ihl+4])
	copy(t[2:4], pkt[ihl:ihl+2])
	t[12] = 5 << 4
	if h.Flags&conntrack.TCPAck != 0 {
		binary.BigEndian.PutUint32(t[4:], h.Ack)
		t[13] = conntrack.TCPRst
	} else {
		n := uint32(h.DataLen)
		if h.Flags&conntrack.TCPSyn != 0 {
			n++
		}
		if h.Flags&conntrack.TCPFin != 0 {
			n++
		}
		binary.BigEndian.PutUint32(t[8:], h.Seq+n)
		t[13] = conntrack.TCPRst | conntrack.TCPAck
	}
	binary.BigEndian.PutUint16(t[16:], ^Sum(t, pseudoHeaderSum(b[12:16], b[16:20], conntrack.ProtoTCP, len(t))))
	return b
}

// sendBack sends a packet the gateway originated to dst, on the side the
// packet that caused it came in by.
func (g *Gateway) sendBack(frame []byte, dst netip.Addr, inside bool) {
	send, mtu := g.uplink.Send, g.uplink.MTU()
	if inside {
		send, mtu = g.inside.send, g.inside.mtu
	}
	pkt := frame[Headroom:]
	if len(pkt) > mtu {
		// An answer to a reassembled request: fragmented, as Linux's
		// ICMP socket (IP_PMTUDISC_DONT) sends it.
		pkt[6] &^= 0x40
		putIPv4Checksum(pkt)
		g.fragment(frame, pkt, dst, mtu, send, &g.scratch[sideIndex(inside)])
		return
	}
	send(frame, dst, bridge.Offload{})
}

// sendError sends the ICMP error that build makes about pkt back to pkt's
// sender, from the gateway's address on the side pkt came in by. build
// refuses (ErrNoICMP) where no error may be sent: about ICMP errors, later
// fragments, broadcasts. typ and code are the error's: while the overall
// rate limit has nothing left, a flood of packets drawing errors costs no
// error built for nothing.
func (g *Gateway) sendError(pkt []byte, inside bool, typ, code uint8, build func(buf []byte, from netip.Addr) ([]byte, error)) {
	from := g.subnet.Addr()
	if !inside {
		addrs := g.uplink.Addrs()
		if len(addrs) == 0 {
			return // the uplink speaks for the host; it has no address to send from
		}
		from = addrs[0]
	}
	g.sendErrorFrom(pkt, inside, from, typ, code, build)
}

// sendErrorFrom is sendError from the address from.
func (g *Gateway) sendErrorFrom(pkt []byte, inside bool, from netip.Addr, typ, code uint8, build func(buf []byte, from netip.Addr) ([]byte, error)) {
	now := g.now() // monotonic, as jiffies
	if !g.icmpLimit.mayAllow(typ, code, now) {
		return
	}
	sc := &g.scratch[sideIndex(inside)]
	msg, err := build(sc.msg[Headroom:], from)
	if err != nil {
		return
	}
	dst := netip.AddrFrom4([4]byte(msg[16:20]))
	if !g.icmpLimit.Allow(dst, typ, code, now) {
		return
	}
	g.stats.icmpSent.Add(1)
	g.sendBack(sc.msg[:Headroom+len(msg)], dst, inside)
}

// TransportChecksumOK verifies the TCP or UDP checksum of the IPv4 packet
// pkt, whose header is ihl bytes and whose transport header follows whole
// (an IPv4 UDP checksum of zero is none). The gateway checks what would
// change a flow's state, and the host uplink a container's TCP segments.
func TransportChecksumOK(pkt []byte, ihl int, proto conntrack.Proto) bool {
	l4 := pkt[ihl:]
	if proto == conntrack.ProtoUDP && len(l4) >= 8 && cksumAt(l4, 6) == 0 {
		return true
	}
	return Sum(l4, pseudoHeaderSum(pkt[12:16], pkt[16:20], proto, len(l4))) == 0xffff
}

// ICMPLimit limits the ICMP errors a router sends (RFC 1812 4.3.2.8), as
// Linux limits its own: a second for each destination, in bursts of 6
// (icmp_ratelimit), and 1000 a second in all, in bursts of 50
// (icmp_msgs_per_sec); fragmentation needed is never limited (path MTU
// discovery). The gateway has one, and so may an uplink that answers for
// it (nat/hostnet). The zero value is ready; it is safe for concurrent
// use.
type ICMPLimit struct {
	mu     sync.Mutex // over both
	global tokenBucket
	peers  peerLimit
}

// Allow reports whether an ICMP error of type typ and code may go to dst
// at now, a monotonic time in nanoseconds, and counts it if so. As Linux
// since 6.9 does, the overall budget is looked at first and spent last,
// so a destination's own tokens are not spent on errors the overall
// limit refuses.
func (l *ICMPLimit) Allow(dst netip.Addr, typ, code uint8, now int64) bool {
	if typ == 3 && code == 4 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.global.ok(now) || !l.peers.allow(dst, now) {
		return false
	}
	l.global.tokens--
	return true
}

// mayAllow reports whether Allow may say yes to an error of type typ and
// code at now: the overall budget is not spent. It spends nothing, and
// lets a caller skip building an error Allow would refuse. Allow looks
// again, under the lock taken again: between the two another error may
// spend the last token, and an error sent costs the lock twice, which is
// cheaper than building every error a flood draws.
func (l *ICMPLimit) mayAllow(typ, code uint8, now int64) bool {
	if typ == 3 && code == 4 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.global.ok(now)
}

// peerLimit limits the ICMP errors the gateway sends to each destination,
// as Linux's inet_peer_xrlim_allow: a token a second, at most 6 saved, a
// destination not heard of for 6 s having them all. It remembers at most
// maxICMPPeers destinations; past that, one it cannot place is limited by
// the overall bucket only. ICMPLimit's lock guards it.
type peerLimit struct {
	peers   map[netip.Addr]peerTokens
	scanned int64 // when a full map was last swept of destinations as good as new
}

// peerTokens is a destination's saved time (tokens, in ns) and when it
// last had an error.
type peerTokens struct{ tokens, last int64 }

const (
	icmpPeerInterval = int64(time.Second)
	icmpPeerBurst    = 6
	maxICMPPeers     = 4096
)

func (l *peerLimit) allow(dst netip.Addr, now int64) bool {
	full := icmpPeerBurst * icmpPeerInterval
	p, ok := l.peers[dst]
	if !ok {
		if l.peers == nil {
			l.peers = map[netip.Addr]peerTokens{}
		}
		if len(l.peers) >= maxICMPPeers {
			// Swept at most once a second: a flood from spoofed
			// sources must not make each error cost a scan.
			if now-l.scanned < icmpPeerInterval && now >= l.scanned {
				return true
			}
			l.scanned = now
			for a, q := range l.peers {
				if now-q.last >= full { // as good as new
					delete(l.peers, a)
				}
			}
			if len(l.peers) >= maxICMPPeers {
				return true
			}
		}
		p = peerTokens{tokens: full, last: now}
	}
	if now > p.last { // time going back refills nothing
		p.tokens = min(full, p.tokens+now-p.last)
	}
	p.last = now
	ok = p.tokens >= icmpPeerInterval
	if ok {
		p.tokens -= icmpPeerInterval
	}
	l.peers[dst] = p
	return ok
}

// tokenBucket limits the ICMP errors the gateway sends in all.
// ICMPLimit's lock guards it.
type tokenBucket struct {
	tokens float64
	last   int64
	init   bool
}

// ok refills the bucket to now and reports whether it holds a token.
func (b *tokenBucket) ok(now int64) bool {
	const rate, burst = 1000.0, 50.0
	if !b.init {
		b.tokens, b.last, b.init = burst, now, true
	}
	if now > b.last { // time going back refills nothing, and takes nothing
		b.tokens = min(burst, b.tokens+float64(now-b.last)*rate/1e9)
		b.last = now
	}
	return b.tokens >= 1
}
