package hostnet_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/usernat/usernat/nat/hostnet"
)

// An echo flow whose ICMP socket cannot be made (the process is out of
// descriptors: EMFILE) drops the echo and counts it; once descriptors
// are free, the next echo is answered.
func TestIntegrationPingEMFILECounted(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	pc, err := e.ctr.ListenPacket("ip4:icmp", "172.17.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := &net.IPAddr{IP: net.IPv4(198, 51, 100, 2)}
	echo := func(seq byte) []byte {
		b := []byte{8, 0, 0, 0, 0x55, 0x55, 0, seq, 'p'}
		s := ^icmpSum(b)
		b[2], b[3] = byte(s>>8), byte(s)
		return b
	}
	drops := func() uint64 { return hostnet.DropCount(e.up) }
	before := drops()
	restore := hostnet.ExhaustFDs(t)
	pc.WriteTo(echo(1), dst)
	// Until the echo has crossed the TAP and the bridge to the uplink,
	// and its flow could not be opened.
	waitFor(5*time.Second, func() bool { return drops()-before >= 1 })
	restore()
	if n := e.up.Flows(); n != 0 {
		t.Errorf("%d flows after EMFILE, want none", n)
	}
	if got := drops() - before; got != 1 {
		t.Errorf("echo dropped for EMFILE counted %d times in drop_* counters, want 1 (%v)", got, e.up.Counters())
	}
	pc.WriteTo(echo(2), dst)
	buf := make([]byte, 1500)
	deadline := time.Now().Add(3 * time.Second)
	for {
		pc.SetReadDeadline(deadline)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("echo once descriptors are free: no reply: %v (%v)", err, e.up.Counters())
		}
		if n >= 8 && buf[0] == 0 && buf[4] == 0x55 && buf[7] == 2 {
			break
		}
	}
}

// A container's connection for which the host has no local port left
// (ip_local_port_range's every port taken to that destination) is dropped
// and counted in drop_no_socket, as a kernel's NAT with no port left
// drops the SYN: the container hears nothing, and tcp_timed_out, which
// says a destination stayed silent, is not counted.
func TestIntegrationTCPNoLocalPortCounted(t *testing.T) {
	e := newEnv(t, envConfig{})
	whoServer(t, e.remote, "198.51.100.2:7000")
	if err := e.host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40000"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	hold, err := e.host.Dial(ctx(t), "tcp4", "198.51.100.2:7000") // the one port
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	c, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if conn, err := e.ctr.Dial(c, "tcp4", "198.51.100.2:7000"); err == nil {
		conn.Close()
		t.Fatal("the container connected with no local port left on the host")
	}
	counters := e.up.Counters()
	if counters["drop_no_socket"] == 0 || counters["tcp_timed_out"] != 0 || counters["tcp_refused"] != 0 {
		t.Errorf("drop_no_socket %d, tcp_timed_out %d, tcp_refused %d; want at least 1, 0 and 0",
			counters["drop_no_socket"], counters["tcp_timed_out"], counters["tcp_refused"])
	}
}

// So is a container's UDP flow for which the host has no local port
// left: its socket's connect, which binds one, finds none (EAGAIN).
func TestIntegrationUDPNoLocalPortCounted(t *testing.T) {
	e := newEnv(t, envConfig{})
	if err := e.host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40000"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	hold, err := e.host.ListenPacket("udp4", "198.51.100.1:40000") // the one port
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	c, err := e.ctr.ListenPacket("udp4", "172.17.0.4:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 7001}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return e.up.Counters()["drop_no_socket"] == 1 }) {
		t.Errorf("drop_no_socket %d, want 1 (%v)", e.up.Counters()["drop_no_socket"], e.up.Counters())
	}
	if n := e.up.Flows(); n != 0 {
		t.Errorf("%d flows, want none", n)
	}
}
