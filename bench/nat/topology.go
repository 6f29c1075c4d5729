package main

import (
	"errors"
	"net/netip"
	"strconv"

	"github.com/usernat/usernat/internal/benchkit"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/internal/topo"
)

// The reference experiment's addresses (internal/topo's), used only inside the
// namespaces made here.
var (
	clientAddr    = topo.ClientAddr // the client on the LAN
	hostAddr      = topo.HostAddr   // the gateway's uplink address
	gatewayAddr   = topo.GatewayNet // docker0
	containerAddr = topo.Web        // the container, serving on port 80

	publishedPort = 8080
	containerPort = 80
	lanServerPort = 5201 // the server in the client namespace that the container connects out to

	published = netip.AddrPortFrom(hostAddr.Addr(), uint16(publishedPort))
	lanServer = netip.AddrPortFrom(clientAddr.Addr(), uint16(lanServerPort))
)

// Device names: every namespace's link to the outside is eth0, as in a
// container and on a host.
const (
	eth0     = "eth0"
	docker0  = "docker0"
	hostVeth = "veth0" // the host end of the container's veth pair (kernel setup)
)

// topology is the reference experiment's three namespaces: client on the
// LAN, host (the gateway) and container. Whatever a setup adds to them is
// undone by Close, in reverse order, before the namespaces are released
// (which destroys their devices and rules).
type topology struct {
	client, host, container *netns.NS
	undo                    []func()
	// alive, when set, says whether the gateway process still runs, to
	// explain a measurement that failed.
	alive func() error
}

func newTopology() (*topology, error) {
	t := &topology{}
	for _, p := range []**netns.NS{&t.client, &t.host, &t.container} {
		ns, err := netns.New()
		if err != nil {
			t.Close()
			return nil, err
		}
		*p = ns
	}
	return t, nil
}

func (t *topology) onClose(f func()) { t.undo = append(t.undo, f) }

// Close undoes the setup and releases the namespaces. Closing twice is
// harmless.
func (t *topology) Close() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		t.undo[i]()
	}
	t.undo = nil
	for _, ns := range []*netns.NS{t.client, t.host, t.container} {
		if ns != nil {
			ns.Close()
		}
	}
}

// configureEnds sets what both setups share: the client's address on its
// eth0 and a wide ephemeral port range where connections start, so the
// connections/s run does not wait on port reuse in either setup.
func configureEnds(t *topology, mtu int) error {
	if err := t.client.SetLink(eth0, mtu); err != nil {
		return err
	}
	if err := t.client.AddAddr(eth0, clientAddr); err != nil {
		return err
	}
	for _, ns := range []*netns.NS{t.client, t.container} {
		if err := benchkit.Sysctl(ns, "ipv4/ip_local_port_range", "1024 65535"); err != nil {
			return err
		}
	}
	return nil
}

// steps runs ip commands in ns in order and stops at the first failure.
func steps(ns *netns.NS, cmds ...[]string) error {
	for _, args := range cmds {
		if err := ns.IP(args...); err != nil {
			return err
		}
	}
	return nil
}

func itoa(n int) string { return strconv.Itoa(n) }

var errNoNATTool = errors.New("neither nft (Debian package nftables) nor iptables (package iptables) found: " +
	"apt-get install nftables, or run without -install=false")
