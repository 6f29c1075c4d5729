// Package topo builds the reference experiment, Docker's default bridge
// network as `docker run -p 8080:80` makes it (client 192.168.2.104 on the
// LAN, the gateway at 192.168.2.116 and 172.17.0.1, a web container at
// 172.17.0.4 published as :8080, a second container at 172.17.0.5), in
// network namespaces: containers whose eth0 are TAP ports of a usernat bridge, a
// usernat gateway on that bridge, and a client on the LAN whose eth0 is the
// TAP the gateway's link uplink drives. The nat integration tests and
// examples/docker0 share it.
//
// Build it only inside a private network namespace (`unshare --net`):
// everything it creates is a namespace of its own, and nothing it sends
// can leave.
package topo

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/nat"
)

// The reference experiment's addresses.
var (
	HostAddr   = netip.MustParsePrefix("192.168.2.116/24") // the gateway on the LAN
	ClientAddr = netip.MustParsePrefix("192.168.2.104/24") // the client on the LAN
	GatewayNet = netip.MustParsePrefix("172.17.0.1/16")    // docker0
	Web        = netip.MustParsePrefix("172.17.0.4/16")    // the nginx-like container
	Second     = netip.MustParsePrefix("172.17.0.5/16")    // its neighbour
)

// Config configures a Topo. The zero Config is the reference experiment
// with containers Web and Second.
type Config struct {
	// Containers are the containers' addresses; nil means Web and Second.
	Containers []netip.Prefix
	// MTU of the bridge side and of the uplink; 0 means 1500.
	MTU, UplinkMTU int
	// Timeouts for the gateway's conntrack table.
	Timeouts conntrack.Timeouts
	// Offload opens the containers' TAP devices with checksum and
	// segmentation offload; UplinkOffload the client's.
	Offload, UplinkOffload bool
	// LAN puts the client and the gateway's uplink on a second usernat
	// bridge, so the LAN can be captured like docker0.
	LAN bool
}

// Topo is a built experiment.
type Topo struct {
	Bridge     *bridge.Bridge
	Gateway    *nat.Gateway
	Containers []*Container
	Client     *netns.NS
	// LAN is the LAN bridge when Config.LAN is set.
	LAN *bridge.Bridge
	// Extra is a spare port of the bridge, for frames written by hand.
	Extra *bridge.Pipe

	closers []func() error
}

// Container is a namespace whose eth0 is a port of the bridge.
type Container struct {
	NS   *netns.NS
	Addr netip.Prefix
	Port *bridge.Attachment
}

// New builds the experiment. Close undoes it.
func New(cfg Config) (_ *Topo, err error) {
	t := &Topo{}
	defer func() {
		if err != nil {
			t.Close() // t, not the result: an error returns nil
		}
	}()
	mtu, upMTU := cfg.MTU, cfg.UplinkMTU
	if mtu == 0 {
		mtu = 1500
	}
	if upMTU == 0 {
		upMTU = 1500
	}
	if t.Bridge, err = bridge.New(bridge.Config{Name: "docker0"}); err != nil {
		return nil, err
	}
	t.closers = append(t.closers, t.Bridge.Close)
	addrs := cfg.Containers
	if addrs == nil {
		addrs = []netip.Prefix{Web, Second}
	}
	for _, a := range addrs {
		c, err := t.container(a, mtu, cfg.Offload)
		if err != nil {
			return nil, fmt.Errorf("container %v: %w", a, err)
		}
		t.Containers = append(t.Containers, c)
	}
	mine, theirs := bridge.NewPipe(bridge.PipeConfig{})
	if _, err := t.Bridge.AddPort(theirs, bridge.PortConfig{Name: "extra"}); err != nil {
		return nil, err
	}
	t.Extra = mine
	t.closers = append(t.closers, mine.Close)

	if t.Client, err = t.ns(); err != nil {
		return nil, err
	}
	tap, err := bridge.OpenTAP(bridge.TAPConfig{Name: "eth0", NetNS: t.Client.Path(), MTU: upMTU, Offload: cfg.UplinkOffload})
	if err != nil {
		return nil, err
	}
	var uplinkPort bridge.Port = tap
	if cfg.LAN {
		if t.LAN, err = bridge.New(bridge.Config{Name: "lan"}); err != nil {
			tap.Close()
			return nil, err
		}
		t.closers = append(t.closers, t.LAN.Close)
		if _, err := t.LAN.AddPort(tap, bridge.PortConfig{Name: "client"}); err != nil {
			return nil, err
		}
		gwEnd, lanEnd := bridge.NewPipe(bridge.PipeConfig{})
		if _, err := t.LAN.AddPort(lanEnd, bridge.PortConfig{Name: "gateway"}); err != nil {
			gwEnd.Close()
			return nil, err
		}
		uplinkPort = gwEnd
	}
	if err := t.Client.AddAddr("eth0", ClientAddr); err != nil {
		uplinkPort.Close()
		return nil, err
	}
	up, err := nat.NewLinkUplink(nat.LinkUplinkConfig{Port: uplinkPort, Addr: HostAddr, MTU: upMTU})
	if err != nil {
		uplinkPort.Close()
		return nil, err
	}
	t.Gateway, err = nat.New(nat.Config{
		Bridge: t.Bridge, Subnet: GatewayNet, MTU: mtu, Uplink: up,
		Conntrack: conntrack.Config{Timeouts: cfg.Timeouts},
	})
	if err != nil {
		up.Close()
		return nil, err
	}
	t.closers = append(t.closers, t.Gateway.Close)
	return t, nil
}

func (t *Topo) ns() (*netns.NS, error) {
	ns, err := netns.New()
	if err != nil {
		return nil, err
	}
	t.closers = append(t.closers, ns.Close)
	return ns, nil
}

func (t *Topo) container(addr netip.Prefix, mtu int, offload bool) (*Container, error) {
	ns, err := t.ns()
	if err != nil {
		return nil, err
	}
	tap, err := bridge.OpenTAP(bridge.TAPConfig{Name: "eth0", NetNS: ns.Path(), MTU: mtu, Offload: offload})
	if err != nil {
		return nil, err
	}
	c := &Container{NS: ns, Addr: addr}
	if c.Port, err = t.Bridge.AddPort(tap, bridge.PortConfig{Name: "veth-" + addr.Addr().String()}); err != nil {
		tap.Close()
		return nil, err
	}
	if err := ns.AddAddr("eth0", addr); err != nil {
		return nil, err
	}
	if err := ns.IP("route", "add", "default", "via", GatewayNet.Addr().String()); err != nil {
		return nil, err
	}
	return c, nil
}

// Publish adds the publish rule spec, in the -p syntax, to the gateway.
func (t *Topo) Publish(spec string) (nat.RuleID, error) {
	p, err := nat.ParsePublish(spec)
	if err != nil {
		return 0, err
	}
	return t.Gateway.Rules().AddPublish(p)
}

// Close undoes New, last made first. Closing twice is harmless.
func (t *Topo) Close() error {
	var errs []error
	for i := len(t.closers) - 1; i >= 0; i-- {
		errs = append(errs, t.closers[i]())
	}
	t.closers = nil
	return errors.Join(errs...)
}
