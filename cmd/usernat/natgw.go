package main

import (
	"io"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
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
		return nil, err
	}
	return natGateway{g}, nil
}

func (n natGateway) Table() *conntrack.Table      { return n.g.Table() }
func (n natGateway) Publisher() publisher         { return newPublisher(n.g.Rules()) }
func (n natGateway) WriteRules(w io.Writer) error { return n.g.WriteRules(w) }
func (n natGateway) Stats(m map[string]uint64)    { addCounters(m, "gateway", n.g.Stats()) }
func (n natGateway) Close() error                 { return n.g.Close() }
