package nat

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/usernat/usernat/bridge"
)

// link is one Ethernet link of the gateway: the router port on the bridge,
// or the link uplink. It owns its Port (one reader goroutine; writers from
// any goroutine, serialised), its MAC and address, and its neighbours.
//
// Packets move as frames with their Ethernet header in front: the IP
// packet of frame f is f[etherHeader:], so a packet rewritten in place
// goes out again by writing a new header over the old one, without a copy.
type link struct {
	name  string
	port  bridge.Port
	off   bridge.OffloadPort // port, when it passes checksum and segmentation work along
	mac   bridge.MAC
	addr  netip.Prefix // the gateway's address on the link, and the on-link prefix
	via   netip.Addr   // next hop for destinations off the link; invalid: none
	mtu   int          // largest IP packet the link carries
	neigh *neighTable
	now   func() int64
	// also reports the other on-link addresses the link answers ARP
	// for: a terminating uplink's (Terminator.Claims); nil for none.
	also func(netip.Addr) bool

	wmu   sync.Mutex        // serialises writes to port
	wout  [][]byte          // under wmu: the one-frame batch WriteFrames takes
	wmeta [1]bridge.Offload // under wmu: its Offload, for an offloading port
	wbuf  []byte            // under wmu: for frames that need a copy

	stats linkStats
}

// linkStats counts what a link did, for Gateway.Stats.
type linkStats struct {
	rxFrames, txFrames, rxBytes, txBytes atomic.Uint64
	arpIn, arpOut                        atomic.Uint64
	dropNotForUs, dropEtherType          atomic.Uint64
	dropNoNeigh, dropTxError             atomic.Uint64
}

func newLink(name string, port bridge.Port, mac bridge.MAC, addr netip.Prefix, via netip.Addr, mtu int, now func() int64) *link {
	l := &link{
		name: name, port: port, mac: mac, addr: addr, via: via, mtu: mtu,
		neigh: newNeighTable(), now: now, wout: make([][]byte, 1),
		wbuf: make([]byte, etherHeader+mtu),
	}
	if o, ok := port.(bridge.OffloadPort); ok && o.Offloading() {
		l.off = o
	}
	return l
}

// offloads reports whether the link takes frames with pending checksums
// and GSO frames.
func (l *link) offloads() bool { return l.off != nil }

// frameSize is the largest frame the link reads: the MTU, the Ethernet
// header, a VLAN tag, and one byte to tell a too-long frame; or, with
// offloads, a GSO frame.
func (l *link) frameSize() int {
	if l.off != nil {
		return bridge.MaxGSOFrame
	}
	return etherHeader + l.mtu + 4 + 1
}

// ipHandler takes an IPv4 frame, with its offload metadata.
type ipHandler = func(frame []byte, off bridge.Offload)

// run reads frames until the port fails or closes, answering ARP itself and
// passing IPv4 frames addressed to the link's MAC (or broadcast) to ip.
func (l *link) run(ip ipHandler) error {
	batch := max(1, l.port.BatchSize())
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	var meta []bridge.Offload
	if l.off != nil {
		meta = make([]bridge.Offload, batch)
	}
	for i := range bufs {
		bufs[i] = make([]byte, l.frameSize())
	}
	return bridge.ServeFrames(l.port, l.off, bufs, sizes, meta, func(n int) bool {
		for i := range n {
			var off bridge.Offload
			if meta != nil {
				off = meta[i]
			}
			l.input(bufs[i][:min(sizes[i], len(bufs[i]))], off, ip)
		}
		return true
	})
}

func (l *link) input(f []byte, off bridge.Offload, ip ipHandler) {
	l.stats.rxFrames.Add(1)
	l.stats.rxBytes.Add(uint64(len(f)))
	if len(f) < etherHeader {
		l.stats.dropEtherType.Add(1)
		return
	}
	dst := bridge.MAC(f[0:6])
	if dst != l.mac && !dst.IsBroadcast() {
		l.stats.dropNotForUs.Add(1)
		return
	}
	switch uint16(f[12])<<8 | uint16(f[13]) {
	case etherTypeARP:
		l.arp(f[etherHeader:])
	case etherTypeIP4:
		if dst.IsBroadcast() {
			l.stats.dropNotForUs.Add(1)
			return
		}
		ip(f, off)
	default:
		l.stats.dropEtherType.Add(1)
	}
}

// arp answers requests for the link's address and learns from what it
// hears, the way Linux does: a request for us creates an entry for its
// sender; anything else only refreshes an entry we have.
func (l *link) arp(b []byte) {
	a, ok := parseARP(b)
	if ok && a.op == arpRequest && a.senderIP == netip.IPv4Unspecified() && !a.senderMAC.IsMulticast() &&
		(a.targetIP == l.addr.Addr() || l.also != nil && l.also(a.targetIP)) {
		// An address probe (RFC 5227) for an address of ours: answered,
		// so the prober sees the conflict, as Linux's arp_process
		// answers it; nothing is learnt from it.
		l.stats.arpIn.Add(1)
		l.answerARP(a)
		return
	}
	if !ok || !a.senderIP.IsValid() || !l.addr.Contains(a.senderIP) || a.senderMAC.IsMulticast() {
		l.stats.dropEtherType.Add(1)
		return
	}
	l.stats.arpIn.Add(1)
	forUs := a.targetIP == l.addr.Addr() || l.also != nil && a.targetIP != a.senderIP && l.also(a.targetIP)
	now := l.now()
	for _, p := range l.neigh.learn(a.senderIP, a.senderMAC, now, forUs) {
		l.writeCopy(a.senderMAC, p)
	}
	if forUs && a.op == arpRequest {
		l.answerARP(a)
	}
}

// answerARP sends the reply to the request a for one of our addresses.
func (l *link) answerARP(a arpPacket) {
	l.wmu.Lock()
	frame := appendARPFrame(l.wbuf[:0], a.senderMAC, arpPacket{
		op: arpReply, senderMAC: l.mac, senderIP: a.targetIP,
		targetMAC: a.senderMAC, targetIP: a.senderIP,
	})
	l.writeLocked(frame, bridge.Offload{})
	l.wmu.Unlock()
	l.stats.arpOut.Add(1)
}

// nextHop is where a packet to dst goes on this link.
func (l *link) nextHop(dst netip.Addr) (netip.Addr, bool) {
	if l.addr.Contains(dst) {
		return dst, true
	}
	return l.via, l.via.IsValid()
}

// send sends frame, whose IP packet is frame[etherHeader:], towards dst,
// with off describing what is left to do for it; only an offloading link
// gets work left. An unresolved next hop gets an ARP request and a copy of
// the packet is held until it answers: complete, since the copy goes
// without metadata (a GSO frame is dropped; TCP sends it again).
func (l *link) send(frame []byte, dst netip.Addr, off bridge.Offload) {
	hop, ok := l.nextHop(dst)
	if !ok {
		l.stats.dropNoNeigh.Add(1)
		return
	}
	now := l.now()
	mac, ok, probe := l.neigh.lookup(hop, now)
	if probe {
		l.ask(hop, mac)
	}
	if !ok {
		if off.GSO != bridge.GSONone {
			l.stats.dropNoNeigh.Add(1)
			return
		}
		bridge.CompleteChecksum(frame, &off)
		ask, dropped := l.neigh.hold(hop, frame[etherHeader:], now)
		if dropped {
			l.stats.dropNoNeigh.Add(1)
		}
		if ask {
			l.request(hop)
		}
		return
	}
	putEther(frame, mac, l.mac, etherTypeIP4)
	l.wmu.Lock()
	l.writeLocked(frame, off)
	l.wmu.Unlock()
}

// writeCopy sends the IP packet pkt, which has no room for a header, to mac.
func (l *link) writeCopy(mac bridge.MAC, pkt []byte) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	f := append(l.wbuf[:0], make([]byte, etherHeader)...)
	f = append(f, pkt...)
	putEther(f, mac, l.mac, etherTypeIP4)
	l.writeLocked(f, bridge.Offload{})
}

func (l *link) request(target netip.Addr) { l.ask(target, bridge.Broadcast) }

// ask sends an ARP request for target to the MAC to: the link's
// broadcast address, or a stale neighbour's own, whose answer confirms it.
func (l *link) ask(target netip.Addr, to bridge.MAC) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	frame := appendARPFrame(l.wbuf[:0], to, arpPacket{
		op: arpRequest, senderMAC: l.mac, senderIP: l.addr.Addr(), targetIP: target,
	})
	l.writeLocked(frame, bridge.Offload{})
	l.stats.arpOut.Add(1)
}

// writeLocked writes one frame. The caller holds l.wmu.
func (l *link) writeLocked(frame []byte, off bridge.Offload) {
	l.wout[0] = frame
	var n int
	var err error
	if l.off != nil {
		l.wmeta[0] = off
		n, err = l.off.WriteFramesOffload(l.wout, l.wmeta[:])
	} else {
		n, err = l.port.WriteFrames(l.wout)
	}
	l.wout[0] = nil
	if n == 1 {
		l.stats.txFrames.Add(1)
		l.stats.txBytes.Add(uint64(len(frame)))
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		l.stats.dropTxError.Add(1)
	}
}
