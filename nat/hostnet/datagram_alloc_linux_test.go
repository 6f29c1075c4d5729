package hostnet

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/netns"
)

// raceEnabled says whether the tests run with the race detector (race_test.go).
var raceEnabled bool

// A published UDP port's datagram of a known client finds its flow by
// what the host saw (servedDatagram) without allocating, for each of a
// client's two flows to two of the host's addresses.
func TestServedDatagramAllocs(t *testing.T) {
	u, _ := outboundUplink(t)
	delivered := 0
	d := func([]byte, bridge.Offload) { delivered++ }
	u.ln.deliver.Store(&d)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := rawConn(c)
	local := netip.AddrPortFrom(netip.IPv4Unspecified(), 5353)
	client := netip.MustParseAddrPort("198.51.100.2:40053")
	ctr := netip.MustParseAddrPort("10.0.2.100:53")
	tos := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("203.0.113.3")}
	buf := make([]byte, 28+64)
	for _, to := range tos { // the flows open
		u.servedDatagram(c, rc, buf, 64, client, ctr, local, to)
	}
	if n := u.Flows(); n != 2 {
		t.Fatalf("%d flows, want 2", n)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, to := range tos {
			u.servedDatagram(c, rc, buf, 64, client, ctr, local, to)
		}
	})
	// With the race detector, sync.Pool drops a quarter of what it is
	// given, so the link's buffers are made now and then: fewer than one
	// a datagram still shows that finding the flow allocates nothing.
	if raceEnabled && allocs/2 >= 1 || !raceEnabled && allocs != 0 {
		t.Errorf("%v allocations per datagram of a known client, want 0", allocs/2)
	}
	if n := u.Flows(); n != 2 || delivered < 2*101 {
		t.Errorf("%d flows, %d datagrams delivered; want 2 flows, each datagram delivered", n, delivered)
	}
}

// A flow's datagram from the container reaches its host socket without
// an allocation, outbound and back to a published port's client: a
// closure per datagram for RawConn.Write made one each.
func TestDatagramSendAllocs(t *testing.T) {
	u, _ := outboundUplink(t)
	srv, dst := loopbackUDPDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:41000")
	out := ctrDatagram(ctr, dst, "out")

	// A client of a published port, on the host's loopback: the
	// container answers the gateway's address, and the client reads it.
	pub, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	from := client.LocalAddr().(*net.UDPAddr).AddrPort()
	local := pub.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, 28+64)
	u.servedDatagram(pub, rawConn(pub), buf, 8, from, netip.MustParseAddrPort("10.0.2.100:53"), local, local.Addr())
	back := ctrDatagram(netip.MustParseAddrPort("10.0.2.100:53"), u.presented(from), "back")

	const runs = 100
	for _, c := range []struct {
		name string
		pkt  []byte
		to   netip.Addr
		read *net.UDPConn
		want string
	}{
		{"outbound", out, dst.Addr(), srv, "out"},
		{"a published port's answer", back, u.cfg.Gateway, client, "back"},
	} {
		u.Send(c.pkt, c.to, bridgeNone) // opens the flow
		allocs := testing.AllocsPerRun(runs, func() { u.Send(c.pkt, c.to, bridgeNone) })
		if allocs != 0 {
			t.Errorf("%s: %v allocations per datagram, want 0", c.name, allocs)
		}
		c.read.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 64)
		for i := range runs + 2 { // AllocsPerRun's warm-up run, and the first
			n, err := c.read.Read(got)
			if err != nil || string(got[:n]) != c.want {
				t.Fatalf("%s: datagram %d: %q, %v; want %q", c.name, i, got[:n], err, c.want)
			}
		}
	}
}

// Two goroutines sending on one flow at once (two TAP devices' loops,
// when a container sends with another's address) each send their own
// datagram: the flow's sender hands its write function one datagram at
// a time. A missing lock shows as a swapped datagram only when the two
// interleave just so; the race detector (CI's tests run with it) reports
// it every time.
func TestDatagramSendConcurrent(t *testing.T) {
	u, _ := outboundUplink(t)
	srv, dst := loopbackUDPDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:41001")
	pkts := [2][]byte{ctrDatagram(ctr, dst, "first"), ctrDatagram(ctr, dst, "second")}
	u.Send(pkts[0], dst.Addr(), bridgeNone) // opens the flow

	const each = 100 // within the server's socket buffer, unread
	var wg sync.WaitGroup
	for _, pkt := range pkts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				u.Send(pkt, dst.Addr(), bridgeNone)
			}
		}()
	}
	wg.Wait()
	got := map[string]int{}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	for range 2*each + 1 {
		n, err := srv.Read(b)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got[string(b[:n])]++
	}
	if len(got) != 2 || got["first"] != each+1 || got["second"] != each {
		t.Errorf("the server read %v, want first %d times and second %d", got, each+1, each)
	}
}

// An echo flow's request reaches its ICMP socket, and the reply the
// container, without an allocation (in a namespace of the test's, where
// ICMP sockets are allowed): unix.Recvmsg made one a reply, for the
// sender's address.
func TestIntegrationEchoAllocs(t *testing.T) {
	netns.RequirePrivileged(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() }) // after the uplink's (cleanups run last first)
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	u, _ := outboundUplinkIn(t, ns.Do, conntrack.Config{})
	gw := u.cfg.Gateway
	var replies atomic.Int64
	d := func([]byte, bridge.Offload) { replies.Add(1) }
	u.ln.deliver.Store(&d)

	const runs = 100
	echoes := make([][]byte, runs+1)
	for i := range echoes {
		echoes[i] = ctrEcho(netip.MustParseAddr("10.0.2.100"), gw, 0x1234, uint16(i))
	}
	// ping answers each in turn, and waits for the reply: the poller
	// reads it meanwhile, and every allocation counts, wherever made.
	ping := func(i int) {
		u.Send(echoes[i], gw, bridgeNone)
		for deadline := time.Now().Add(5 * time.Second); replies.Load() <= int64(i) && time.Now().Before(deadline); {
			runtime.Gosched()
		}
		if n := replies.Load(); n <= int64(i) {
			t.Fatalf("echo %d: %d replies, want %d", i, n, i+1)
		}
	}
	ping(0) // opens the flow
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 1; i <= runs; i++ {
		ping(i)
	}
	runtime.ReadMemStats(&after)
	// Fewer than one a round trip: none on its path (the process's
	// other goroutines, its timers, may allocate now and then).
	if n := float64(after.Mallocs-before.Mallocs) / runs; n >= 1 {
		t.Errorf("%.2f allocations per echo and its reply, want none", n)
	}
}
