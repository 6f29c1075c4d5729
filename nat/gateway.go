package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// Config configures a Gateway. Bridge, Subnet and Uplink are required; every
// other zero field is the documented default.
type Config struct {
	// Bridge is the bridge the gateway joins as a router port, as
	// docker0's 172.17.0.1 is the bridge's own address.
	Bridge *bridge.Bridge
	// Subnet is the gateway's address on the bridge with the bridge
	// subnet, such as 172.17.0.1/16. New refuses the network's or the
	// broadcast address, a subnet that meets 0.0.0.0/8, 127.0.0.0/8 or
	// multicast (Unroutable: the gateway would forward nothing), and one
	// that overlaps the uplink's network or holds its address.
	Subnet netip.Prefix
	// MAC is the router port's MAC; zero means a random locally
	// administered one. A multicast MAC is refused.
	MAC bridge.MAC
	// MTU is the largest IP packet on the bridge side; 0 means 1500.
	MTU int
	// Uplink is the way out: a LinkUplink, or the host-socket uplink of
	// nat/hostnet. The gateway starts it and closes it; when New fails,
	// the caller closes it (a Terminator may refuse to be given to
	// another gateway after that; hostnet's does).
	Uplink Uplink
	// Table is the connection-tracking table; nil means a new table made
	// with Conntrack (which is ignored otherwise). The gateway closes a
	// table it made.
	Table     *conntrack.Table
	Conntrack conntrack.Config
	// NoMasquerade turns off the masquerade of the subnet to the uplink
	// address, which is on by default (Docker's MASQUERADE rule): the
	// containers' flows leave with their own addresses, for a network
	// that routes the subnet back to the gateway, and their replies come
	// in (nothing new does), as with Docker's --ip-masq=false.
	NoMasquerade bool
	// MasqueradePorts limits the ports masquerade chooses; zero means
	// Linux's choice (see Mapping.SrcPorts).
	MasqueradePorts PortRange
	// RandomPorts chooses masquerade ports fully at random, even when a
	// flow's own port is free (iptables' --random-fully).
	RandomPorts bool
	// Clock tells the time for fragment reassembly and neighbour entries;
	// nil means the system clock.
	Clock Clock
	// Logger receives logs; nil means silent.
	Logger *slog.Logger
}

// Clock tells the time; it is conntrack's, so one clock drives both.
type Clock = conntrack.Clock

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Gateway is the router port on a bridge that forwards between the bridge
// and an uplink, tracking every flow in a conntrack table and rewriting
// packets the way the kernel's NAT does: published ports (DNAT) in, the
// subnet masqueraded (SNAT) out, hairpin between containers through a
// published port, and ICMP errors translated along with their flows.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	clock  Clock
	epoch  time.Time
	subnet netip.Prefix
	// broadcast is the subnet's broadcast address: the bridge's own
	// traffic, never forwarded.
	broadcast netip.Addr
	table     *conntrack.Table
	ownTbl    bool
	uplink    Uplink
	term      Terminator // uplink, when it terminates flows; else nil
	inside    *link      // the router port on the bridge
	att       *bridge.Attachment
	rules     Rules
	ports     Allocator
	reasm     *Reassembler

	out, in flowTranslator // for flows that start on the bridge, and outside

	// upBroadcast is the broadcast address of the uplink's subnet, for
	// an uplink on a link of its own (LinkUplink): the host's broadcast,
	// never forwarded either.
	upBroadcast netip.Addr
	// upRoutes, for an uplink that routes by a table of its own
	// (LinkUplink), reports whether it has a route to an address.
	upRoutes func(netip.Addr) bool

	// scratch holds, per receiving side, reassembled packets and the ICMP
	// messages and fragments the gateway builds. [0] is the uplink's, [1]
	// the bridge's; each is used only by that side's goroutine.
	scratch [2]sideScratch

	icmpLimit ICMPLimit
	stats     gatewayStats
	wg        sync.WaitGroup
	stop      chan struct{}
	closeOne  sync.Once
	closed    atomic.Bool
}

// sideScratch is one side's working memory.
type sideScratch struct {
	whole []byte // Headroom + a reassembled datagram
	msg   []byte // Headroom + an ICMP message the gateway sends
	frag  []byte // Headroom + one fragment
	seg   []byte // Headroom + one TCP segment cut from a GSO packet
}

func newScratch() sideScratch {
	return sideScratch{
		whole: make([]byte, Headroom+65535),
		msg:   make([]byte, Headroom+maxICMPv6Error),
		frag:  make([]byte, Headroom+65535),
		seg:   make([]byte, Headroom+65535),
	}
}

func sideIndex(inside bool) int {
	if inside {
		return 1
	}
	return 0
}

type gatewayStats struct {
	forwarded, local                       atomic.Uint64
	dropMalformed, dropChecksum, dropTTL   atomic.Uint64
	dropInvalid, dropNoRule, dropRefused   atomic.Uint64
	dropTooBig, dropFragments, dropRewrite atomic.Uint64
	icmpSent, gso, segmented               atomic.Uint64
	dropMartian, dropNoRoute               atomic.Uint64
}

// Stats are the gateway's counters.
type Stats struct {
	Forwarded uint64 // packets forwarded between the bridge and the uplink, or back to the bridge
	Local     uint64 // packets for the gateway itself (pings, unreachable ports)
	ICMPSent  uint64 // ICMP messages the gateway originated
	// Segmentation offload: of the forwarded packets, the GSO packets
	// (large TCP segments from a link with offloads), and those of them
	// the gateway cut into segments itself for a link without.
	GSO, Segmented uint64
	// Drops, by reason.
	DropMalformed uint64 // undecodable headers
	DropChecksum  uint64 // bad IPv4 header checksum; a bad ICMP, UDP or TCP checksum of a packet to the gateway itself (which it answers otherwise); a bad checksum of a forwarded TCP SYN, FIN or RST (which would change its flow's state, as Linux's conntrack does not let it)
	DropTTL       uint64 // TTL ran out (time exceeded was sent)
	DropInvalid   uint64 // conntrack found them invalid (out of state, errors about nothing)
	DropNoRule    uint64 // from outside, for no flow and no publish rule (to a container's address: for no flow it started)
	DropRefused   uint64 // new flows refused: table full, ports exhausted
	DropTooBig    uint64 // DF packets over the MTU (fragmentation needed was sent)
	DropFragments uint64 // fragments that were not reassembled
	DropRewrite   uint64 // packets the rewriter refused, and ICMP redirects about translated flows (Linux's NAT drops them)
	DropMartian   uint64 // addresses no router forwards: multicast, broadcast (the subnet's and the uplink's too), 0.0.0.0/8, 127.0.0.0/8; a source that is one of the gateway's own; or a source route option (LSRR, SSRR), as Linux drops with accept_source_route 0
	DropNoRoute   uint64 // to an address the uplink has no route to (off its link, with no next hop): net unreachable was sent, as Linux's ip_error
}

// New starts a gateway on cfg.Bridge. When it fails, the uplink is still
// the caller's to close (Uplink.Close is idempotent, so closing one that
// New closed already is harmless), not to give to another gateway: a
// Terminator may be attached already to the failed gateway's table.
// The gateway's port on the bridge closes the uplink when it closes, so
// a bridge closed before the gateway stops the gateway's traffic too, and
// ends a write that waits in the uplink.
func New(cfg Config) (*Gateway, error) {
	switch {
	case cfg.Bridge == nil:
		return nil, errors.New("nat: Config.Bridge is required")
	case cfg.Uplink == nil:
		return nil, errors.New("nat: Config.Uplink is required")
	case !cfg.Subnet.IsValid() || !cfg.Subnet.Addr().Is4():
		return nil, fmt.Errorf("nat: subnet %v: need the gateway's IPv4 address with the bridge prefix, such as 172.17.0.1/16", cfg.Subnet)
	case cfg.Subnet.Addr() == cfg.Subnet.Masked().Addr():
		return nil, fmt.Errorf("nat: subnet %v: the gateway's address cannot be the network address", cfg.Subnet)
	case !cfg.MAC.IsZero() && cfg.MAC.IsMulticast():
		// Refused here, before the uplink is attached to a gateway
		// that cannot be, as the bridge's FDB would refuse it later.
		return nil, fmt.Errorf("nat: MAC %v: not a unicast address", cfg.MAC)
	}
	if err := checkPrefix("subnet", cfg.Subnet); err != nil {
		return nil, err
	}
	// The uplink's network and the bridge's must be apart: a container
	// reaches an address of both on its own link, never through the
	// gateway, and the gateway could not tell which side to send it to.
	if u, ok := cfg.Uplink.(interface{ prefix() netip.Prefix }); ok && u.prefix().Overlaps(cfg.Subnet.Masked()) {
		return nil, fmt.Errorf("nat: subnet %v overlaps the uplink's network %v", cfg.Subnet.Masked(), u.prefix().Masked())
	}
	for _, a := range cfg.Uplink.Addrs() {
		if cfg.Subnet.Contains(a) {
			return nil, fmt.Errorf("nat: subnet %v holds the uplink's address %v", cfg.Subnet.Masked(), a)
		}
	}
	mtu, err := checkMTU(cfg.MTU)
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, subnet: cfg.Subnet, uplink: cfg.Uplink, broadcast: broadcastOf(cfg.Subnet)}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if u, ok := cfg.Uplink.(interface{ broadcast() netip.Addr }); ok {
		g.upBroadcast = u.broadcast()
	}
	if u, ok := cfg.Uplink.(interface{ routes(netip.Addr) bool }); ok {
		g.upRoutes = u.routes
	}
	g.rules.unrouted = g.martian
	if g.clock == nil {
		g.clock = systemClock{}
	}
	g.epoch = g.clock.Now()
	if g.table = cfg.Table; g.table == nil {
		if g.table, err = conntrack.New(cfg.Conntrack); err != nil {
			return nil, err
		}
		g.ownTbl = true
	}
	if !cfg.NoMasquerade {
		m := Masquerade{Subnet: cfg.Subnet.Masked(), Ports: cfg.MasqueradePorts, Random: cfg.RandomPorts}
		if _, err := g.rules.AddMasquerade(m); err != nil {
			g.closeTable()
			return nil, err
		}
	}
	if g.reasm, err = NewReassembler(ReassemblerConfig{Clock: g.clock}); err != nil {
		g.closeTable()
		return nil, err
	}
	g.out = flowTranslator{g: g, inside: true}
	g.in = flowTranslator{g: g}
	g.scratch = [2]sideScratch{newScratch(), newScratch()}
	g.stop = make(chan struct{})
	if t, ok := cfg.Uplink.(Terminator); ok {
		g.term = t
		g.rules.bridged = cfg.Subnet
		if err := t.Attach(g.table, &g.rules); err != nil {
			g.closeTable()
			return nil, err
		}
	}

	mac := cfg.MAC
	if mac.IsZero() {
		mac = randomMAC()
	}
	// The gateway's port on the bridge is no link with a goroutine at
	// each end: frames from the bridge are handled at once, in the bridge's
	// goroutine that hands them over, and frames to the bridge are injected
	// in the gateway's goroutine. Each saves a goroutine switch per packet.
	port := &routerPort{done: make(chan struct{}), direct: sendsWithoutWaiting(cfg.Uplink), closeUplink: cfg.Uplink.Close}
	inj := &injector{}
	g.inside = newLink("bridge", inj, mac, cfg.Subnet, netip.Addr{}, mtu, g.now)
	if g.term != nil {
		// The uplink's own addresses on the bridge (a DNS forwarder's,
		// as slirp4netns's 10.0.2.3) are the gateway's to answer for.
		g.inside.also = func(a netip.Addr) bool { return a != cfg.Subnet.Addr() && g.term.Claims(a) }
	}
	ip := g.fromBridge
	port.handle = func(f []byte, off bridge.Offload) { g.inside.input(f, off, ip) }
	if e, ok := cfg.Uplink.(bridge.BatchEnder); ok {
		port.end = e.EndBatch
	}
	if g.att, err = cfg.Bridge.AddPort(port, bridge.PortConfig{Name: "gateway"}); err != nil {
		g.closeTable()
		return nil, err
	}
	// The gateway's MAC is a static entry of the bridge's FDB, as a Linux
	// bridge's own address is a permanent one: never aged out nor
	// evicted, so a frame to the gateway goes to it alone, never
	// flooded. The gateway rewrites a frame where it lies, which other
	// ports of a flood would read.
	if err = cfg.Bridge.AddStatic(mac, g.att); err != nil {
		g.att.Close()
		g.closeTable()
		return nil, err
	}
	inj.att.Store(g.att)
	g.wg.Add(1)
	go g.housekeeping()
	if err := g.uplink.Start(g.fromUplink); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// routerPort is the gateway's port on the bridge: what the bridge writes to
// it is the gateway's input; it never has anything to read, since the
// gateway injects its frames (see injector). It takes frames with offloads
// (pending checksums, GSO) as the kernel's router takes them from a
// virtio NIC: rewritten as they are, and cut into segments or completed
// only where they leave by a link that cannot take them.
type routerPort struct {
	handle func(frame []byte, off bridge.Offload)
	end    func() // the uplink's EndBatch, if it has one
	direct bool   // WritesDirect: the uplink's Send never waits
	done   chan struct{}
	once   sync.Once
	// closeUplink closes the uplink: the gateway's port closed (by the
	// bridge's Close, say) unblocks a write waiting in the uplink's Send,
	// as the Port contract asks, and the gateway forwards nothing more.
	closeUplink func() error
}

var (
	_ bridge.OffloadPort = (*routerPort)(nil)
	_ bridge.BatchEnder  = (*routerPort)(nil)
)

// EndBatch passes the bridge's batch end on to the uplink, when it takes
// them (see Uplink): the packets the gateway sent it in the batch were
// all sent.
func (p *routerPort) EndBatch() {
	if p.end != nil {
		p.end()
	}
}

// ReadFrames waits for Close.
func (p *routerPort) ReadFrames([][]byte, []int) (int, error) {
	<-p.done
	return 0, net.ErrClosed
}

// WriteFrames handles each frame the bridge sends the gateway before it
// returns; the bridge's buffers are not kept.
func (p *routerPort) WriteFrames(bufs [][]byte) (int, error) {
	return p.WriteFramesOffload(bufs, nil)
}

// Offloading implements bridge.OffloadPort.
func (p *routerPort) Offloading() bool { return true }

// ReadFramesOffload waits for Close.
func (p *routerPort) ReadFramesOffload([][]byte, []int, []bridge.Offload) (int, error) {
	return p.ReadFrames(nil, nil)
}

// WriteFramesOffload is WriteFrames with each frame's offloads.
func (p *routerPort) WriteFramesOffload(bufs [][]byte, meta []bridge.Offload) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	for i, f := range bufs {
		var off bridge.Offload
		if meta != nil {
			off = meta[i]
		}
		p.handle(f, off)
	}
	return len(bufs), nil
}

func (p *routerPort) BatchSize() int { return 32 }

// WritesDirect implements bridge.DirectWriter: the gateway handles a frame
// as it comes, so the bridge may hand it over from the forwarding
// goroutine, when the uplink's Send, which handling a frame may call,
// never waits (sendsWithoutWaiting).
func (p *routerPort) WritesDirect() bool { return p.direct }

// sendsWithoutWaiting reports whether up's Send never waits on anyone: a
// Terminator's (nat/hostnet's writes to host sockets never block, and
// its packets to the bridge wait in a queue of its own), and a
// LinkUplink's over a TAP device or a Port that says its writes never
// wait (bridge.DirectWriter). Over another Port, such as a Pipe, whose
// writes wait for its reader, a forwarding goroutine handing the gateway
// a frame would wait with it, and stop every frame of its port, to the
// other containers too: the frames go through the router port's own
// transmit goroutine and queue instead.
func sendsWithoutWaiting(up Uplink) bool {
	switch u := up.(type) {
	case Terminator:
		return true
	case *LinkUplink:
		d, ok := u.l.port.(bridge.DirectWriter)
		return isTAP(u.l.port) || ok && d.WritesDirect()
	}
	return false
}

func (p *routerPort) Close() error {
	p.once.Do(func() {
		close(p.done)
		if p.closeUplink != nil {
			p.closeUplink()
		}
	})
	return nil
}

// injector is the Port the gateway's bridge link writes to: it injects the
// frames into the bridge as if the router port had read them.
type injector struct {
	att atomic.Pointer[bridge.Attachment]
}

func (i *injector) ReadFrames([][]byte, []int) (int, error) { return 0, net.ErrClosed }

func (i *injector) WriteFrames(bufs [][]byte) (int, error) {
	return i.WriteFramesOffload(bufs, nil)
}

func (i *injector) Offloading() bool { return true }

func (i *injector) ReadFramesOffload([][]byte, []int, []bridge.Offload) (int, error) {
	return 0, net.ErrClosed
}

func (i *injector) WriteFramesOffload(bufs [][]byte, meta []bridge.Offload) (int, error) {
	a := i.att.Load()
	if a == nil {
		return 0, net.ErrClosed
	}
	if err := a.InjectOffload(bufs, meta); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

func (i *injector) BatchSize() int { return 1 }
func (i *injector) Close() error   { return nil }

// housekeeping expires what waits on time: fragments that never
// completed, neighbours that stopped answering.
func (g *Gateway) housekeeping() {
	defer g.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.reasm.Expire()
			g.unreachable(g.inside.neigh.expire(g.now()))
			if u, ok := g.uplink.(interface{ expire() [][]byte }); ok {
				g.unreachable(u.expire())
			}
		}
	}
}

func (g *Gateway) now() int64 { return int64(g.clock.Now().Sub(g.epoch)) }

// unreachable tells the senders of pkts, packets the gateway held for a
// neighbour that never answered ARP, that its address is unreachable
// (host unreachable), as Linux does (arp_error_report): a container's
// connection to a dead address on the uplink's link fails in seconds,
// not after its retries. The packets went through conntrack and NAT, so
// each error is tracked as the error of a router would be, and goes to
// the sender as it sent its packet, from the address Linux's NAT shows
// it from. Errors are rate-limited as the gateway's others are.
func (g *Gateway) unreachable(pkts [][]byte) {
	if len(pkts) == 0 {
		return
	}
	buf := make([]byte, Headroom+576)
	for _, pkt := range pkts {
		now := g.now()
		if !g.icmpLimit.mayAllow(3, 1, now) {
			return
		}
		// From the address the sender reaches the gateway at, which the
		// translation below tells; built first from the subnet's, the
		// error is tracked only by what it quotes.
		msg, err := ICMPError(buf[Headroom:Headroom], pkt, g.subnet.Addr(), 3, 1, 0)
		if err != nil {
			continue
		}
		var p conntrack.Packet
		if p.Decode(msg) != nil || p.Kind != conntrack.KindICMPError {
			continue
		}
		res, err := g.table.Track(0, &p, &g.in)
		if err != nil || res.Class != conntrack.ClassRelated {
			continue
		}
		to := res.Tuple(1 - res.Dir)
		if g.isOwn(to.Src) {
			continue // about the gateway's own packet
		}
		// From where Linux's NAT shows it from (icmp_send, then
		// nf_nat_icmp_reply_translation): the address the sender sent
		// to, when the flow's translation hides its peer from it (a
		// published port's, through the host address too); else the
		// gateway's own address its packet left with (masquerade:
		// `ping` to a dead address prints the host address, as with
		// Docker); else the gateway's address on its side. (A
		// Terminator's flows are its own: from the gateway's side.)
		inside := g.subnet.Contains(to.Src)
		sent := netip.AddrFrom4([4]byte(pkt[12:16])) // its source, translated
		hidden := res.Dir == conntrack.Reply && res.Status&conntrack.DstNAT != 0 ||
			res.Dir == conntrack.Original && res.Status&conntrack.SrcNAT != 0
		var from netip.Addr
		switch {
		case g.term == nil && hidden:
			from = to.Dst
		case g.term == nil && g.isOwn(sent):
			from = sent
		case inside:
			from = g.subnet.Addr()
		default:
			addrs := g.uplink.Addrs()
			if len(addrs) == 0 {
				continue
			}
			from = addrs[0]
		}
		if msg, err = ICMPError(buf[Headroom:Headroom], pkt, from, 3, 1, 0); err != nil || RewriteICMPError(msg, to) != nil {
			continue
		}
		if !g.icmpLimit.Allow(to.Src, 3, 1, now) {
			continue
		}
		g.stats.icmpSent.Add(1)
		// Within every MTU (576 bytes), so route neither cuts nor
		// fragments it with the scratch of the side it names.
		g.route(buf[:Headroom+len(msg)], msg, to.Src, !inside, false, bridge.Offload{})
	}
}

func (g *Gateway) closeTable() {
	if g.ownTbl {
		g.table.Close()
	}
}

// Close stops the gateway: it leaves the bridge, closes the uplink, and
// closes the conntrack table if it made it. It is idempotent.
func (g *Gateway) Close() error {
	g.closeOne.Do(func() {
		g.closed.Store(true)
		close(g.stop)
		// The uplink first: a frame the bridge is handing the gateway
		// may be waiting in the uplink's Send (a link uplink whose port
		// is full), and the attachment's Close waits for that write.
		g.uplink.Close()
		g.att.Close()
		g.wg.Wait()
		g.closeTable()
	})
	return nil
}

// Table returns the gateway's conntrack table.
func (g *Gateway) Table() *conntrack.Table { return g.table }

// Rules returns the gateway's NAT rules, to publish ports and list them.
// Rules added or removed take effect for new flows at once.
//
// With a Terminator uplink (nat/hostnet) the rules are the uplink's
// listing only: the gateway applies none, so publish and unpublish
// through the uplink (hostnet's Uplink.Publish and Unpublish), which
// opens and closes the host's listeners and enters its rules here. A
// publish rule added here opens no listener, and one of the uplink's
// removed here leaves its listeners open.
func (g *Gateway) Rules() *Rules { return &g.rules }

// Addr returns the gateway's address on the bridge.
func (g *Gateway) Addr() netip.Addr { return g.subnet.Addr() }

// MAC returns the router port's MAC.
func (g *Gateway) MAC() bridge.MAC { return g.inside.mac }

// Stats returns the gateway's counters.
func (g *Gateway) Stats() Stats {
	s := &g.stats
	return Stats{
		Forwarded: s.forwarded.Load(), Local: s.local.Load(), ICMPSent: s.icmpSent.Load(),
		DropMalformed: s.dropMalformed.Load(), DropChecksum: s.dropChecksum.Load(),
		DropTTL: s.dropTTL.Load(), DropInvalid: s.dropInvalid.Load(),
		DropNoRule: s.dropNoRule.Load(), DropRefused: s.dropRefused.Load(),
		DropTooBig: s.dropTooBig.Load(), DropFragments: s.dropFragments.Load(),
		DropRewrite: s.dropRewrite.Load(), DropMartian: s.dropMartian.Load(), DropNoRoute: s.dropNoRoute.Load(),
		GSO: s.gso.Load(), Segmented: s.segmented.Load(),
	}
}

// WriteRules writes the rules the way iptables -t nat -L -n lists them.
func (g *Gateway) WriteRules(w io.Writer) error { return g.rules.WriteList(w) }

// isUplinkAddr reports whether a is one of the gateway's outside addresses.
func (g *Gateway) isUplinkAddr(a netip.Addr) bool {
	for _, u := range g.uplink.Addrs() {
		if u == a {
			return true
		}
	}
	return false
}

// isOwn reports whether a is an address of the gateway itself, a
// Terminator's claimed bridge address (a DNS forwarder's) included: the
// gateway answers ARP for it, so it answers its pings too, as libslirp
// does for 10.0.2.3, rather than routing them back onto the bridge.
func (g *Gateway) isOwn(a netip.Addr) bool {
	return a == g.subnet.Addr() || g.isUplinkAddr(a) || g.inside.also != nil && g.subnet.Contains(a) && g.inside.also(a)
}

// fromBridge handles a frame from a container for the gateway's MAC.
func (g *Gateway) fromBridge(frame []byte, off bridge.Offload) { g.forward(frame, true, off) }

// fromUplink handles a frame from outside.
func (g *Gateway) fromUplink(frame []byte, off bridge.Offload) { g.forward(frame, false, off) }

// forward is the per-packet path: decode, reassemble, track, translate,
// route, send. inside says the packet came from the bridge; off is what is
// left to do for it, which the packet keeps as far as the link it leaves
// by can take it: a pending checksum goes along the rewrite (the kernel
// trusts such packets, and so does the gateway), a GSO packet is checked
// against the MTU by the size of its segments.
func (g *Gateway) forward(frame []byte, inside bool, off bridge.Offload) {
	var p conntrack.Packet
	pkt := frame[Headroom:]
	if err := p.Decode(pkt); err != nil {
		g.stats.dropMalformed.Add(1)
		return
	}
	frame, pkt = frame[:Headroom+p.Len], pkt[:p.Len] // drop Ethernet padding
	if !off.Valid(len(frame)) || off.GSO != bridge.GSONone && p.Tuple.Proto != conntrack.ProtoTCP || !csumAtL4(&p, off) {
		g.stats.dropMalformed.Add(1)
		return
	}
	if p.Tuple.Src.Is6() {
		g.stats.dropMalformed.Add(1) // the link uplink is IPv4 only
		return
	}
	if g.martian(p.Tuple.Src) || g.martian(p.Tuple.Dst) {
		// As Linux's routing: never forwarded, nor answered with an
		// error (a multicast, a broadcast, this host's loopback).
		g.stats.dropMartian.Add(1)
		return
	}
	if (inside || g.term == nil) && g.isOwn(p.Tuple.Src) {
		// From one of the gateway's own addresses, on the wire: a
		// martian source for Linux (fib_validate_source), dropped. (A
		// Terminator uplink speaks for the gateway's addresses.)
		g.stats.dropMartian.Add(1)
		return
	}
	if !ipv4HeaderOK(pkt) {
		g.stats.dropChecksum.Add(1)
		return
	}
	if sourceRouted(pkt) {
		// Linux's ip_rcv_options drops these while accept_source_route
		// is 0, its default (RFC 7126 4.3.3.1).
		g.stats.dropMartian.Add(1)
		return
	}
	sc := &g.scratch[sideIndex(inside)]
	fragMax := 0 // for a reassembled packet, its largest fragment (Linux's frag_max_size)
	if p.Kind == conntrack.KindFragment {
		if off.Flags&bridge.OffloadNeedsCsum != 0 {
			g.stats.dropMalformed.Add(1) // a fragment's checksum is its sender's
			return
		}
		whole, maxFrag, err := g.reasm.add(pkt, sc.whole[Headroom:])
		if err != nil {
			g.stats.dropFragments.Add(1)
			return
		}
		if whole == nil {
			return // more fragments to come
		}
		frame, pkt = sc.whole[:Headroom+len(whole)], whole
		fragMax = maxFrag
		if p.Decode(pkt) != nil || p.Kind == conntrack.KindFragment {
			g.stats.dropMalformed.Add(1)
			return
		}
	}
	if g.term != nil && g.terminated(frame, pkt, &p, inside, off) {
		return
	}
	own := g.isOwn(p.Tuple.Dst)
	// From outside, only the gateway's own addresses open flows
	// (published ports, and the replies of masqueraded flows); a
	// container's own address takes only the replies and errors of the
	// flows it started untranslated (NoMasquerade), as Docker's FORWARD
	// rules accept ESTABLISHED and RELATED to the bridge and nothing new.
	toContainer := !inside && !own && g.subnet.Contains(p.Tuple.Dst)
	if toContainer && p.Kind == conntrack.KindFlow {
		_, _, toContainer = g.table.Get(0, p.Tuple)
	}
	if !inside && !own && !toContainer {
		g.stats.dropNoRule.Add(1)
		return
	}

	// A packet to be routed dies here when its TTL runs out; one for the
	// gateway itself does not.
	if !own && pkt[8] <= 1 {
		g.timeExceeded(pkt, inside)
		return
	}

	tr := &g.in
	if inside {
		tr = &g.out
	}
	if p.Kind == conntrack.KindFlow && p.Tuple.Proto == conntrack.ProtoTCP &&
		p.TCP.Flags&(conntrack.TCPSyn|conntrack.TCPFin|conntrack.TCPRst) != 0 &&
		off.Flags&(bridge.OffloadNeedsCsum|bridge.OffloadDataValid) == 0 &&
		!TransportChecksumOK(pkt, p.L4Off, conntrack.ProtoTCP) {
		// As Linux's conntrack (nf_conntrack_checksum, tcp_error): a
		// segment with a bad checksum changes no state, so a corrupted
		// RST or FIN ends no flow, nor does a SYN open one.
		g.stats.dropChecksum.Add(1)
		return
	}
	res, err := g.table.Track(0, &p, tr)
	if err != nil {
		g.stats.dropRefused.Add(1)
		g.log.Debug("nat: new flow refused", "tuple", p.Tuple, "err", err)
		return
	}
	if toContainer && res.Created {
		g.untrack(res) // its flow went since Get looked
		g.stats.dropNoRule.Add(1)
		return
	}
	var to conntrack.Tuple
	switch res.Class {
	case conntrack.ClassInvalid:
		if own && p.Kind == conntrack.KindFlow && p.Tuple.Proto == conntrack.ProtoTCP &&
			p.TCP.Flags&conntrack.TCPRst == 0 && off.GSO == bridge.GSONone {
			// A segment no entry opens (a SYN|ACK, a FIN) to a port
			// of the gateway's own, of no flow: reset, as a closed
			// port answers (RFC 9293 3.10.7.1); Linux's stack gets it
			// untracked and resets it.
			if _, _, ok := g.table.Get(0, p.Tuple); !ok {
				bridge.CompleteChecksum(frame, &off)
				if !TransportChecksumOK(pkt, p.L4Off, conntrack.ProtoTCP) {
					g.stats.dropChecksum.Add(1)
					return
				}
				g.local(frame, pkt, &p, inside)
				return
			}
		}
		g.stats.dropInvalid.Add(1)
		return
	case conntrack.ClassRelated:
		to = res.Tuple(1 - res.Dir)
		if g.isOwn(to.Src) {
			// About a packet the gateway itself sent (an echo reply, a
			// RST): for the gateway, as Linux's icmp_rcv takes it.
			g.stats.local.Add(1)
			return
		}
		if pkt[p.L4Off] == icmpRedirect && res.Status&(conntrack.SrcNAT|conntrack.DstNAT) != 0 {
			// The better first hop a redirect names is one for the
			// translated address, on the other side's link: no
			// translation makes it one for the flow's sender. Linux's
			// NAT drops it (nf_nat_icmp_reply_translation).
			g.stats.dropRewrite.Add(1)
			return
		}
		if err := RewriteICMPError(pkt, to); err != nil {
			g.stats.dropRewrite.Add(1)
			return
		}
		if inside && (res.Dir == conntrack.Original && res.Status&conntrack.SrcNAT != 0 ||
			res.Dir == conntrack.Reply && res.Status&conntrack.DstNAT != 0) {
			// Leaving through a translation that hides the bridge's
			// side: from the translated address whoever on the bridge
			// sent it, as Linux's SRC manip sets the outer source
			// (nf_nat_icmp_reply_translation), never a bridge address.
			var d delta
			setAddr(pkt[12:], to.Dst, &d)
			putCksum(pkt, 10, d.apply(cksumAt(pkt, 10)))
		}
		// Forwarded as any packet is: a hop less, and dropped at the
		// last, without an error about an error.
		g.route(frame, pkt, to.Src, inside, true, bridge.Offload{})
		return
	}
	to, _ = res.Tuple(1 - res.Dir).Reverse()
	if to.Dst != p.Tuple.Dst {
		own = g.isOwn(to.Dst) // translated: its new destination says
	}
	if !own && !g.subnet.Contains(to.Dst) && g.upRoutes != nil && !g.upRoutes(to.Dst) {
		// No route: Linux's routing gives such a packet to ip_error,
		// which answers net unreachable, and its entry is never
		// confirmed. Quoted as its sender sent it.
		g.untrack(res)
		g.stats.dropNoRoute.Add(1)
		g.sendError(pkt, inside, 3, 0, func(buf []byte, from netip.Addr) ([]byte, error) {
			return Unreachable(buf, pkt, from, 0)
		})
		return
	}
	if !own && pkt[8] <= 1 {
		// To the gateway's own address, but routed on once translated
		// (a published port, hairpin): its TTL runs out here, as in
		// Linux's ip_forward after DNAT, and its new entry goes.
		g.untrack(res)
		g.timeExceeded(pkt, inside)
		return
	}
	if own {
		if off.GSO != bridge.GSONone {
			g.stats.dropInvalid.Add(1) // no stream to the gateway gets that far
			return
		}
		bridge.CompleteChecksum(frame, &off)
		if pr := p.Tuple.Proto; (pr == conntrack.ProtoUDP || pr == conntrack.ProtoTCP) && !TransportChecksumOK(pkt, p.L4Off, pr) {
			// Discarded unanswered (local; RFC 1122 4.1.3.4, 4.2.2.7):
			// nor may it leave an entry, as Linux's conntrack makes
			// none for it.
			g.untrack(res)
			g.stats.dropChecksum.Add(1)
			return
		}
		g.local(frame, pkt, &p, inside)
		return
	}
	// Check the size before rewriting, so an error quotes the packet as
	// its sender sent it. A GSO packet goes out as segments, whose size
	// counts.
	size := len(pkt)
	if off.GSO != bridge.GSONone {
		size = gsoSegmentSize(frame, off)
	}
	// A reassembled datagram goes on in fragments no larger than its
	// sender's were, whatever its whole size, as Linux sends it
	// (frag_max_size): with DF on each when its fragments had DF
	// (IPSKB_FRAG_PMTU) and they fit the next link; without DF, and cut
	// to the next link's MTU too, when they had none.
	out := g.mtuTowards(to.Dst)
	df := pkt[6]&0x40 != 0
	refrag := fragMax > 0 && (!df || fragMax <= out)
	if size > out && !refrag {
		if df {
			g.untrack(res) // dropped before it left: never confirmed
			g.stats.dropTooBig.Add(1)
			g.sendError(pkt, inside, 3, 4, func(buf []byte, from netip.Addr) ([]byte, error) {
				return FragNeeded(buf, pkt, from, out)
			})
			return
		}
	}
	rewrite := Rewrite
	if off.Flags&bridge.OffloadNeedsCsum != 0 {
		rewrite = RewritePartial
	}
	if err := rewrite(pkt, to); err != nil {
		g.stats.dropRewrite.Add(1)
		return
	}
	if refrag {
		// Not below the 68 bytes every link carries (RFC 791), which
		// Fragment's cut needs: a sender's tinier fragments go on at 68.
		g.refragment(frame, pkt, to.Dst, inside, max(min(fragMax, out), 68))
		return
	}
	g.route(frame, pkt, to.Dst, inside, true, off)
}

// untrack takes back the entry res created for a packet dropped after
// all (Linux confirms an entry only once its first packet leaves).
func (g *Gateway) untrack(res conntrack.Result) {
	if res.Created {
		g.table.DeleteID(0, res.Orig(), res.ID)
	}
}

// refragment forwards the reassembled datagram pkt, in frame, in
// fragments of at most size bytes, with DF on each when it has DF.
func (g *Gateway) refragment(frame, pkt []byte, dst netip.Addr, inside bool, size int) {
	if !DecTTL(pkt) {
		g.stats.dropTTL.Add(1)
		return
	}
	g.forwardOptions(pkt, dst, inside)
	send := g.uplink.Send
	if g.subnet.Contains(dst) {
		send = g.inside.send
	}
	sc := &g.scratch[sideIndex(inside)]
	err := cut(pkt, size, sc.frag[Headroom:], true, func(f []byte) {
		if &f[0] == &pkt[0] { // it fits: as it is
			send(frame[:Headroom+len(f)], dst, bridge.Offload{})
			return
		}
		send(sc.frag[:Headroom+len(f)], dst, bridge.Offload{})
	})
	if err != nil {
		g.stats.dropTooBig.Add(1)
		return
	}
	g.stats.forwarded.Add(1)
}

// terminated is the per-packet path with a Terminator uplink, after the
// checks and reassembly: it forwards the packets of the uplink's flows
// unchanged, tracking them with TrackTerminated; hands the first packets
// of new flows from the bridge to the uplink, which creates their entries;
// creates the entries of flows the uplink opens towards the bridge
// (Terminator.Inbound); and passes ICMP errors across, the uplink being
// this process's own code. It reports false for what the ordinary path
// handles: the gateway's own address, and traffic within the subnet.
func (g *Gateway) terminated(frame, pkt []byte, p *conntrack.Packet, inside bool, off bridge.Offload) bool {
	dst := p.Tuple.Dst
	toBridge := g.subnet.Contains(dst)
	if inside && toBridge && !g.claims(p) && (dst != g.subnet.Addr() || !g.terminatedEntry(p)) {
		return false
	}
	// Only the subnet's addresses speak through the uplink, and the
	// uplink speaks only to them: a container spoofing another source
	// gets nowhere (nor around the uplink's per-source cap), and the
	// uplink's answer to such a source never loops back into it.
	if inside && !g.subnet.Contains(p.Tuple.Src) || !inside && !toBridge {
		g.stats.dropInvalid.Add(1)
		return true
	}
	if p.Kind == conntrack.KindICMPError {
		g.cross(frame, pkt, dst, inside, off)
		return true
	}
	if inside && !toBridge && pkt[8] <= 1 {
		// Out of hops at the gateway, as through the kernel's NAT (the
		// first hop a container's traceroute finds); the uplink sends
		// the others with one less (hostnet).
		g.timeExceeded(pkt, inside)
		return true
	}
	if p.Kind != conntrack.KindFlow {
		g.stats.dropInvalid.Add(1)
		return true
	}
	res, ok := g.table.TrackTerminated(0, p, !inside) // the uplink is the proxy
	switch {
	case ok && res.Class == conntrack.ClassInvalid:
		g.stats.dropInvalid.Add(1)
		return true
	case ok, inside:
		// A known flow, or a new one from the bridge, which the uplink
		// opens (or refuses) and enters into the table itself.
		g.cross(frame, pkt, dst, inside, off)
		return true
	}
	orig, reply, ok := g.term.Inbound(p.Tuple)
	if !ok && toBridge && p.Tuple.Proto == conntrack.ProtoTCP && p.TCP.Flags&conntrack.TCPRst != 0 {
		// The uplink refusing a connection it could not open, or
		// resetting one whose entry expired: the container must hear.
		g.cross(frame, pkt, dst, inside, off)
		return true
	}
	if !ok || !toBridge {
		g.stats.dropNoRule.Add(1)
		return true
	}
	q := *p
	q.Tuple = orig // the entry is the flow as it reached the host
	st := conntrack.DstNAT
	if reply.Dst != orig.Src || reply.DstPort != orig.SrcPort {
		st |= conntrack.SrcNAT // the client shown with another port (its reply tuple taken), as the kernel's NAT marks it
	}
	res, err := g.table.Track(0, &q, conntrack.FixedReply{Reply: reply, Status: st})
	if err != nil || res.Class == conntrack.ClassInvalid {
		g.stats.dropRefused.Add(1)
		g.log.Debug("nat: inbound flow refused", "tuple", orig, "err", err)
		return true
	}
	if _, _, ok := g.term.Inbound(p.Tuple); !ok {
		// The uplink let the flow go while its entry was made (its
		// published port went): the entry goes too, or it would
		// outlive the flow. The uplink looks for an entry once it has
		// let the flow go, so one of the two finds it.
		g.untrack(res)
		g.stats.dropNoRule.Add(1)
		return true
	}
	g.cross(frame, pkt, dst, inside, off)
	return true
}

// terminatedEntry reports whether a packet from the bridge to the
// gateway's own address belongs to a flow of the uplink's: one it opened
// for a client on the host's loopback, which it presents as the gateway,
// so the entry's original source is the gateway's address. (The
// gateway's own flows, pings and refusals, are not translated; its
// hairpins, a container's connection to a port published on the
// gateway's address, are translated by the gateway itself, from a
// container's address.)
func (g *Gateway) terminatedEntry(p *conntrack.Packet) bool {
	e, _, ok := g.table.Get(0, p.Tuple)
	return ok && e.Status&(conntrack.SrcNAT|conntrack.DstNAT) != 0 && e.Orig.Src == g.subnet.Addr()
}

// claims reports whether a packet from the bridge to the gateway's own
// address belongs to the Terminator uplink: a TCP or UDP flow to an
// address it maps to the host's loopback.
func (g *Gateway) claims(p *conntrack.Packet) bool {
	pr := p.Tuple.Proto
	return (pr == conntrack.ProtoTCP || pr == conntrack.ProtoUDP) && g.term.Claims(p.Tuple.Dst)
}

// cross sends an untranslated packet of a terminated flow to the other
// side: from the bridge to the uplink, from the uplink to the bridge.
func (g *Gateway) cross(frame, pkt []byte, dst netip.Addr, inside bool, off bridge.Offload) {
	if !inside {
		g.route(frame, pkt, dst, false, false, off)
		return
	}
	g.stats.forwarded.Add(1)
	if off.GSO != bridge.GSONone && !g.uplink.Offloading() {
		sc := &g.scratch[1]
		g.stats.segmented.Add(1)
		if err := bridge.Segment(frame, Headroom, off, sc.seg, func(seg []byte) {
			g.uplink.Send(seg, dst, bridge.Offload{})
		}); err != nil {
			g.stats.dropMalformed.Add(1)
		}
		return
	}
	if !g.uplink.Offloading() {
		bridge.CompleteChecksum(frame, &off)
		off = bridge.Offload{}
	}
	g.uplink.Send(frame, dst, off)
}

// timeExceeded drops pkt, whose TTL ran out on its way through, and
// answers its sender with ICMP time exceeded.
func (g *Gateway) timeExceeded(pkt []byte, inside bool) {
	g.stats.dropTTL.Add(1)
	g.sendError(pkt, inside, 11, 0, func(buf []byte, from netip.Addr) ([]byte, error) {
		return TimeExceeded(buf, pkt, from)
	})
}

// csumAtL4 reports whether off's pending checksum, if any, is the
// transport header's own (TCP's or UDP's checksum field): one anywhere
// else would be written over what the gateway rewrites, or read outside
// the packet.
func csumAtL4(p *conntrack.Packet, off bridge.Offload) bool {
	if off.Flags&bridge.OffloadNeedsCsum == 0 {
		return true
	}
	var field uint16
	switch p.Tuple.Proto {
	case conntrack.ProtoTCP:
		field = 16
	case conntrack.ProtoUDP:
		field = 6
	default:
		return false
	}
	return p.Kind == conntrack.KindFlow && int(off.CsumStart) == Headroom+p.L4Off && off.CsumOffset == field
}

// broadcastOf is the broadcast address of the IPv4 prefix p (none for a
// /31 or /32, which have none).
func broadcastOf(p netip.Prefix) netip.Addr {
	if p.Bits() >= 31 {
		return netip.Addr{}
	}
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// checkPrefix reports what makes p, an address of the gateway with its
// link's prefix, unusable: the address is the network's broadcast, or
// the network meets a block no router forwards (Unroutable), so that
// the gateway would drop every packet of its link.
func checkPrefix(what string, p netip.Prefix) error {
	if p.Addr() == broadcastOf(p) {
		return fmt.Errorf("nat: %s %v: the address is the network's broadcast address", what, p)
	}
	if UnroutablePrefix(p) {
		return fmt.Errorf("nat: %s %v overlaps 0.0.0.0/8, 127.0.0.0/8 or multicast, which no router forwards", what, p.Masked())
	}
	return nil
}

// martian reports whether a is an address no router forwards to or from:
// one Unroutable says, or the subnet's or a link uplink's broadcast.
func (g *Gateway) martian(a netip.Addr) bool {
	return Unroutable(a) || a == g.broadcast || a == g.upBroadcast
}

// Unroutable reports whether a is an address no router forwards to or
// from, wherever it is: 0.0.0.0/8, loopback (127.0.0.0/8), multicast and
// the limited broadcast, and any IPv6 address (the gateway routes IPv4
// only). The gateway drops a packet to or from one before anything else,
// so a subnet or an address of one is of no use to it.
func Unroutable(a netip.Addr) bool {
	if !a.Is4() || a.IsMulticast() || a.IsLoopback() {
		return true
	}
	b := a.As4()
	return b[0] == 0 || b == [4]byte{255, 255, 255, 255}
}

// UnroutablePrefix reports whether the IPv4 prefix p holds an address
// Unroutable names: a network the gateway could not serve.
func UnroutablePrefix(p netip.Prefix) bool {
	// Those blocks (0/8, 127/8, 224/4, the limited broadcast) are
	// aligned, so a prefix that meets one holds its first or its last
	// address.
	last := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(last[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(last[:], v)
	return Unroutable(p.Masked().Addr()) || Unroutable(netip.AddrFrom4(last))
}

// gsoSegmentSize is the size of the largest IP packet a GSO packet, at
// frame[Headroom:], is cut into: its headers and one segment's payload.
func gsoSegmentSize(frame []byte, off bridge.Offload) int {
	return off.SegmentLen(frame) - Headroom
}

// route sends a translated packet towards dst: to the bridge when dst is on
// the subnet, else out of the uplink. forwarded packets lose a hop. What
// off leaves to do is done here when the link cannot take it: a GSO packet
// is cut into segments, a pending checksum computed; a packet over the
// MTU is fragmented.
func (g *Gateway) route(frame, pkt []byte, dst netip.Addr, inside, forwarded bool, off bridge.Offload) {
	if forwarded {
		if !DecTTL(pkt) {
			g.stats.dropTTL.Add(1)
			return
		}
		g.forwardOptions(pkt, dst, inside)
	}
	g.stats.forwarded.Add(1)
	send, mtu, offloads := g.uplink.Send, g.uplink.MTU(), g.uplink.Offloading()
	if g.subnet.Contains(dst) {
		send, mtu, offloads = g.inside.send, g.inside.mtu, true
	}
	sc := &g.scratch[sideIndex(inside)]
	if off.GSO != bridge.GSONone {
		g.stats.gso.Add(1)
	}
	if off.GSO != bridge.GSONone && (!offloads || gsoSegmentSize(frame, off) > mtu) {
		g.stats.segmented.Add(1)
		err := bridge.Segment(frame, Headroom, off, sc.seg, func(seg []byte) {
			g.fragment(seg, seg[Headroom:], dst, mtu, send, sc)
		})
		if err != nil {
			g.stats.dropMalformed.Add(1)
		}
		return
	}
	if !offloads || len(pkt) > mtu && off.GSO == bridge.GSONone {
		bridge.CompleteChecksum(frame, &off)
	}
	if off.GSO != bridge.GSONone || len(pkt) <= mtu {
		send(frame, dst, off)
		return
	}
	g.fragment(frame, pkt, dst, mtu, send, sc)
}

// fragment sends the complete packet pkt, at frame[Headroom:], to dst,
// in fragments when it is larger than mtu.
func (g *Gateway) fragment(frame, pkt []byte, dst netip.Addr, mtu int, send func([]byte, netip.Addr, bridge.Offload), sc *sideScratch) {
	if len(pkt) <= mtu {
		send(frame, dst, bridge.Offload{})
		return
	}
	err := Fragment(pkt, mtu, sc.frag[Headroom:], func(f []byte) {
		send(sc.frag[:Headroom+len(f)], dst, bridge.Offload{})
	})
	if err != nil {
		g.stats.dropTooBig.Add(1)
	}
}

// forwardOptions writes the gateway into the record route and timestamp
// options of pkt, forwarded from the bridge (inside) or the uplink
// towards dst, with its addresses on the links pkt comes in and leaves by
// (see forwardOptions). Most packets have no options.
func (g *Gateway) forwardOptions(pkt []byte, dst netip.Addr, inside bool) {
	if pkt[0]&0x0f == 5 {
		return
	}
	var up netip.Addr
	if addrs := g.uplink.Addrs(); len(addrs) > 0 {
		up = addrs[0]
	}
	in, out := g.subnet.Addr(), g.subnet.Addr()
	if !inside {
		in = up
	}
	if !g.subnet.Contains(dst) {
		out = up
	}
	forwardOptions(pkt, in, out, g.clock.Now(), g.isOwn)
}

// mtuTowards is the MTU of the link a packet to dst leaves by.
func (g *Gateway) mtuTowards(dst netip.Addr) int {
	if g.subnet.Contains(dst) {
		return g.inside.mtu
	}
	return g.uplink.MTU()
}

// sourceRouted reports whether the IPv4 header of pkt carries a loose or
// strict source route option.
func sourceRouted(pkt []byte) bool {
	ihl := int(pkt[0]&0x0f) * 4
	for o := pkt[20:ihl]; len(o) > 0; {
		switch o[0] {
		case 0: // end of options
			return false
		case 1: // no operation
			o = o[1:]
			continue
		case 131, 137: // LSRR, SSRR
			return true
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return false
		}
		o = o[o[1]:]
	}
	return false
}

// ipv4HeaderOK verifies the IPv4 header checksum.
func ipv4HeaderOK(pkt []byte) bool {
	ihl := int(pkt[0]&0x0f) * 4
	return Checksum(pkt[:ihl]) == 0
}
