package hostnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// Defaults of Config.
const (
	DefaultMTU            = 65520
	DefaultConnectTimeout = 20 * time.Second
	DefaultQueueLen       = 4096
	DefaultMaxBuffered    = 256 << 20
	DefaultQueueBytes     = 32 << 20
)

// Config configures an Uplink.
type Config struct {
	// Gateway is the gateway's address on the bridge (nat.Config.Subnet's
	// address): the source of the ICMP errors the uplink sends, and the
	// address a client on the host's loopback is presented as. Required;
	// nat.New refuses an uplink whose Gateway is another address.
	Gateway netip.Addr

	// MTU is the largest IP packet between the gateway and the uplink, at
	// most 65520; 0 means 65520. It bounds the MSS the uplink offers the
	// containers (the bridge's MTU is the one that matters to them).
	MTU int

	// HostLoopback, when valid, is an address whose TCP and UDP flows go
	// to the host's loopback (127.0.0.1) rather than to the address
	// itself: slirp4netns's 10.0.2.2, usually the gateway's own address.
	// When invalid (the default, as slirp4netns --disable-host-loopback),
	// no flow reaches the host's loopback, but for DNS's: with DNS set,
	// its port 53 goes to Resolver, which may listen on the loopback
	// (systemd-resolved's 127.0.0.53), as libslirp's DNS does.
	HostLoopback netip.Addr

	// DNS, when valid, is an address on the bridge subnet, other than the
	// gateway's, where the uplink serves DNS, as slirp4netns's 10.0.2.3:
	// the containers' UDP and TCP to its port 53 go to Resolver (TCP to
	// its other ports is reset, UDP answered with port unreachable), and
	// the gateway answers ARP and pings for it. A
	// container whose resolv.conf names it resolves as the host does,
	// even where the host's resolver is on its loopback (systemd-resolved's
	// 127.0.0.53), which containers cannot reach otherwise. nat.New
	// refuses an uplink whose DNS is not a host address of its subnet.
	DNS netip.Addr

	// Resolver is where DNS's queries go; the zero value means the first
	// IPv4 nameserver of /etc/resolv.conf, port 53: read by New, and
	// again when the file changes (looked at once a second at most, as
	// libslirp does), so it follows the host's network; a live DNS flow
	// follows it too. When the one in use fails (its host says so with
	// an ICMP error, or it leaves a query unanswered for 5 s, glibc's
	// timeout, and answers nothing else meanwhile), queries go to the
	// file's next, of its first three, as the host's own lookups try the
	// next, and to the first again 30 s later. A file without an IPv4
	// nameserver at the start means 127.0.0.1:53, as glibc takes it,
	// until one is written; one emptied later keeps the last.
	Resolver netip.AddrPort

	// OutboundAddr, when valid, is the local address of the host sockets
	// of outbound flows (slirp4netns's --outbound-addr), but for flows to
	// the host's loopback (HostLoopback), which come from the loopback.
	OutboundAddr netip.Addr

	// ConnectTimeout bounds the host connection of an outbound TCP flow
	// (a container whose destination stays silent that long gets no
	// answer, as from the real network), and each handshake with a
	// container, until it answers the SYN or SYN-ACK. 0 means 20 s.
	ConnectTimeout time.Duration

	// MaxFlowsPerSource caps the flows one container address has open at
	// once; 0 means no cap beyond the conntrack table's.
	MaxFlowsPerSource int

	// QueueLen is the number of packets the uplink may have waiting for
	// the gateway; beyond it they are refused (a splice sends them again
	// soon after, a datagram is dropped). 0 means 4096.
	QueueLen int

	// QueueBytes bounds the memory of the packets waiting for the
	// gateway: a large one (over 2 KiB: a TCP segment for a container
	// with offloads, a big datagram) waits in a buffer of 64 KiB, and
	// past QueueBytes of those, large packets are refused as packets past
	// QueueLen are; a small one waits in 2 KiB, which QueueLen bounds.
	// 0 means 32 MiB.
	QueueBytes int

	// MaxBuffered bounds the bytes of the containers' TCP connections
	// the uplink holds, all connections together: segments kept out of
	// order, and bytes a host socket has not taken yet (its peer reads
	// slowly). Each connection holds at most about a window (512 KiB)
	// of each; past MaxBuffered, what a connection would keep is not
	// taken (counted in DropBuffered), and its container sends it again,
	// as Linux's TCP drops what comes beyond its memory limits
	// (tcp_mem). 0 means 256 MiB. It counts the bytes held, not the
	// heap they take: with Go's garbage collector at its default
	// (GOGC=100), the process's resident memory at the bound was measured
	// at about 1.8 times it (600 stalled uploads, 463 MB at 256 MiB).
	MaxBuffered int

	// Namespace runs fn where host sockets are made: every socket the
	// uplink opens (connections, listeners, ICMP sockets) is made inside
	// fn. nil runs fn in place, in the caller's network namespace. Tests
	// and embedders that keep the host side in another network namespace
	// set it (internal/netns's NS.Do).
	Namespace func(fn func() error) error

	// Logger receives flow events at debug level and problems at warn
	// level; nil means no logging.
	Logger *slog.Logger
}

// Uplink carries a gateway's flows over host sockets. Create it with New,
// give it to nat.New as the uplink, and Close the gateway (which closes
// the uplink). All methods are safe for concurrent use.
type Uplink struct {
	cfg Config
	log *slog.Logger
	mtu int

	ln  *link
	tbl atomic.Pointer[conntrack.Table]

	deliver func(frame []byte, off bridge.Offload)
	started atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine of the uplink's

	mu         sync.Mutex
	closed     bool
	closeDone  chan struct{}                   // closed once the first Close has waited for every goroutine
	flows      map[conntrack.Tuple]*flow       // by the entry's original tuple
	unseen     map[*flow]struct{}              // the flows that have not seen their entries yet (flow.id 0)
	udp        map[conntrack.Tuple]*udpFlow    // by the tuple of the container's packets
	udpIn      map[inKey]*udpFlow              // published UDP ports' flows, by what the host saw of their clients
	pings      map[conntrack.Tuple]*pingFlow   // by the echo request's tuple
	dgOpening  map[conntrack.Tuple]bool        // datagram flows (UDP, echo) being opened, by the container's tuple
	inbound    map[conntrack.Tuple]expectation // flows being opened into the container, by the tuple of their packets to it
	perSrc     srcCount                        // open flows per container address
	pubs       map[nat.RuleID][]listener       // listeners of published ports
	rules      atomic.Pointer[nat.Rules]       // the gateway's: the published ports, for ids and listing
	dialing    inFlight                        // the clients being carried in
	connecting inFlight                        // the containers' connections being made
	pubMu      sync.Mutex                      // held by Publish

	smu     sync.RWMutex
	splices map[conntrack.Tuple]*splice // every TCP flow, by the tuple of the container's packets
	poll    *poller                     // their host sockets, and the datagram flows'
	dgBuf   []byte                      // what the poller reads datagrams into (dgramBuf)
	warned  map[string]bool             // problems logged once

	held atomic.Int64 // bytes the splices hold for host sockets and out of order, within Config.MaxBuffered

	// batchEnds says the gateway ends its batches (EndBatch), and the
	// splices may hold their bytes until then; pend lists those that do.
	batchEnds atomic.Bool
	pendMu    sync.Mutex
	pend      []*splice

	icmpLimit nat.ICMPLimit // the ICMP errors the uplink makes itself
	epoch     time.Time     // of the monotonic time icmpLimit counts in

	resolv *resolvWatch // Config.DNS's resolver when read from resolv.conf; nil otherwise

	// tmu is held for reading by every timer callback of the uplink's
	// (afterFunc) while it runs; Close takes it to set timersDone, so
	// that no callback runs on once Close returns.
	tmu        sync.RWMutex
	timersDone bool

	stats Stats
}

// afterFunc is time.AfterFunc for the uplink's timers (the splices', the
// acceptors'): fn runs in its own goroutine, which Close waits for, and
// not at all once Close is done. fn must not call afterFunc's callbacks
// itself, nor Close.
func (u *Uplink) afterFunc(d time.Duration, fn func()) *time.Timer {
	return time.AfterFunc(d, func() {
		u.tmu.RLock()
		defer u.tmu.RUnlock()
		if !u.timersDone {
			fn()
		}
	})
}

// listener is a published port's socket: an acceptor (TCP) or a
// publishedUDP, which the poller serves once started.
type listener interface {
	start() error
	Close() error
}

// expectation is a flow the uplink opens into the container: the entry
// the gateway creates for it (Inbound) when its first packet passes.
type expectation struct{ orig, reply conntrack.Tuple }

var _ nat.Terminator = (*Uplink)(nil)

// ResolverError is New's error when Config.DNS is set and Config.Resolver
// is not, and the system's resolver could not be read (SystemResolver:
// /etc/resolv.conf unreadable): the caller is to say where queries go.
type ResolverError struct{ Err error }

func (e *ResolverError) Error() string {
	return "hostnet: DNS: " + e.Err.Error() + "; set Config.Resolver"
}

func (e *ResolverError) Unwrap() error { return e.Err }

// New makes an uplink. It carries nothing until the gateway attaches and
// starts it.
func New(cfg Config) (*Uplink, error) {
	if !cfg.Gateway.Is4() {
		return nil, fmt.Errorf("hostnet: gateway address %v: need the gateway's IPv4 address on the bridge", cfg.Gateway)
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > DefaultMTU {
		return nil, fmt.Errorf("hostnet: MTU %d out of range [576, %d]", cfg.MTU, DefaultMTU)
	}
	if cfg.HostLoopback.IsValid() && !cfg.HostLoopback.Is4() || cfg.OutboundAddr.IsValid() && !cfg.OutboundAddr.Is4() {
		return nil, errors.New("hostnet: HostLoopback and OutboundAddr must be IPv4 addresses")
	}
	var resolv *resolvWatch
	if cfg.DNS.IsValid() {
		if !cfg.DNS.Is4() || cfg.DNS == cfg.Gateway || cfg.DNS == cfg.HostLoopback || cfg.DNS.IsLoopback() || cfg.DNS.IsUnspecified() || cfg.DNS.IsMulticast() {
			return nil, fmt.Errorf("hostnet: DNS address %v: need an IPv4 address other than the gateway's and the host-loopback one, on the bridge subnet", cfg.DNS)
		}
		if !cfg.Resolver.IsValid() {
			var err error
			if cfg.Resolver, err = SystemResolver(); errors.Is(err, ErrNoNameserver) || errors.Is(err, os.ErrNotExist) {
				// As glibc (resolv.conf(5)) and libslirp: the local host,
				// until the file names one.
				cfg.Resolver, err = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 53), nil
			}
			if err != nil {
				return nil, &ResolverError{err}
			}
			resolv = newResolvWatch(resolvConfPath, cfg.Resolver)
		}
		if !cfg.Resolver.Addr().Is4() || cfg.Resolver.Port() == 0 {
			return nil, fmt.Errorf("hostnet: DNS resolver %v: need an IPv4 address and port", cfg.Resolver)
		}
	}
	// A negative bound is a mistake, not a request for the default.
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"ConnectTimeout", int64(cfg.ConnectTimeout)}, {"MaxFlowsPerSource", int64(cfg.MaxFlowsPerSource)},
		{"QueueLen", int64(cfg.QueueLen)}, {"QueueBytes", int64(cfg.QueueBytes)}, {"MaxBuffered", int64(cfg.MaxBuffered)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("hostnet: negative %s (%d)", f.name, f.v)
		}
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.QueueBytes == 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.MaxBuffered == 0 {
		cfg.MaxBuffered = DefaultMaxBuffered
	}
	if cfg.Namespace == nil {
		cfg.Namespace = func(fn func() error) error { return fn() }
	}
	u := &Uplink{
		cfg: cfg, log: cfg.Logger, mtu: cfg.MTU, resolv: resolv, epoch: time.Now(),
		flows:     map[conntrack.Tuple]*flow{},
		unseen:    map[*flow]struct{}{},
		udp:       map[conntrack.Tuple]*udpFlow{},
		udpIn:     map[inKey]*udpFlow{},
		pings:     map[conntrack.Tuple]*pingFlow{},
		dgOpening: map[conntrack.Tuple]bool{},
		inbound:   map[conntrack.Tuple]expectation{},
		pubs:      map[nat.RuleID][]listener{},
		splices:   map[conntrack.Tuple]*splice{},
		warned:    map[string]bool{},
		closeDone: make(chan struct{}),
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	u.ln = newLink(cfg.QueueLen)
	u.ln.maxLarge = largeFrames(cfg.QueueBytes)
	var err error
	if u.poll, err = newPoller(); err != nil {
		return nil, err
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.poll.run()
	}()
	return u, nil
}

// Addrs returns nothing: outside, the uplink's addresses are the host's.
func (u *Uplink) Addrs() []netip.Addr { return nil }

// MTU returns the largest packet the uplink takes.
func (u *Uplink) MTU() int { return u.mtu }

// Offloading reports true: the uplink takes TCP packets larger than the
// MTU (GSO) whole, as one segment to a splice, and packets whose
// checksum is pending.
func (u *Uplink) Offloading() bool { return true }

// Attach implements nat.Terminator: tbl is where the uplink enters its
// flows. It starts the goroutine that releases flows whose entries left
// the table. It refuses, leaving the uplink as it was (for another
// gateway), a gateway whose subnet its addresses do not fit (onBridge),
// and refuses any gateway once given to one: the uplink carries one
// gateway's flows, in that gateway's table, for its whole life, even
// when that gateway failed to start.
func (u *Uplink) Attach(tbl *conntrack.Table, rules *nat.Rules) error {
	if rules != nil {
		if err := u.onBridge(rules.Bridged()); err != nil {
			return err
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return fmt.Errorf("hostnet: %w", net.ErrClosed)
	}
	if !u.tbl.CompareAndSwap(nil, tbl) {
		return errors.New("hostnet: the uplink was given to a gateway already")
	}
	u.rules.Store(rules)
	sub := tbl.SubscribeTo(eventBuffer, conntrack.EventDestroy)
	u.wg.Add(1) // under u.mu, with closed checked: Close cannot be waiting yet
	go u.reap(sub)
	return nil
}

// Claims implements nat.Terminator: flows to the host-loopback address,
// and to the DNS address.
func (u *Uplink) Claims(dst netip.Addr) bool {
	return dst.IsValid() && (dst == u.cfg.HostLoopback || dst == u.cfg.DNS)
}

// Inbound implements nat.Terminator: the flows the uplink dials into the
// container for clients of published ports.
func (u *Uplink) Inbound(t conntrack.Tuple) (orig, reply conntrack.Tuple, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.inbound[t]
	return e.orig, e.reply, ok
}

// onBridge checks the uplink's addresses on the bridge against the
// gateway's subnet sub (its address with the bridge's prefix): Gateway
// must be the gateway's own address, and DNS, when set, another host
// address of the subnet, where containers reach it on their link (the
// gateway answers ARP for it). Config holds no subnet, so New cannot.
func (u *Uplink) onBridge(sub netip.Prefix) error {
	if !sub.IsValid() {
		return nil
	}
	if u.cfg.Gateway != sub.Addr() {
		return fmt.Errorf("hostnet: gateway address %v is not the gateway's, %v (nat.Config.Subnet)", u.cfg.Gateway, sub.Addr())
	}
	if d := u.cfg.DNS; d.IsValid() {
		lan := sub.Masked()
		if !lan.Contains(d) || d == lan.Addr() || d == lastAddr(lan) {
			return fmt.Errorf("hostnet: DNS address %v is not a host address of the bridge subnet %v", d, lan)
		}
	}
	return nil
}

// lastAddr is the last address of the IPv4 prefix p: its broadcast
// address.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | uint32(1<<(32-p.Bits())-1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// Start implements nat.Uplink: packets from the host sockets go to
// deliver one at a time, from whichever goroutine made them (a splice's
// pump or timer, a host socket's reader), or from the link's own when
// others are waiting.
func (u *Uplink) Start(deliver func(frame []byte, off bridge.Offload)) error {
	if u.tbl.Load() == nil {
		return errors.New("hostnet: the uplink needs a gateway: give it to nat.New")
	}
	if !u.started.CompareAndSwap(false, true) {
		return errors.New("hostnet: uplink already started")
	}
	u.deliver = deliver
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.ln.run(u.ctx, deliver)
	}()
	return nil
}

// EndBatch implements bridge.BatchEnder, which the gateway passes on (see
// nat.Uplink): the packets of a batch were all sent, and the bytes the
// splices held for its end go to their host sockets, each splice's in one
// write, with its FIN if that came too (holdLocked). Until the gateway
// first calls it, the splices hold nothing.
func (u *Uplink) EndBatch() {
	if !u.batchEnds.Load() {
		u.batchEnds.Store(true)
	}
	for {
		u.pendMu.Lock()
		n := len(u.pend)
		if n == 0 {
			u.pendMu.Unlock()
			return
		}
		s := u.pend[n-1]
		u.pend[n-1] = nil
		u.pend = u.pend[:n-1]
		u.pendMu.Unlock()
		s.sendHeld()
	}
}

// Send implements nat.Uplink: a packet from a container to the outside.
// TCP goes to its splice, which a SYN makes (a segment of no flow is
// reset); UDP and ICMP echo to their host sockets, which the first packet
// of a flow opens. It is called from the gateway's
// goroutines and never waits for the network.
func (u *Uplink) Send(frame []byte, dst netip.Addr, off bridge.Offload) {
	pkt := frame[min(nat.Headroom, len(frame)):]
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		u.stats.DropMalformed.Add(1)
		return
	}
	if n := int(binary.BigEndian.Uint16(pkt[2:])); n >= 20 && n <= len(pkt) {
		pkt = pkt[:n] // no link padding
	}
	if ihl := int(pkt[0]&0xf) * 4; conntrack.Proto(pkt[9]) == conntrack.ProtoTCP && off.Flags&(bridge.OffloadNeedsCsum|bridge.OffloadDataValid) == 0 &&
		(ihl < 20 || len(pkt) < ihl+tcpMinSize || !nat.TransportChecksumOK(pkt, ihl, conntrack.ProtoTCP)) {
		// As a TCP endpoint (RFC 9293 3.1) and Linux's conntrack: a
		// segment with a bad checksum is discarded, and opens, resets
		// or carries nothing. A pending checksum is the sender's.
		u.stats.DropMalformed.Add(1)
		return
	}
	if conntrack.Proto(pkt[9]) == conntrack.ProtoTCP && u.toSplice(pkt) {
		return // a flow's segment: read where it is, not decoded
	}
	// A flow's first packet, or a datagram.
	var p conntrack.Packet
	if p.Decode(pkt) != nil || !p.Tuple.Src.Is4() {
		u.stats.DropMalformed.Add(1)
		return
	}
	if pr := p.Tuple.Proto; p.Kind == conntrack.KindFlow && (pr == conntrack.ProtoUDP || pr == conntrack.ProtoICMP) && !datagramChecksumOK(pkt[:p.Len], p.L4Off, pr, off) {
		// Only a datagram's payload leaves, under a checksum the host
		// makes anew: one corrupted on the way would reach its
		// destination as sound. Linux's conntrack takes it as invalid
		// (no NAT), and the destination's stack discards it.
		u.stats.DropMalformed.Add(1)
		return
	}
	switch p.Tuple.Proto {
	case conntrack.ProtoTCP:
		switch {
		case p.Kind != conntrack.KindFlow:
			u.stats.DropMalformed.Add(1)
		case p.TCP.Flags&(conntrack.TCPSyn|conntrack.TCPAck|conntrack.TCPRst) == conntrack.TCPSyn:
			u.outboundTCP(&p, pkt)
		default:
			u.resetStray(&p)
		}
	case conntrack.ProtoUDP:
		if p.Kind != conntrack.KindFlow {
			// A fragment, whose UDP header (if any) does not describe
			// it: the gateway hands over whole datagrams.
			u.stats.DropMalformed.Add(1)
			return
		}
		u.sendUDP(&p, pkt[:p.Len])
	case conntrack.ProtoICMP:
		u.sendICMP(&p, pkt[:p.Len])
	default:
		u.stats.DropProto.Add(1)
	}
}

// datagramChecksumOK reports whether the UDP datagram or ICMP message
// pkt, whose transport header is at ihl, has a checksum that verifies, or
// none to verify: a UDP checksum of zero, or one pending or vouched for
// (the TAP's offload, off).
func datagramChecksumOK(pkt []byte, ihl int, proto conntrack.Proto, off bridge.Offload) bool {
	switch {
	case off.Flags&(bridge.OffloadNeedsCsum|bridge.OffloadDataValid) != 0:
		return true
	case proto == conntrack.ProtoICMP:
		return nat.Checksum(pkt[ihl:]) == 0
	}
	// Over the UDP length, which Decode checked, as Linux trims the
	// datagram to it first.
	return nat.TransportChecksumOK(pkt[:ihl+int(binary.BigEndian.Uint16(pkt[ihl+4:]))], ihl, proto)
}

// Close stops the uplink: it closes every flow and listener, and waits
// for every goroutine. It is idempotent.
func (u *Uplink) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		<-u.closeDone // a concurrent Close returns only once the first is done
		return nil
	}
	u.closed = true
	flows := make([]*flow, 0, len(u.flows))
	for _, f := range u.flows {
		flows = append(flows, f)
	}
	var ls []listener
	for _, l := range u.pubs {
		ls = append(ls, l...)
	}
	u.pubs = map[nat.RuleID][]listener{}
	u.mu.Unlock()
	u.cancel()
	for _, l := range ls {
		l.Close()
	}
	for _, f := range flows {
		f.release()
	}
	u.poll.close()
	u.wg.Wait()
	// A timer that fired before its flow was released may still be
	// running its callback, which finds the flow ended: waited for.
	u.tmu.Lock()
	u.timersDone = true
	u.tmu.Unlock()
	close(u.closeDone)
	return nil
}

// Stats are the uplink's counters, which Uplink.Counters reads out by
// name ("tcp_opened", "drop_in_flight", ...): each field's name in
// lower case with underscores between its words ("inbound_synack_again"
// for InboundSynAckAgain). Counters also names "drop_queue_full", the
// packets for the gateway that found its queue (Config.QueueLen) full:
// a splice's segments, sent again soon after, and datagrams, lost.
type Stats struct {
	TCPOpened, TCPRefused, TCPUnreachable, TCPTimedOut atomic.Uint64
	UDPOpened, PingOpened, InboundOpened               atomic.Uint64
	InboundRefused                                     atomic.Uint64 // clients of published ports the container refused
	InboundRetransmits                                 atomic.Uint64 // timeouts that sent a published port's client's bytes to the container again
	InboundFastRetransmits                             atomic.Uint64 // the same after three duplicate ACKs, without waiting for the timeout
	InboundRequeued                                    atomic.Uint64 // segments to the container the full link queue refused, sent again soon after (they never left)
	InboundSynAckAgain                                 atomic.Uint64 // SYN-ACKs a container sent again: our ACK of its first was lost or late
	OutboundRetransmits                                atomic.Uint64 // the same four for the containers' own connections: timeouts that sent bytes from the host again,
	OutboundFastRetransmits                            atomic.Uint64 // fast retransmissions,
	OutboundRequeued                                   atomic.Uint64 // segments the full link queue refused,
	OutboundSynAgain                                   atomic.Uint64 // and SYNs a container sent again while its SYN-ACK was due
	TCPStrayReset                                      atomic.Uint64 // TCP segments of no flow from a container, answered with a reset
	Released                                           atomic.Uint64 // flows that ended and gave back their socket: opened, or failed while being opened
	SweepsAll                                          atomic.Uint64 // checks of every flow against the table, for the table's destroy events lost (more at once than the subscription's buffer holds)
	DropMalformed, DropProto, DropLoopback             atomic.Uint64
	DropPerSource, DropTableFull, DropPingRefused      atomic.Uint64
	DropHostFull                                       atomic.Uint64 // datagrams a full host socket refused
	DropInFlight                                       atomic.Uint64 // TCP connections beyond the 1024 being opened at once (in all, or 256 for one container): a container's SYN dropped, a published port's client reset
	DropCollision                                      atomic.Uint64 // clients of published ports that would be the same flow to the container as a live one (loopback clients shown as the gateway with the same port, or no other port free to show a client with, UDP and TCP alike: one client port to two published ports of one container port is shown with another port)
	DropConntrack                                      atomic.Uint64 // flows conntrack refused, the table not full: a first packet it takes as invalid, a reply tuple in use
	StaleEntries                                       atomic.Uint64 // entries no flow carried any more (their socket gone) that a datagram flow's first packet found, and replaced
	HostSocketErrors                                   atomic.Uint64 // datagram flows ended by their host socket failing (not an ICMP error, which it reports and lives on)
	HostErrors                                         atomic.Uint64 // ICMP errors the network sent about the datagram flows (UDP, echo), passed on to their containers
	DropNoSocket                                       atomic.Uint64 // new flows (a UDP or echo flow's first datagram, a TCP connection's SYN) dropped because the host could not make their socket (out of descriptors or memory) or had no local port left for it
	DropBuffered                                       atomic.Uint64 // TCP segments from containers (or the part of one) not kept, out of order or for a slow host socket, because the uplink held Config.MaxBuffered bytes
}

// Counters returns a snapshot of the counters, by name.
func (u *Uplink) Counters() map[string]uint64 {
	s := &u.stats
	return map[string]uint64{
		"tcp_opened": s.TCPOpened.Load(), "tcp_refused": s.TCPRefused.Load(),
		"tcp_unreachable": s.TCPUnreachable.Load(), "tcp_timed_out": s.TCPTimedOut.Load(),
		"udp_opened": s.UDPOpened.Load(), "ping_opened": s.PingOpened.Load(),
		"inbound_opened": s.InboundOpened.Load(), "inbound_refused": s.InboundRefused.Load(),
		"inbound_retransmits": s.InboundRetransmits.Load(), "inbound_fast_retransmits": s.InboundFastRetransmits.Load(),
		"inbound_requeued": s.InboundRequeued.Load(), "inbound_synack_again": s.InboundSynAckAgain.Load(),
		"outbound_retransmits": s.OutboundRetransmits.Load(), "outbound_fast_retransmits": s.OutboundFastRetransmits.Load(),
		"outbound_requeued": s.OutboundRequeued.Load(), "outbound_syn_again": s.OutboundSynAgain.Load(),
		"tcp_stray_reset": s.TCPStrayReset.Load(),
		"released":        s.Released.Load(), "sweeps_all": s.SweepsAll.Load(),
		"drop_malformed": s.DropMalformed.Load(), "drop_proto": s.DropProto.Load(),
		"drop_loopback": s.DropLoopback.Load(), "drop_per_source": s.DropPerSource.Load(),
		"drop_table_full": s.DropTableFull.Load(), "drop_ping_refused": s.DropPingRefused.Load(),
		"drop_queue_full": u.ln.drops.Load(), "drop_host_full": s.DropHostFull.Load(),
		"drop_in_flight": s.DropInFlight.Load(), "drop_collision": s.DropCollision.Load(),
		"drop_conntrack": s.DropConntrack.Load(),
		"stale_entries":  s.StaleEntries.Load(), "host_socket_errors": s.HostSocketErrors.Load(),
		"host_errors": s.HostErrors.Load(), "drop_no_socket": s.DropNoSocket.Load(),
		"drop_buffered": s.DropBuffered.Load(),
	}
}

// Flows returns the number of flows the uplink carries, those still being
// opened included.
func (u *Uplink) Flows() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.flows)
}

// warnOnce logs a problem the first time it happens.
func (u *Uplink) warnOnce(key, msg string, args ...any) {
	u.mu.Lock()
	seen := u.warned[key]
	u.warned[key] = true
	u.mu.Unlock()
	if !seen {
		u.log.Warn(msg, args...)
	}
}

// dstVerdict is what hostDst says of a destination.
type dstVerdict uint8

const (
	dstOK        dstVerdict = iota // dial the address it returns
	dstRefused                     // the host's loopback, which containers may not reach
	dstNoService                   // a port of the DNS address other than 53: as a host with nothing listening there
)

// hostDst maps the destination a container asked for to the one dialled
// on the host: the DNS address's port 53 to the resolver, the
// host-loopback address to 127.0.0.1; the host's loopback itself is
// refused, the DNS address's other ports serve nothing. Both count as
// DropLoopback.
func (u *Uplink) hostDst(dst netip.AddrPort) (netip.AddrPort, dstVerdict) {
	switch {
	case u.cfg.DNS.IsValid() && dst.Addr() == u.cfg.DNS:
		if dst.Port() != 53 {
			u.stats.DropLoopback.Add(1)
			return netip.AddrPort{}, dstNoService
		}
		if u.resolv != nil {
			return u.resolv.get(), dstOK
		}
		return u.cfg.Resolver, dstOK
	case u.Claims(dst.Addr()):
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port()), dstOK
	case dst.Addr().IsLoopback() || dst.Addr().IsUnspecified():
		u.stats.DropLoopback.Add(1)
		return netip.AddrPort{}, dstRefused
	}
	return dst, dstOK
}

// udpLocalAddr is the local address for host sockets of outbound UDP
// flows (Config.OutboundAddr), or nil.
func (u *Uplink) udpLocalAddr() *net.UDPAddr {
	if !u.cfg.OutboundAddr.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.cfg.OutboundAddr, 0))
}
