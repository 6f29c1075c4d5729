package hostnet_test

import (
	"log"
	"net/netip"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/nat"
	"github.com/usernat/usernat/nat/hostnet"
)

// Example wires a rootless container's network as `usernat` does by
// default (slirp4netns's addresses): a TAP device in the container's
// network namespace on a bridge, a gateway at 10.0.2.2 whose uplink is
// the host's sockets, DNS forwarded at 10.0.2.3 to the host's resolver,
// and the host's port 8080 published to the container's port 80, its
// clients seen with their own addresses. Inside the container, tap0 is
// then given 10.0.2.100/24 and a default route via 10.0.2.2 (`usernat
// --configure PID tap0`, slirp4netns's command line, does that), and its
// resolv.conf names nameserver 10.0.2.3.
//
// It needs a container to run in (the namespace of PID 4242 here), so it
// is compiled, not run, by go test.
func Example() {
	const mtu = 65520
	br, err := bridge.New(bridge.Config{MTU: mtu})
	if err != nil {
		log.Fatal(err)
	}
	defer br.Close()
	tap, err := bridge.OpenTAP(bridge.TAPConfig{Name: "tap0", NetNS: "/proc/4242/ns/net", MTU: mtu})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := br.AddPort(tap, bridge.PortConfig{Name: "tap0"}); err != nil {
		log.Fatal(err) // the bridge has closed the TAP
	}
	up, err := hostnet.New(hostnet.Config{
		Gateway: netip.MustParseAddr("10.0.2.2"),
		DNS:     netip.MustParseAddr("10.0.2.3"), // forwarded to /etc/resolv.conf's nameserver
	})
	if err != nil {
		log.Fatal(err)
	}
	gw, err := nat.New(nat.Config{Bridge: br, Subnet: netip.MustParsePrefix("10.0.2.2/24"), MTU: mtu, Uplink: up})
	if err != nil {
		up.Close()
		log.Fatal(err)
	}
	defer gw.Close() // closes the uplink, ending every flow
	web, err := nat.ParsePublish("8080:10.0.2.100:80/tcp")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := up.Publish(web); err != nil {
		log.Fatal(err)
	}
	// ... until the container is done; meanwhile gw.Table() lists its
	// flows, as `conntrack -L` would, and up.Counters() what was dropped.
}
