package nat

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// Headroom is the room in front of every IP packet the gateway hands an
// Uplink or takes from one: the packet of frame f is f[Headroom:], so a
// link can put its Ethernet header there without copying the packet.
const Headroom = etherHeader

// Uplink is the gateway's way to the outside network. The link uplink
// (LinkUplink) is a network of its own where the gateway has an address and
// rewrites packets as the kernel's NAT does.
type Uplink interface {
	// Addrs returns the gateway's addresses on the outside network: the
	// masquerade source, and the host address of publish rules that name
	// none. The gateway asks on every packet and does not modify the
	// slice, so an implementation returns one it keeps.
	Addrs() []netip.Addr
	// MTU returns the largest IP packet the uplink carries.
	MTU() int
	// Start begins delivering the IP packets that arrive from outside,
	// each as a frame with the packet at frame[Headroom:], to deliver, one
	// at a time (from one goroutine, or from several in turn, never two
	// at once), until Close. The frame is the gateway's until deliver
	// returns, and deliver may rewrite it in place. off describes work
	// left for the packet (a pending checksum, TCP segmentation), with
	// offsets from the start of frame; an uplink that does not offload
	// passes the zero Offload. Start returns at once.
	Start(deliver func(frame []byte, off bridge.Offload)) error
	// Send sends the IP packet frame[Headroom:] towards dst. It may write
	// over frame[:Headroom] and keeps no reference to frame. off is the
	// zero Offload unless Offloading reports true.
	Send(frame []byte, dst netip.Addr, off bridge.Offload)
	// Offloading reports whether Send takes packets with work left: a
	// pending transport checksum, or a TCP packet to cut into segments of
	// at most the MTU (bridge.Offload). For an uplink that does not, the
	// gateway computes checksums and cuts segments itself.
	Offloading() bool
	// Close stops the uplink and waits for its goroutine. It is
	// idempotent.
	Close() error
}

// An Uplink may also be a bridge.BatchEnder: the gateway then calls its
// EndBatch once the packets of each batch of frames the bridge handed it
// (one read from a container's port, say) went to Send, so the uplink
// may hold back part of what a packet asks until the packets after it
// came (nat/hostnet sends a TCP segment's bytes and the FIN after them as
// one segment). EndBatch follows every Send of container traffic, from
// the goroutine that sent, or from another's batch end, never from inside
// the gateway's own sending to the bridge: EndBatch may deliver packets
// to the gateway at once.

// Terminator is an Uplink that terminates the flows it carries instead of
// forwarding their packets: the host-socket uplink (nat/hostnet), which
// carries a container's TCP connection over a host socket of its own and
// dials published ports into the container from the client's address.
// The gateway translates nothing for it: packets cross between the bridge
// and the uplink unchanged, masquerade and publish rules do not apply
// (the uplink does that work with host sockets), and each flow's
// conntrack entry says what the uplink did, its reply tuple being the
// host socket's (conntrack.Table.TrackTerminated). The gateway still
// answers for its own bridge address (pings, refusals) and routes between
// containers. Addrs may be empty: addresses outside are the host's.
type Terminator interface {
	Uplink
	// Attach is called once by New, before Start, with the gateway's
	// conntrack table (zone 0) and rules. The uplink creates the entry of
	// a flow from the bridge with Table.Track, the flow's first packet and
	// the tuple of its host socket as the reply, once it has opened that
	// socket; it releases a flow's resources when the entry leaves the
	// table. It lists in rules the ports it publishes, which the gateway
	// itself does not apply. An error (the uplink given to a gateway
	// already, or unfit for this one's subnet, Rules.Bridged) fails New,
	// and should leave the uplink as it was.
	Attach(t *conntrack.Table, rules *Rules) error
	// Inbound names the flow that a packet the uplink delivers opens
	// when no entry has it yet: tuple is the packet's (from the client,
	// or what stands for it, to the container), orig the flow as it
	// reached the host (the client to the published address and port),
	// reply the container's answer. ok false refuses the packet.
	Inbound(tuple conntrack.Tuple) (orig, reply conntrack.Tuple, ok bool)
	// Claims reports whether TCP and UDP flows from the bridge to dst
	// belong to the uplink rather than to the gateway: dst is the
	// gateway's own bridge address, which the uplink maps to the host's
	// loopback, or another address on the bridge subnet that the uplink
	// serves (a DNS forwarder's), which the gateway then answers ARP for.
	Claims(dst netip.Addr) bool
}

// LinkUplinkConfig configures a LinkUplink.
type LinkUplinkConfig struct {
	// Port carries the uplink's Ethernet frames: a TAP device on the
	// outside network (bridge.OpenTAP, possibly inside another network
	// namespace) or any bridge.Port. Required. The uplink owns it and
	// closes it.
	Port bridge.Port
	// Addr is the gateway's address on the outside network with the
	// prefix of the link, such as 192.168.2.116/24. Required; neither
	// the network's nor the broadcast address, and on no network that
	// meets 0.0.0.0/8, 127.0.0.0/8 or multicast (Unroutable).
	Addr netip.Prefix
	// Via is the next hop for destinations off the link, a host address
	// on the link other than Addr's (not the network's or the broadcast
	// address); when invalid,
	// only on-link destinations are reachable, and a packet to another
	// draws net unreachable, as from a router with no default route.
	Via netip.Addr
	// MTU is the largest IP packet on the link; 0 means 1500.
	MTU int
	// MAC is the gateway's MAC on the link; zero means a random locally
	// administered one.
	MAC bridge.MAC
	// Clock tells the time for neighbour (ARP) entries; nil means the
	// system clock.
	Clock Clock
}

// LinkUplink is an uplink over an Ethernet link where the gateway owns an
// IPv4 address, answers ARP, and reaches destinations off the link through
// a next hop.
type LinkUplink struct {
	l       *link
	addrs   []netip.Addr
	clock   Clock
	epoch   time.Time
	started chan struct{}
	done    chan struct{}
	once    sync.Once
	err     error
}

var _ Uplink = (*LinkUplink)(nil)

// NewLinkUplink returns an uplink over cfg.Port. It reads nothing until the
// gateway starts it.
func NewLinkUplink(cfg LinkUplinkConfig) (*LinkUplink, error) {
	if cfg.Port == nil {
		return nil, errors.New("nat: link uplink needs a Port")
	}
	if !cfg.Addr.IsValid() || !cfg.Addr.Addr().Is4() {
		return nil, fmt.Errorf("nat: link uplink address %v: need an IPv4 address with its prefix", cfg.Addr)
	}
	if cfg.Addr.Bits() < 31 && cfg.Addr.Addr() == cfg.Addr.Masked().Addr() {
		return nil, fmt.Errorf("nat: link uplink address %v: the address is the network address", cfg.Addr)
	}
	if err := checkPrefix("link uplink address", cfg.Addr); err != nil {
		return nil, err
	}
	if cfg.Via.IsValid() && (!cfg.Via.Is4() || !cfg.Addr.Contains(cfg.Via)) {
		return nil, fmt.Errorf("nat: next hop %v is not on the uplink's link %v", cfg.Via, cfg.Addr.Masked())
	}
	if cfg.Via == cfg.Addr.Addr() {
		return nil, fmt.Errorf("nat: next hop %v is the uplink's own address", cfg.Via)
	}
	if cfg.Addr.Bits() < 31 && (cfg.Via == cfg.Addr.Masked().Addr() || cfg.Via == broadcastOf(cfg.Addr)) {
		// No host answers ARP for either, and Linux refuses either as
		// a gateway: every packet off the link would vanish.
		return nil, fmt.Errorf("nat: next hop %v is the network or broadcast address of the uplink's link %v", cfg.Via, cfg.Addr.Masked())
	}
	mtu, err := checkMTU(cfg.MTU)
	if err != nil {
		return nil, err
	}
	mac := cfg.MAC
	if mac.IsZero() {
		mac = randomMAC()
	}
	u := &LinkUplink{clock: cfg.Clock, started: make(chan struct{}), done: make(chan struct{})}
	if u.clock == nil {
		u.clock = systemClock{}
	}
	u.epoch = u.clock.Now()
	u.l = newLink("uplink", cfg.Port, mac, cfg.Addr, cfg.Via, mtu, u.now)
	u.addrs = []netip.Addr{cfg.Addr.Addr()}
	return u, nil
}

func (u *LinkUplink) now() int64 { return int64(u.clock.Now().Sub(u.epoch)) }

// broadcast is the broadcast address of the uplink's subnet, which the
// gateway never forwards to.
func (u *LinkUplink) broadcast() netip.Addr { return broadcastOf(u.l.addr) }

// prefix is the uplink's address with its link's prefix, which the
// bridge subnet must not overlap.
func (u *LinkUplink) prefix() netip.Prefix { return u.l.addr }

// routes reports whether the link reaches dst: on the link, or through
// the next hop.
func (u *LinkUplink) routes(dst netip.Addr) bool {
	_, ok := u.l.nextHop(dst)
	return ok
}

// Addrs returns the uplink's address.
func (u *LinkUplink) Addrs() []netip.Addr { return u.addrs }

// MTU returns the link's MTU.
func (u *LinkUplink) MTU() int { return u.l.mtu }

// MAC returns the gateway's MAC on the link.
func (u *LinkUplink) MAC() bridge.MAC { return u.l.mac }

// Start starts the goroutine that reads the link.
func (u *LinkUplink) Start(deliver func(frame []byte, off bridge.Offload)) error {
	select {
	case <-u.started:
		return errors.New("nat: uplink already started")
	default:
	}
	close(u.started)
	go func() {
		defer close(u.done)
		u.l.run(deliver)
	}()
	return nil
}

// expire drops stale neighbours; the gateway's housekeeping calls it.
func (u *LinkUplink) expire() [][]byte { return u.l.neigh.expire(u.now()) }

// Send sends frame's packet to dst, resolving the next hop with ARP.
func (u *LinkUplink) Send(frame []byte, dst netip.Addr, off bridge.Offload) {
	u.l.send(frame, dst, off)
}

// Offloading reports whether the uplink's Port passes offloads along (a
// TAP opened with bridge.TAPConfig.Offload).
func (u *LinkUplink) Offloading() bool { return u.l.offloads() }

// Close closes the port and waits for the reader.
func (u *LinkUplink) Close() error {
	u.once.Do(func() {
		u.err = u.l.port.Close()
		select {
		case <-u.started:
			<-u.done
		default:
		}
	})
	return u.err
}

func checkMTU(mtu int) (int, error) {
	switch {
	case mtu == 0:
		return 1500, nil
	case mtu < 576 || mtu > 65520:
		return 0, fmt.Errorf("nat: MTU %d out of range [576, 65520]", mtu)
	}
	return mtu, nil
}

// randomMAC returns a random unicast, locally administered MAC.
func randomMAC() bridge.MAC {
	var m bridge.MAC
	rand.Read(m[:])
	m[0] = m[0]&^1 | 2
	return m
}
