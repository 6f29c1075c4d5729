package hostnet_test

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usernat/usernat/nat/hostnet"
)

// An echo request to a destination the host has no route to is answered
// as UDP's and TCP's are (TestIntegrationOutboundErrors), and as a router
// (or libslirp's icmp_send) answers it: ICMP network unreachable from the
// gateway. The uplink drops it silently.
func TestIntegrationPingUnroutable(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	out, _ := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "2", "192.0.2.99")
	if !strings.Contains(string(out), "Unreachable") {
		t.Errorf("ping to an address the host has no route to: no ICMP unreachable:\n%s\nuplink %v", out, e.up.Counters())
	}
}

// The echo reply reaches the container with the TTL the destination sent
// it with, less the one hop of the host (the gateway), as through the
// kernel's NAT: ping's ttl= (and hop-count guesses) see the real path.
// The uplink writes 64 into every reply.
func TestIntegrationPingReplyTTL(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	if err := e.remote.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_default_ttl", []byte("100"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	// The host itself sees the remote's TTL, 100.
	if out, err := e.host.Run(ctx(t), "ping", "-c", "1", "-W", "3", "198.51.100.2"); err != nil || !strings.Contains(string(out), "ttl=100 ") {
		t.Fatalf("control: ping from the host: %v\n%s", err, out)
	}
	out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "3", "198.51.100.2")
	if err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ttl=99 ") {
		t.Errorf("echo reply from a host sending with TTL 100, one hop away: want ttl=99:\n%s", out)
	}
}

// With HostLoopback at an address of its own, off the bridge subnet (as
// slirp4netns's 10.0.2.2 is to a container of another subnet), TCP to it
// reaches the host's 127.0.0.1, and so should ping (libslirp answers
// echo to its host address). The uplink drops the echo (drop_loopback).
func TestIntegrationPingHostLoopbackAddr(t *testing.T) {
	e := newEnv(t, envConfig{ping: true, uplink: hostnet.Config{HostLoopback: netip.MustParseAddr("10.0.2.2")}})
	whoServer(t, e.host, "127.0.0.1:9000")
	if seen, err := who(t, e.ctr, "10.0.2.2:9000"); err != nil || !strings.HasPrefix(seen, "127.0.0.1:") {
		t.Fatalf("TCP to the host-loopback address: %q, %v", seen, err)
	}
	out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "2", "10.0.2.2")
	if err != nil {
		t.Errorf("ping to the host-loopback address 10.0.2.2: %v\n%s\nuplink %v", err, out, e.up.Counters())
	}
	// The host answers itself, across no hop: its own TTL, as pinging a
	// router's own address gives.
	if !strings.Contains(string(out), "ttl=64 ") {
		t.Errorf("the host's own echo reply: want ttl=64, the host's, no hop taken:\n%s", out)
	}
}

// writeResolvConf points the uplink's resolv.conf at a file of the test's
// with body.
func writeResolvConf(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hostnet.SetResolvConfPath(p))
	return p
}

// query sends q from c (a container socket) to the DNS address, and
// returns the answer: udpWhoServer's, the address the resolver saw.
func query(t *testing.T, c net.PacketConn, to *net.UDPAddr) (string, error) {
	t.Helper()
	buf := make([]byte, 512)
	var err error
	for range 3 {
		c.WriteTo([]byte("q"), to)
		c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		if n, _, err = c.ReadFrom(buf); err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", err
}

// When the host's resolver moves (resolv.conf rewritten: a VPN, DHCP),
// the DNS forwarder follows it (TestResolverFollowsResolvConf), but a
// container socket that keeps querying (a stub resolver or dnsmasq in
// the container, one source port) stays on the old resolver as long as
// its flow lives: the flow's host socket is connected to the resolver
// of its first query. libslirp translates the DNS address at each
// sendto, so every query goes to the current resolver.
func TestIntegrationDNSFollowsResolverOnLiveFlow(t *testing.T) {
	p := writeResolvConf(t, "nameserver 198.51.100.2\n")
	dns := netip.MustParseAddr("172.17.0.3")
	e := newEnv(t, envConfig{uplink: hostnet.Config{DNS: dns}})
	udpWhoServer(t, e.remote, "198.51.100.2:53")
	udpWhoServer(t, e.host, "127.0.0.53:53")
	c, err := e.ctr.ListenPacket("udp4", "172.17.0.4:5300")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := &net.UDPAddr{IP: net.IPv4(172, 17, 0, 3), Port: 53}
	if a, err := query(t, c, to); err != nil || !strings.HasPrefix(a, "198.51.100.1:") {
		t.Fatalf("first query: %q, %v; want the remote resolver's answer", a, err)
	}
	if err := os.WriteFile(p, []byte("nameserver 127.0.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	// A fresh socket goes to the new resolver...
	c2, err := e.ctr.ListenPacket("udp4", "172.17.0.4:5301")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if a, err := query(t, c2, to); err != nil || !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("new socket after resolv.conf changed: %q, %v; want the host-loopback resolver's answer", a, err)
	}
	// ...and so should the next query of the socket that queried before.
	if a, err := query(t, c, to); err != nil || !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("same socket after resolv.conf changed: answered by %q (%v); want the new resolver (127.0.0.53), the old one is gone from resolv.conf", a, err)
	}
}

// Of the host's nameservers, the DNS address uses the first, and moves
// to the next when it fails, as the host's own lookups do (the container
// knows only the DNS address, and cannot): at once when its host says
// nothing listens there (ICMP port unreachable), or once it has left a
// query unanswered for 5 s, glibc's timeout, answering nothing else (a
// silent one, behind a router that drops). The container's retry then
// gets the second's answer.
func TestIntegrationDNSFailover(t *testing.T) {
	for _, tc := range []struct{ name, first string }{
		{"refused", "198.51.100.9"},
		{"silent", "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeResolvConf(t, "nameserver "+tc.first+"\nnameserver 198.51.100.2\n")
			e := newEnv(t, envConfig{uplink: hostnet.Config{DNS: netip.MustParseAddr("172.17.0.3")}})
			udpWhoServer(t, e.remote, "198.51.100.2:53")
			// 198.51.100.9 is the remote's too, with nothing on port
			// 53; 203.0.113.0/24 leads to the remote, which forwards
			// nothing.
			if err := e.remote.AddAddr("eth0", netip.MustParsePrefix("198.51.100.9/24")); err != nil {
				t.Fatal(err)
			}
			if err := e.host.IP("route", "add", "203.0.113.0/24", "via", "198.51.100.2"); err != nil {
				t.Fatal(err)
			}
			c, err := e.ctr.ListenPacket("udp4", ":0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			to := &net.UDPAddr{IP: net.IPv4(172, 17, 0, 3), Port: 53}
			buf := make([]byte, 512)
			q := make([]byte, 17) // a query's header (QR clear), and a question
			q[5] = 1
			for try := range 8 {
				c.WriteTo(q, to)
				c.SetReadDeadline(time.Now().Add(time.Second))
				if n, _, err := c.ReadFrom(buf); err == nil {
					if a := string(buf[:n]); !strings.HasPrefix(a, "198.51.100.1:") {
						t.Fatalf("answered %q, want the second nameserver's", a)
					}
					t.Logf("answered at try %d", try+1)
					return
				}
			}
			t.Errorf("no answer in 8 tries, 1 s apart, with the first nameserver %s failing and the second up (uplink %v)", tc.first, e.up.Counters())
		})
	}
}
