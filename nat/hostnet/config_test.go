package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// uplinkAndBridge makes an uplink of cfg and a bridge for its gateway,
// both closed when the test ends.
func uplinkAndBridge(t *testing.T, cfg Config) (*Uplink, *bridge.Bridge) {
	t.Helper()
	up, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	br, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	return up, br
}

// The uplink's addresses on the bridge are checked against the gateway's
// subnet when the gateway takes it (Attach): Gateway must be the
// gateway's own address, DNS another host address of the subnet. Neither
// fits any other, and Config holds no subnet for New to check them
// against.
func TestAttachChecksBridgeAddresses(t *testing.T) {
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
			up, br := uplinkAndBridge(t, cfg)
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

// An uplink a gateway refused for its addresses is left as it was, for a
// gateway it fits; one given to a gateway is refused by any other, even
// when the first failed to start, rather than carrying flows into a
// table nobody reads; a closed one is refused.
func TestAttachOnce(t *testing.T) {
	resolver := netip.MustParseAddrPort("127.0.0.1:53")
	up, br := uplinkAndBridge(t, Config{Gateway: netip.MustParseAddr("10.0.2.2"), DNS: netip.MustParseAddr("10.0.2.3"), Resolver: resolver})
	if gw, err := nat.New(nat.Config{Bridge: br, Subnet: netip.MustParsePrefix("10.9.0.1/24"), Uplink: up}); err == nil {
		gw.Close()
		t.Fatal("nat.New took an uplink whose gateway address is not its own")
	}
	gw, err := nat.New(nat.Config{Bridge: br, Subnet: netip.MustParsePrefix("10.0.2.2/24"), Uplink: up})
	if err != nil {
		t.Fatalf("the uplink, refused by another gateway, then: %v", err)
	}
	defer gw.Close()
	if gw2, err := nat.New(nat.Config{Bridge: br, Subnet: netip.MustParsePrefix("10.0.2.2/24"), Uplink: up}); err == nil {
		gw2.Close()
		t.Fatal("a second gateway took an uplink given to one already")
	} else if !strings.Contains(err.Error(), "given to a gateway already") {
		t.Errorf("a second gateway: %v, want it to say the uplink was given to one already", err)
	}

	closed, err := New(Config{Gateway: netip.MustParseAddr("10.0.2.2"), Resolver: resolver})
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	if gw3, err := nat.New(nat.Config{Bridge: br, Subnet: netip.MustParsePrefix("10.0.2.2/24"), Uplink: closed}); err == nil {
		gw3.Close()
		t.Fatal("a gateway took a closed uplink")
	} else if !errors.Is(err, net.ErrClosed) {
		t.Errorf("a closed uplink: %v, want net.ErrClosed", err)
	}
}

// A gateway that fails after it took the uplink (its bridge closed, so
// that its port cannot be added) leaves the uplink closed: it publishes
// no port whose clients it would accept and carry nowhere.
func TestFailedGatewayClosesUplink(t *testing.T) {
	up, br := uplinkAndBridge(t, Config{Gateway: netip.MustParseAddr("10.0.2.2"), Resolver: netip.MustParseAddrPort("127.0.0.1:53")})
	br.Close()
	if gw, err := nat.New(nat.Config{Bridge: br, Subnet: netip.MustParsePrefix("10.0.2.2/24"), Uplink: up}); err == nil {
		gw.Close()
		t.Fatal("nat.New took a closed bridge")
	}
	p, err := nat.ParsePublish("127.0.0.1:18081:10.0.2.100:80/tcp")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := up.Publish(p); !errors.Is(err, net.ErrClosed) {
		up.Unpublish(id)
		t.Fatalf("Publish on the uplink of a gateway that failed: %v, want net.ErrClosed", err)
	}
}

// A gateway's MAC that the bridge would refuse is refused before the
// gateway takes the uplink, which stays free for a gateway that fits.
func TestMulticastMACLeavesUplinkFree(t *testing.T) {
	up, br := uplinkAndBridge(t, Config{Gateway: netip.MustParseAddr("10.0.2.2"), Resolver: netip.MustParseAddrPort("127.0.0.1:53")})
	sub := netip.MustParsePrefix("10.0.2.2/24")
	if gw, err := nat.New(nat.Config{Bridge: br, Subnet: sub, Uplink: up, MAC: bridge.MustParseMAC("01:02:03:04:05:06")}); err == nil {
		gw.Close()
		t.Fatal("nat.New took a multicast MAC")
	} else if !strings.Contains(err.Error(), "01:02:03:04:05:06") {
		t.Errorf("nat.New: %v, want an error naming the MAC", err)
	}
	gw, err := nat.New(nat.Config{Bridge: br, Subnet: sub, Uplink: up})
	if err != nil {
		t.Fatalf("the uplink, after a gateway refused its MAC: %v", err)
	}
	gw.Close()
}

// Close waits for a timer's callback that is running (a splice's
// retransmission or delayed acknowledgement, an acceptor's retry), so no
// goroutine of the uplink's outlives it, and a timer that fires after it
// runs nothing.
func TestCloseWaitsForTimers(t *testing.T) {
	up, _ := uplinkAndBridge(t, Config{Gateway: netip.MustParseAddr("10.0.2.2"), Resolver: netip.MustParseAddrPort("127.0.0.1:53")})
	running, release := make(chan struct{}), make(chan struct{})
	up.afterFunc(0, func() {
		close(running)
		<-release
	})
	<-running
	closed := make(chan struct{})
	go func() {
		up.Close()
		close(closed)
	}()
	select {
	case <-closed:
		close(release)
		t.Fatal("Close returned while a timer's callback ran")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return once the callback ended")
	}
	var ran atomic.Bool
	up.afterFunc(0, func() { ran.Store(true) })
	time.Sleep(50 * time.Millisecond)
	if ran.Load() {
		t.Error("a timer fired after Close ran its callback")
	}
}
