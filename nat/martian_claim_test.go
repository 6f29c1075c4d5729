package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/usernat/usernat/conntrack"
)

// An address the uplink claims (Terminator.Claims, hostnet's
// HostLoopback) reaches the uplink only when Unroutable says no: a claimed
// multicast, limited broadcast or 0.0.0.0/8 address is dropped as a
// martian first, so such a --host-loopback would map nothing, and
// cmd/usernat refuses it.
func TestMartianClaimNeverReachesUplink(t *testing.T) {
	for _, tc := range []struct {
		claim string
		want  int
	}{
		{"192.0.2.9", 1}, // a usable --host-loopback outside the subnet
		{"224.0.0.1", 0},
		{"255.255.255.255", 0},
		{"0.0.0.0", 0},
		{"0.1.2.3", 0},
	} {
		claim := netip.MustParseAddr(tc.claim)
		pg, up := newTermGateway(t, claim)
		gwMAC := pg.resolveGateway()
		pkt := ipPacket(ctrIP, claim, conntrack.ProtoUDP, udpHeader(40000, 80, 10))
		pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, pkt))
		deadline := time.Now().Add(5 * time.Second)
		for len(up.packets()) < tc.want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // time for one that should not come
		if got := len(up.packets()); got != tc.want {
			t.Errorf("claimed %v: %d packets reached the uplink, want %d (stats %+v)", claim, got, tc.want, pg.gw.Stats())
		}
	}
}

// A gateway whose bridge subnet is 127.0.0.0/8 forwards none of its
// containers' packets, each source being a martian: cmd/usernat refuses
// such a --subnet.
func TestLoopbackSubnetForwardsNothing(t *testing.T) {
	br, mine := newPipeBridge(t)
	up := &fakeTerminator{expect: map[conntrack.Tuple][2]conntrack.Tuple{}}
	gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix("127.0.0.1/8"), Uplink: up,
		Conntrack: conntrack.Config{ExpireInterval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close(); mine.Close(); br.Close() })
	ctr := netip.MustParseAddr("127.0.0.4")
	pkt := ipPacket(ctr, netip.MustParseAddr("198.51.100.2"), conntrack.ProtoUDP, udpHeader(40000, 53, 10))
	mine.WriteFrame(frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt))
	deadline := time.Now().Add(5 * time.Second)
	for gw.Stats().DropMartian == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := len(up.packets()); n != 0 || gw.Stats().DropMartian != 1 {
		t.Errorf("%d packets reached the uplink; stats %+v", n, gw.Stats())
	}
}
