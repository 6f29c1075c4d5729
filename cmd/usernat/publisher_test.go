package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernat/usernat/internal/api"

	"github.com/usernat/usernat/nat"
)

// natRulesForTest is a rule table with Docker's masquerade rule, as the
// gateway makes it, behind the command's publisher.
type natRulesForTest struct {
	r    nat.Rules
	masq int
}

func (n *natRulesForTest) publisher(t *testing.T) publisher {
	id, err := n.r.AddMasquerade(nat.Masquerade{Subnet: netip.MustParsePrefix("172.17.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	n.masq = int(id)
	return newPublisher(&n.r)
}

// A request without guest_addr, as Podman sends every one ("") and
// RootlessKit some, publishes to the default guest, as slirp4netns's go
// to 10.0.2.100: the one container given an address (--port ...=ADDR).
// With none, or several, it is refused, saying why.
func TestBackendDefaultGuest(t *testing.T) {
	one := []portSpec{{IfName: "tap0", Addr: netip.MustParsePrefix("172.17.0.4/16")}, {IfName: "tap1"}}
	two := append(one, portSpec{IfName: "tap2", Addr: netip.MustParsePrefix("172.17.0.5/16")})
	if g := defaultGuest(one); g != netip.MustParseAddr("172.17.0.4") {
		t.Errorf("one port with an address: default guest %v", g)
	}
	if g := defaultGuest(two); g.IsValid() {
		t.Errorf("two ports with addresses: default guest %v, want none", g)
	}
	for _, ports := range [][]portSpec{one, two} {
		b, c := serveBackend(t, defaultGuest(ports))
		// Podman's request, guest_addr "", with slirp4netns's tcp4.
		err := c.Call(context.Background(), api.CmdAddHostFwd, map[string]any{"proto": "tcp4", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "", "guest_port": 80}, nil)
		if len(ports) == len(one) {
			if err != nil {
				t.Fatalf("one container: %v", err)
			}
			if got := b.pub.List(); len(got) != 1 || got[0].GuestAddr != netip.MustParseAddr("172.17.0.4") || got[0].Proto != "tcp" {
				t.Errorf("published %+v, want tcp to 172.17.0.4", got)
			}
		} else if err == nil || !strings.Contains(err.Error(), "no one container to choose") {
			t.Errorf("two containers: %v, want a refusal saying why", err)
		}
	}
}

// add_hostfwd with an IPv6 host address, "::" above all (Podman passes
// the address of -p [::]:8080:80 through), is refused, as slirp4netns
// refuses it ("bad arguments.host_addr") and as -p does: the uplink is
// IPv4, and taking "::" for every IPv4 address would publish where the
// user did not ask.
func TestBackendIPv6HostAddrRefused(t *testing.T) {
	for _, addr := range []string{"::", "::ffff:0.0.0.0", "fd00::1"} {
		b, c := serveBackend(t, netip.MustParseAddr("172.17.0.4"))
		err := c.Call(context.Background(), api.CmdAddHostFwd, map[string]any{"proto": "tcp", "host_addr": addr, "host_port": 8080, "guest_addr": "172.17.0.4", "guest_port": 80}, nil)
		if err == nil || len(b.pub.List()) != 0 {
			t.Errorf("host_addr %q: %v, published %+v; want a refusal", addr, err, b.pub.List())
		}
	}
}

// serveBackend serves the command's API backend, with a rule table of
// Docker's masquerade behind it, its default guest guest, on a socket the
// test removes, and returns it with a client of it.
func serveBackend(t *testing.T, guest netip.Addr) (*backend, *api.Client) {
	t.Helper()
	var r natRulesForTest
	b := &backend{pub: r.publisher(t), subnet: netip.MustParsePrefix("172.17.0.1/16"), guest: guest}
	sock := filepath.Join(t.TempDir(), "api.sock")
	srv, err := api.Listen(sock, b, api.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return b, &api.Client{Path: sock}
}

// On slirp4netns's command line, published ports are numbered 1, 2, ...
// in the order they are added, and a number is never given again, as
// slirp4netns numbers its forwards; the rule table's ids (its masquerade
// rule has the first) do not show.
func TestSeqPublisher(t *testing.T) {
	var n natRulesForTest
	p := newSeqPublisher(n.publisher(t))
	fwd := func(port int) api.HostFwd {
		return api.HostFwd{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: port, GuestAddr: netip.MustParseAddr("172.17.0.4"), GuestPort: 80}
	}
	for i, port := range []int{8080, 8081} {
		if id, err := p.Publish(fwd(port)); err != nil || id != i+1 {
			t.Fatalf("publishing port %d: id %d, %v; want %d", port, id, err, i+1)
		}
	}
	if _, err := p.Publish(fwd(8080)); err == nil {
		t.Fatal("publishing port 8080 twice: no error")
	}
	if err := p.Unpublish(1); err != nil {
		t.Fatal(err)
	}
	if id, err := p.Publish(fwd(8082)); err != nil || id != 3 {
		t.Fatalf("publishing after a removal: id %d, %v; want 3, not 1 again", id, err)
	}
	l := p.List()
	if len(l) != 2 || l[0].ID != 2 || l[0].HostPort != 8081 || l[1].ID != 3 || l[1].HostPort != 8082 {
		t.Errorf("list %+v, want 8081 as 2 and 8082 as 3", l)
	}
	for _, id := range []int{1, n.masq, 7} {
		if err := p.Unpublish(id); err == nil || !strings.Contains(err.Error(), "no published port") {
			t.Errorf("removing id %d: %v, want no published port", id, err)
		}
	}
	if len(n.r.Masquerades()) != 1 || len(n.r.Publishes()) != 2 {
		t.Errorf("rules: %d masquerade, %d publish; want 1 and 2", len(n.r.Masquerades()), len(n.r.Publishes()))
	}
}
