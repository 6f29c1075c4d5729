package hostnet_test

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usernat/usernat/nat/hostnet"
)

// The host's loopback is out of reach with
// HostLoopback off, from every address a container might try.
func TestIntegrationNoWayToHostLoopback(t *testing.T) {
	e := newEnv(t, envConfig{ping: true, uplink: hostnet.Config{DNS: netip.MustParseAddr("172.17.0.3"), Resolver: netip.MustParseAddrPort("198.51.100.2:53")}})
	whoServer(t, e.host, "127.0.0.1:9000")
	udpWhoServer(t, e.host, "127.0.0.1:9001")
	whoServer(t, e.host, "127.0.0.1:53")
	udpWhoServer(t, e.host, "127.0.0.1:53")
	for _, a := range []string{"127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "172.17.0.1", "172.17.0.3", "198.51.100.1", "255.255.255.255", "172.17.255.255"} {
		for _, port := range []string{"9000", "53"} {
			c, err := e.ctr.Dial(ctx(t), "tcp4", net.JoinHostPort(a, port))
			if err == nil {
				c.Close()
				t.Errorf("TCP %s:%s connected", a, port)
			}
		}
		for _, port := range []string{"9001", "53"} {
			pc, err := e.ctr.ListenPacket("udp4", ":0")
			if err != nil {
				t.Fatal(err)
			}
			pc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP(a), Port: atoi(port)})
			pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 100)
			if n, from, err := pc.ReadFrom(buf); err == nil {
				t.Errorf("UDP %s:%s answered %q from %v", a, port, buf[:n], from)
			}
			pc.Close()
		}
	}
	t.Logf("counters %v", e.up.Counters())
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// The resolver down: the container's connected socket hears port
// unreachable from the DNS address (not from the resolver, whose address
// the container does not know, as through the kernel's NAT), TCP is
// refused.
func TestIntegrationDNSResolverDown(t *testing.T) {
	for _, r := range []string{"127.0.0.53:53", "198.51.100.2:53"} {
		t.Run(r, func(t *testing.T) {
			e := newEnv(t, envConfig{uplink: hostnet.Config{DNS: netip.MustParseAddr("172.17.0.3"), Resolver: netip.MustParseAddrPort(r)}})
			c, err := e.ctr.Dial(ctx(t), "udp4", "172.17.0.3:53")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rc, _ := c.(*net.UDPConn).SyscallConn()
			rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1) })
			c.Write([]byte("q"))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 10)); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("UDP to a resolver that is down: %v, want refused", err)
			}
			if ee, from, ok := queuedError(rc, time.Second); !ok || ee.Type != 3 || ee.Code != 3 || from != "172.17.0.3" {
				t.Errorf("UDP to a resolver that is down: error %v type %d code %d from %s; want port unreachable from the DNS address", ok, ee.Type, ee.Code, from)
			}
			if _, err := e.ctr.Dial(ctx(t), "tcp4", "172.17.0.3:53"); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("TCP: %v", err)
			}
			// HostLoopback = the gateway: ping, UDP mapped.
			_ = strings.Contains
		})
	}
}

// HostLoopback at the gateway's address: UDP reaches 127.0.0.1, ping is
// answered.
func TestIntegrationHostLoopbackAtGatewayUDP(t *testing.T) {
	e := newEnv(t, envConfig{ping: true, uplink: hostnet.Config{HostLoopback: gwAddr.Addr()}})
	udpWhoServer(t, e.host, "127.0.0.1:9001")
	answer, from := udpWho(t, e.ctr, "172.17.0.1:9001")
	if !strings.HasPrefix(answer, "127.0.0.1:") || from != "172.17.0.1:9001" {
		t.Errorf("UDP %q from %s", answer, from)
	}
	c, _ := e.ctr.Dial(ctx(t), "udp4", "172.17.0.1:9002")
	c.Write([]byte("x"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("UDP to a closed loopback port: %v", err)
	}
	c.Close()
	if out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "2", "172.17.0.1"); err != nil {
		t.Errorf("ping: %v %s", err, out)
	}
}
