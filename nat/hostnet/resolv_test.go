package hostnet

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// With no Config.Resolver, DNS follows /etc/resolv.conf when it changes
// (checked at most once a second), as libslirp's does: the host's
// resolver moves with its network (DHCP, VPN, Wi-Fi).
func TestResolverFollowsResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := resolvConfPath
	resolvConfPath = p
	defer func() { resolvConfPath = old }()
	dns := netip.MustParseAddr("10.0.2.3")
	u, err := New(Config{Gateway: netip.MustParseAddr("10.0.2.2"), DNS: dns})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if got, v := u.hostDst(netip.AddrPortFrom(dns, 53)); v != dstOK || got != netip.MustParseAddrPort("192.0.2.1:53") {
		t.Fatalf("queries to %v:53 go to %v (%v), want 192.0.2.1:53", dns, got, v)
	}
	if err := os.WriteFile(p, []byte("nameserver 192.0.2.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	got, v := u.hostDst(netip.AddrPortFrom(dns, 53))
	if want := netip.MustParseAddrPort("192.0.2.2:53"); v != dstOK || got != want {
		t.Fatalf("after resolv.conf changed: queries to %v:53 go to %v (verdict %v), want %v", dns, got, v, want)
	}
	// A file with no nameserver keeps the last.
	if err := os.WriteFile(p, []byte("# none\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if got, _ := u.hostDst(netip.AddrPortFrom(dns, 53)); got != netip.MustParseAddrPort("192.0.2.2:53") {
		t.Errorf("resolv.conf without a nameserver: %v, want the last one kept", got)
	}
}
