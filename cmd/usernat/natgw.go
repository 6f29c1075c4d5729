package main

import (
	"io"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/nat"
	"github.com/usernat/usernat/nat/hostnet"
)

// natGateway is a running nat.Gateway as the command uses it.
type natGateway struct{ g *nat.Gateway }

// startGateway starts the gateway on cfg.Bridge with a link uplink over
// cfg.UplinkPort, which it owns from then on, error or not.
func startGateway(cfg gatewaySetup) (gatewayHandle, error) {
	up, err := nat.NewLinkUplink(nat.LinkUplinkConfig{
		Port: cfg.UplinkPort,
		Addr: cfg.UplinkAddr,
		Via:  cfg.UplinkVia,
		MTU:  cfg.MTU,
	})
	if err != nil {
		cfg.UplinkPort.Close()
		return nil, err
	}
	g, err := newGateway(cfg, up)
	if err != nil {
		return nil, err
	}
	return natGateway{g}, nil
}

// newGateway starts a nat.Gateway with uplink up, which it closes on
// error.
func newGateway(cfg gatewaySetup, up nat.Uplink) (*nat.Gateway, error) {
	g, err := nat.New(nat.Config{
		Bridge:    cfg.Bridge,
		Subnet:    cfg.Subnet,
		MTU:       cfg.MTU,
		Uplink:    up,
		Conntrack: cfg.Conntrack,
		Logger:    cfg.Logger,
	})
	if err != nil {
		up.Close()
	}
	return g, err
}

func (n natGateway) Table() *conntrack.Table      { return n.g.Table() }
func (n natGateway) Publisher() publisher         { return newPublisher(n.g.Rules()) }
func (n natGateway) WriteRules(w io.Writer) error { return n.g.WriteRules(w) }
func (n natGateway) Stats(m map[string]uint64)    { addCounters(m, "gateway", n.g.Stats()) }
func (n natGateway) Close() error                 { return n.g.Close() }

// hostGateway is a running nat.Gateway with a host-socket uplink.
type hostGateway struct {
	natGateway
	up *hostnet.Uplink
}

// startHostGateway starts the gateway on cfg.Bridge with a host-socket
// uplink (nat/hostnet) configured by hc.
func startHostGateway(cfg gatewaySetup, hc hostnet.Config) (gatewayHandle, error) {
	hc.Gateway = cfg.Subnet.Addr()
	up, err := hostnet.New(hc)
	if err != nil {
		return nil, err
	}
	g, err := newGateway(cfg, up)
	if err != nil {
		return nil, err
	}
	return hostGateway{natGateway{g}, up}, nil
}

func (h hostGateway) Publisher() publisher { return hostPublisher{h.up} }

func (h hostGateway) Stats(m map[string]uint64) {
	h.natGateway.Stats(m)
	for k, v := range h.up.Counters() {
		m["hostnet."+k] = v
	}
}

// hostPublisher publishes ports with the host-socket uplink's listeners.
type hostPublisher struct{ up *hostnet.Uplink }

func (p hostPublisher) Publish(f api.HostFwd) (int, error) {
	id, err := p.up.Publish(publishFromFwd(f))
	return int(id), err
}

func (p hostPublisher) Unpublish(id int) error { return p.up.Unpublish(nat.RuleID(id)) }

func (p hostPublisher) List() []api.HostFwd { return fwdsFromPublishes(p.up.Published()) }
