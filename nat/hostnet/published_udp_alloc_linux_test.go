package hostnet

import (
	"net"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/bridge"
)

// raceEnabled says whether the tests run with the race detector (race_test.go).
var raceEnabled bool

// A published UDP port's datagram of a known client finds its flow by
// what the host saw (servedDatagram) without allocating, for each of a
// client's two flows to two of the host's addresses.
func TestServedDatagramAllocs(t *testing.T) {
	u, _ := outboundUplink(t)
	delivered := 0
	d := func([]byte, bridge.Offload) { delivered++ }
	u.ln.deliver.Store(&d)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := rawConn(c)
	local := netip.AddrPortFrom(netip.IPv4Unspecified(), 5353)
	client := netip.MustParseAddrPort("198.51.100.2:40053")
	ctr := netip.MustParseAddrPort("10.0.2.100:53")
	tos := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("203.0.113.3")}
	buf := make([]byte, 28+64)
	for _, to := range tos { // the flows open
		u.servedDatagram(c, rc, buf, 64, client, ctr, local, to)
	}
	if n := u.Flows(); n != 2 {
		t.Fatalf("%d flows, want 2", n)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, to := range tos {
			u.servedDatagram(c, rc, buf, 64, client, ctr, local, to)
		}
	})
	// With the race detector, sync.Pool drops a quarter of what it is
	// given, so the link's buffers are made now and then: fewer than one
	// a datagram still shows that finding the flow allocates nothing.
	if raceEnabled && allocs/2 >= 1 || !raceEnabled && allocs != 0 {
		t.Errorf("%v allocations per datagram of a known client, want 0", allocs/2)
	}
	if n := u.Flows(); n != 2 || delivered < 2*101 {
		t.Errorf("%d flows, %d datagrams delivered; want 2 flows, each datagram delivered", n, delivered)
	}
}
