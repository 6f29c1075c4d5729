package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
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

// A gateway whose bridge would be of no use is refused by New, as
// cmd/usernat refuses the --subnet, not made and left to drop every
// packet: a subnet meeting 127.0.0.0/8, 0.0.0.0/8 or multicast (each
// container's packets are martians), the gateway at the broadcast
// address, or a bridge network overlapping the uplink's.
func TestNewRefusesUnusableSubnet(t *testing.T) {
	for _, tc := range []struct {
		subnet string
		ok     bool
	}{
		{"172.17.0.1/16", true},
		{"10.0.2.2/24", true},
		{"127.0.0.1/8", false},
		{"127.1.2.3/16", false},
		{"0.0.0.1/8", false},
		{"224.0.0.1/24", false},
		{"239.1.2.3/8", false},
		{"96.0.0.1/3", false}, // 96.0.0.0-127.255.255.255 holds 127/8
		{"172.17.255.255/16", false},
		{"192.168.2.5/24", false},   // the uplink's network
		{"192.168.0.1/16", false},   // holds the uplink's network
		{"192.168.2.117/32", false}, // on the uplink's network
	} {
		br, err := bridge.New(bridge.Config{})
		if err != nil {
			t.Fatal(err)
		}
		port, _ := bridge.NewPipe(bridge.PipeConfig{})
		up, err := NewLinkUplink(LinkUplinkConfig{Port: port, Addr: netip.MustParsePrefix("192.168.2.116/24")})
		if err != nil {
			t.Fatal(err)
		}
		gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix(tc.subnet), Uplink: up})
		if (err == nil) != tc.ok {
			t.Errorf("subnet %s: New's error %v, want ok %v", tc.subnet, err, tc.ok)
		}
		if gw != nil {
			gw.Close()
		} else {
			up.Close()
		}
		br.Close()
	}
}

// NewLinkUplink refuses an address the gateway could not use on its
// link: the network's or the broadcast address, one in a block no router
// forwards, or a next hop that is the address itself or the link's
// network or broadcast address.
func TestNewLinkUplinkRefusesUnusableAddr(t *testing.T) {
	for _, tc := range []struct {
		addr, via string
		ok        bool
	}{
		{"192.168.2.116/24", "192.168.2.1", true},
		{"192.168.2.116/31", "", true},
		{"192.168.2.0/24", "", false},
		{"192.168.2.255/24", "", false},
		{"127.0.0.2/8", "", false},
		{"0.1.2.3/16", "", false},
		{"224.0.0.5/24", "", false},
		{"192.168.2.116/24", "192.168.2.116", false},
		{"192.168.2.116/24", "192.168.2.255", false},
		{"192.168.2.116/24", "192.168.2.0", false},
		{"192.168.2.116/31", "192.168.2.117", true},
	} {
		cfg := LinkUplinkConfig{Addr: netip.MustParsePrefix(tc.addr)}
		if tc.via != "" {
			cfg.Via = netip.MustParseAddr(tc.via)
		}
		port, peer := bridge.NewPipe(bridge.PipeConfig{})
		cfg.Port = port
		up, err := NewLinkUplink(cfg)
		if (err == nil) != tc.ok {
			t.Errorf("address %s via %q: error %v, want ok %v", tc.addr, tc.via, err, tc.ok)
		}
		if up != nil {
			up.Close()
		}
		port.Close()
		peer.Close()
	}
}

func TestUnroutablePrefix(t *testing.T) {
	for s, want := range map[string]bool{
		"172.17.0.1/16": false, "10.0.2.2/24": false, "192.168.2.116/24": false,
		"127.0.0.1/8": true, "126.0.0.1/7": true, "0.0.0.1/8": true, "1.0.0.1/7": true,
		"224.0.0.1/4": true, "192.0.0.1/2": true, "255.255.255.0/24": true, "128.0.0.1/1": true,
	} {
		if got := UnroutablePrefix(netip.MustParsePrefix(s)); got != want {
			t.Errorf("UnroutablePrefix(%s) = %v, want %v", s, got, want)
		}
	}
}
