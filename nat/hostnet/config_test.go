package hostnet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/nat"
)

// A negative bound in Config is refused, naming the field, as
// MaxFlowsPerSource always was: none of them silently means the default.
func TestNewRefusesNegativeBounds(t *testing.T) {
	gw := netip.MustParseAddr("10.0.2.2")
	for name, cfg := range map[string]Config{
		"ConnectTimeout":    {Gateway: gw, ConnectTimeout: -1},
		"MaxFlowsPerSource": {Gateway: gw, MaxFlowsPerSource: -1},
		"QueueLen":          {Gateway: gw, QueueLen: -1},
		"QueueBytes":        {Gateway: gw, QueueBytes: -1},
		"MaxBuffered":       {Gateway: gw, MaxBuffered: -1},
	} {
		u, err := New(cfg)
		if err == nil {
			u.Close()
			t.Errorf("negative %s accepted", name)
		} else if !strings.Contains(err.Error(), name) {
			t.Errorf("negative %s: error %q does not name it", name, err)
		}
	}
}

// The uplink's addresses on the bridge are checked against the gateway's
// subnet when the gateway starts it: Gateway must be the gateway's own
// address, DNS another host address of the subnet. Neither fits any
// other, and Config holds no subnet for New to check them against.
func TestStartChecksBridgeAddresses(t *testing.T) {
	sub := netip.MustParsePrefix("10.0.2.2/24")
	resolver := netip.MustParseAddrPort("127.0.0.1:53")
	for _, tc := range []struct {
		name, gw, dns, want string
	}{
		{"matching", "10.0.2.2", "10.0.2.3", ""},
		{"no DNS", "10.0.2.2", "", ""},
		{"another gateway address", "10.0.2.1", "10.0.2.3", "gateway address 10.0.2.1"},
		{"DNS off the subnet", "10.0.2.2", "10.0.3.3", "DNS address 10.0.3.3"},
		{"DNS the network address", "10.0.2.2", "10.0.2.0", "DNS address 10.0.2.0"},
		{"DNS the broadcast address", "10.0.2.2", "10.0.2.255", "DNS address 10.0.2.255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Gateway: netip.MustParseAddr(tc.gw), Resolver: resolver}
			if tc.dns != "" {
				cfg.DNS = netip.MustParseAddr(tc.dns)
			}
			up, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			br, err := bridge.New(bridge.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer br.Close()
			gw, err := nat.New(nat.Config{Bridge: br, Subnet: sub, Uplink: up})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("nat.New: %v", err)
			case tc.want == "":
				gw.Close()
			case err == nil:
				gw.Close()
				t.Fatalf("nat.New accepted Gateway %s, DNS %q on %v", tc.gw, tc.dns, sub)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("nat.New: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
