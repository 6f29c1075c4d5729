package hostnet_test

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/netns"
)

// narrowPath adds a machine at 203.0.113.9 behind the remote one, over
// a link of MTU 1000: the path from the host there is narrower than the
// host's own link (1500), and the remote machine is the router that
// fragments, or answers "fragmentation needed" for a packet with DF.
func narrowPath(t *testing.T, e *env) *netns.NS {
	t.Helper()
	far, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { far.Close() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.remote.AddVeth("eth1", far, "eth0"))
	must(e.remote.SetLink("eth1", 1000))
	must(far.SetLink("eth0", 1000))
	must(e.remote.AddAddr("eth1", netip.MustParsePrefix("203.0.113.1/24")))
	must(far.AddAddr("eth0", netip.MustParsePrefix("203.0.113.9/24")))
	must(far.IP("route", "add", "default", "via", "203.0.113.1"))
	must(e.remote.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0) }))
	must(e.host.IP("route", "add", "203.0.113.0/24", "via", "198.51.100.2"))
	return far
}

// A container's datagram without DF (its socket's IP_MTU_DISCOVER is
// IP_PMTUDISC_DONT, as a DNS server's or a VPN's often is) larger than a
// link on the path reaches its destination in fragments, as through the
// kernel's NAT, which forwards it without DF for the router to
// fragment. The uplink's host socket discovered the path's MTU (Linux's
// default, IP_PMTUDISC_WANT), so its copy of the datagram left with DF
// set: the router dropped it, answered "fragmentation needed", and the
// container, which had asked for no DF, lost its datagram.
func TestIntegrationUDPNoDFFragmentedOnPath(t *testing.T) {
	e := newEnv(t, envConfig{})
	far := narrowPath(t, e)
	srv, err := far.ListenPacket("udp4", "203.0.113.9:5300")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := e.ctr.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.(*net.UDPConn).SyscallConn()
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
	})
	msg := bytes.Repeat([]byte{0x42}, 1400) // within the bridge's MTU and the host's, over the path's
	dst := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 5300}
	buf := make([]byte, 2048)
	for i := range 3 { // each datagram, the first of its flow or not, must arrive
		if _, err := c.WriteTo(msg, dst); err != nil {
			t.Fatal(err)
		}
		srv.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := srv.ReadFrom(buf)
		if err != nil || n != len(msg) {
			t.Fatalf("datagram %d without DF, over a narrower link: %d bytes arrived (%v); uplink %v", i, n, err, e.up.Counters())
		}
	}
	// A datagram with DF, on a flow of its own, still draws the router's
	// "fragmentation needed" with the path's MTU, which the container
	// hears about its own datagram.
	conn, rc := probeConn(t, e, "203.0.113.9:5300", 64)
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	})
	conn.Write(msg)
	if ee, from, ok := queuedError(rc, 3*time.Second); !ok || ee.Type != 3 || ee.Code != 4 || from != "198.51.100.2" {
		t.Errorf("datagram with DF over a narrower link: error %v type %d code %d from %s; want fragmentation needed from 198.51.100.2", ok, ee.Type, ee.Code, from)
	}
}

// A container's datagram with DF larger than the host's own link (a
// VPN's, a PPPoE line's, narrower than the bridge) draws "fragmentation
// needed" from the gateway with that link's MTU, and does not leave, as
// the kernel's NAT answers a packet it cannot forward whole (ip_forward):
// for UDP and for echo. The uplink's sockets took DF as a wish
// (IP_PMTUDISC_WANT) and the host fragmented the datagram, so the
// container never learned the path's MTU, and its DF traffic went out in
// fragments, which many paths drop. A datagram without DF is still
// fragmented by the host.
func TestIntegrationDFOverHostLink(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	for _, ns := range []*netns.NS{e.host, e.remote} {
		if err := ns.SetLink("eth0", 1280); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := e.remote.ListenPacket("udp4", "198.51.100.2:5300")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	buf := make([]byte, 2048)
	arrived := func() int {
		srv.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := srv.ReadFrom(buf)
		if err != nil {
			return 0
		}
		return n
	}
	// Echo first: its error teaches the container's kernel the path's
	// MTU, which ping -M do would then keep to (IP_PMTUDISC_PROBE, the
	// UDP probe's, does not).
	out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", "198.51.100.2")
	if want := "From " + gwAddr.Addr().String() + " icmp_seq=1 Frag needed and DF set (mtu = 1280)"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("echo with DF over the host's narrower link: %v; want %q in:\n%s", err, want, out)
	}

	msg := bytes.Repeat([]byte{0x42}, 1400) // within the bridge's MTU (1500), over the host's link
	conn, rc := probeConn(t, e, "198.51.100.2:5300", 64)
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	})
	conn.Write(msg)
	if ee, from, ok := queuedError(rc, 2*time.Second); !ok || ee.Type != 3 || ee.Code != 4 || ee.Info != 1280 || from != gwAddr.Addr().String() {
		t.Errorf("datagram with DF over the host's narrower link: error %v type %d code %d MTU %d from %s; want fragmentation needed, MTU 1280, from the gateway %s",
			ok, ee.Type, ee.Code, ee.Info, from, gwAddr.Addr())
	}
	if n := arrived(); n != 0 {
		t.Errorf("a datagram with DF left the host in fragments (%d bytes arrived)", n)
	}

	plain, err := e.ctr.Dial(ctx(t), "udp4", "198.51.100.2:5300")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	prc, _ := plain.(*net.UDPConn).SyscallConn()
	prc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
	})
	plain.Write(msg)
	if n := arrived(); n != len(msg) {
		t.Errorf("a datagram without DF over the host's narrower link: %d bytes arrived, want %d", n, len(msg))
	}
}
