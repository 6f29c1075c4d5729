package rtnl_test

import (
	"log"
	"net/netip"

	"github.com/usernat/usernat/internal/rtnl"
)

// Give a container's eth0 its address and default route, as usernat
// gateway --port /run/netns/web:eth0=172.17.0.4/16 does (as root).
func Example() {
	err := rtnl.ConfigureLink("/run/netns/web", "eth0",
		netip.MustParsePrefix("172.17.0.4/16"), netip.MustParseAddr("172.17.0.1"))
	if err != nil {
		log.Fatal(err)
	}
}

// The same, a step at a time, over one socket in the namespace.
func ExampleConn() {
	c, err := rtnl.Open("/run/netns/web")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	eth0, err := c.LinkIndex("eth0")
	if err != nil {
		log.Fatal(err)
	}
	if err := c.AddAddr(eth0, netip.MustParsePrefix("172.17.0.4/16")); err != nil {
		log.Fatal(err)
	}
	if err := c.SetLinkUp(eth0); err != nil {
		log.Fatal(err)
	}
	if err := c.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("172.17.0.1"), eth0); err != nil {
		log.Fatal(err)
	}
}
