package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/nat/hostnet"
)

// hostArgs is a host-mode command line (--uplink host, the default) with
// one container, 10.0.2.100 on slirp4netns's network, and extra.
func hostArgs(t *testing.T, extra ...string) []string {
	sock := filepath.Join(t.TempDir(), "api.sock")
	return append([]string{"--subnet", "10.0.2.2/24", "--port", "/proc/self/ns/net:tap0=10.0.2.100/24", "--api-socket", sock}, extra...)
}

func wantUsageError(t *testing.T, args []string, want string) {
	t.Helper()
	cfg, err := parseGatewayArgs(args)
	if err == nil {
		t.Errorf("%q accepted (publish %+v); want a usage error saying %q", args, cfg.Publish, want)
		return
	}
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
		t.Errorf("%q: %v; want a usage error saying %q", args, err, want)
	}
}

// The --dns address is the gateway's own (it answers ARP for it, and the
// host-socket uplink claims its flows): no container can have it, which
// is why --port ...=ADDR refuses it ("address 10.0.2.3 is --dns's"). A
// port published to it could never reach a container either, yet -p takes
// it, and the gateway starts with a published port that leads nowhere.
func TestPublishToDNSAddressRefused(t *testing.T) {
	// The --port check this mirrors.
	wantUsageError(t, hostArgs(t, "--dns", "10.0.2.3", "--port", "/proc/self/ns/net:tap1=10.0.2.3/24"), "--dns")
	for _, spec := range []string{"8080:10.0.2.3:80", "5353:10.0.2.3:53/udp"} {
		wantUsageError(t, hostArgs(t, "--dns", "10.0.2.3", "-p", spec), "--dns")
	}
}

// Addresses no router forwards (0.0.0.0/8, 127.0.0.0/8, multicast, the
// limited broadcast) are dropped by the gateway before anything else
// (nat.Gateway.forward's martian check, TestMartiansNotForwarded), before
// the host-socket uplink can claim them: a --host-loopback of one maps
// nothing, and a --subnet in one forwards nothing. Both are taken.
func TestMartianHostLoopbackRefused(t *testing.T) {
	for _, a := range []string{"0.0.0.0", "0.1.2.3", "224.0.0.1", "239.1.2.3", "255.255.255.255"} {
		wantUsageError(t, hostArgs(t, "--host-loopback", a), "--host-loopback "+a)
	}
}

func TestMartianSubnetRefused(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	for _, s := range []string{"127.0.0.1/8", "224.0.0.1/24", "0.0.0.1/8", "239.1.2.1/24"} {
		// The subnet is checked before the ports, so any port will do.
		wantUsageError(t, []string{"--subnet", s, "--port", "/proc/self/ns/net:tap0", "--api-socket", sock}, "--subnet "+s)
	}
}

// add_hostfwd to the --dns address is refused as -p is.
func TestBackendPublishToDNSRefused(t *testing.T) {
	b, c := serveBackend(t, netip.MustParseAddr("172.17.0.4"))
	b.dns = netip.MustParseAddr("172.17.0.3")
	err := c.Call(context.Background(), api.CmdAddHostFwd, map[string]any{"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "172.17.0.3", "guest_port": 80}, nil)
	if err == nil || !strings.Contains(err.Error(), "--dns") || len(b.pub.List()) != 0 {
		t.Errorf("add_hostfwd to the DNS address: %v, published %+v; want a refusal", err, b.pub.List())
	}
}

// An unreadable resolv.conf, when --dns needs it, is told with the flag
// that sets the resolver instead (--dns-resolver), not hostnet's
// Config.Resolver; other errors pass as they are.
func TestResolverHint(t *testing.T) {
	cause := errors.New("read /etc/resolv.conf: permission denied")
	err := resolverHint(fmt.Errorf("wrapped: %w", &hostnet.ResolverError{Err: cause}))
	if err == nil || !strings.Contains(err.Error(), "--dns-resolver") || strings.Contains(err.Error(), "Config.Resolver") || !errors.Is(err, cause) {
		t.Errorf("resolverHint: %v, want --dns-resolver named, and the cause kept", err)
	}
	other := errors.New("other")
	if got := resolverHint(other); got != other {
		t.Errorf("resolverHint(other) = %v, want it unchanged", got)
	}
	if resolverHint(nil) != nil {
		t.Error("resolverHint(nil) is not nil")
	}
}
