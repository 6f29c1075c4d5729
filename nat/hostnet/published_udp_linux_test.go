package hostnet_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat/hostnet"
)

// answers reads what pc receives until it has been quiet for quiet.
func answers(pc net.PacketConn, quiet time.Duration) []string {
	var got []string
	buf := make([]byte, 2048)
	for {
		pc.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
	}
}

// Two clients on the host's loopback with the same port (127.0.0.1:40000
// and 127.0.0.2:40000) are both shown to the container as the gateway,
// 172.17.0.1:40000: one flow to the container. The first keeps it; the
// second's datagrams are dropped, not carried as the first's, and the
// container's answers go to the first alone.
func TestIntegrationPublishedUDPLoopbackCollision(t *testing.T) {
	e := newEnv(t, envConfig{})
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	publish(t, e.up, "5353:172.17.0.4:53/udp")
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
	var pcs []net.PacketConn
	for _, a := range []string{"127.0.0.1:40000", "127.0.0.2:40000"} {
		pc, err := e.host.ListenPacket("udp4", a)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		pcs = append(pcs, pc)
	}
	pcs[0].WriteTo([]byte("first"), to)
	if got := answers(pcs[0], time.Second); len(got) != 1 || got[0] != "172.17.0.1:40000 first" {
		t.Fatalf("first client: answers %q, want the container's one, to 172.17.0.1:40000", got)
	}
	pcs[1].WriteTo([]byte("second"), to)
	got0, got1 := answers(pcs[0], 500*time.Millisecond), answers(pcs[1], 10*time.Millisecond)
	if len(got0) != 0 || len(got1) != 0 {
		t.Errorf("second client's datagram: answers %q to the first, %q to the second; want none", got0, got1)
	}
	if n := e.up.Counters()["drop_collision"]; n != 1 {
		t.Errorf("drop_collision %d, want 1", n)
	}
	pcs[0].WriteTo([]byte("again"), to)
	if got := answers(pcs[0], time.Second); len(got) != 1 || got[0] != "172.17.0.1:40000 again" {
		t.Errorf("first client after the collision: answers %q", got)
	}
}

// A UDP port published on every address answers each client from the
// address it sent to, on a host with two: a client of the second, on a
// connected socket, takes the answer. The flow's entry names that
// address.
func TestIntegrationPublishedUDPSecondAddress(t *testing.T) {
	e := newEnv(t, envConfig{})
	if err := e.host.AddAddr("eth0", netip.MustParsePrefix("198.51.100.3/24")); err != nil {
		t.Fatal(err)
	}
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	publish(t, e.up, "5353:172.17.0.4:53/udp")
	for _, addr := range []string{"198.51.100.3:5353", "198.51.100.1:5353"} {
		c, err := e.remote.Dial(ctx(t), "udp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("who"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			t.Errorf("client of %s on a connected socket: no answer (%v)", addr, err)
			continue
		}
		if !strings.HasPrefix(string(buf[:n]), "198.51.100.2:") {
			t.Errorf("client of %s: container saw %q", addr, buf[:n])
		}
		cl := netip.MustParseAddrPort(c.LocalAddr().String())
		host := netip.MustParseAddrPort(addr)
		orig := conntrack.Tuple{Src: cl.Addr(), Dst: host.Addr(), SrcPort: cl.Port(), DstPort: host.Port(), Proto: conntrack.ProtoUDP}
		if _, _, ok := e.gw.Table().Get(0, orig); !ok {
			t.Errorf("no entry %v: the flow's entry should name the address the client sent to", orig)
		}
	}
}

// A published UDP port's flows are made before their entries, which the
// gateway makes from each flow's first datagram: the uplink keeps them
// within the table's cap itself. At the cap, a new client is carried in
// as a new connection through the kernel's NAT is: the table evicts a
// flow that is not assured (early drop), whose flow ends at once, so the
// flows never outnumber the cap. Once every entry is assured, a new
// client is dropped and counted, not carried for the seconds a flow may
// wait for its entry.
func TestIntegrationPublishedUDPTableCap(t *testing.T) {
	const limit = 16
	e := newEnv(t, envConfig{ctMax: limit})
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	// A sink, which answers nothing: a flow of its whose entry is
	// evicted draws no answer, which would be a flow out of its own.
	sink, err := e.ctr.ListenPacket("udp4", "172.17.0.4:54")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	publish(t, e.up, "5353:172.17.0.4:53/udp", "5354:172.17.0.4:54/udp")
	who := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.1:5353"))
	toSink := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.1:5354"))
	// client sends from a port of its own, held to the end: a port used
	// again would be the same client.
	client := func(to *net.UDPAddr) net.PacketConn {
		pc, err := e.remote.ListenPacket("udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		pc.WriteTo([]byte("x"), to)
		return pc
	}
	const clients = 100
	peak := 0
	for range clients {
		client(toSink)
		peak = max(peak, e.up.Flows())
	}
	var c map[string]uint64
	served := waitFor(5*time.Second, func() bool {
		peak = max(peak, e.up.Flows())
		c = e.up.Counters()
		return c["inbound_opened"]+c["drop_table_full"] == clients
	})
	if !served {
		t.Fatalf("of %d clients, %d carried and %d dropped", clients, c["inbound_opened"], c["drop_table_full"])
	}
	if peak > limit {
		t.Errorf("%d flows carried at once, beyond the table's cap of %d", peak, limit)
	}
	if st := e.gw.Table().Stats(); c["inbound_opened"] != clients || st.EarlyDrop < clients-limit {
		t.Errorf("of %d clients, %d carried, %d dropped; the table evicted %d: flows not assured make room for new ones", clients, c["inbound_opened"], c["drop_table_full"], st.EarlyDrop)
	}

	// Flows that are assured, in a table emptied first (a new flow may
	// evict any that is not assured, one of these too): traffic both
	// ways, and more after 2 s, as Linux's UDP tracking wants.
	e.gw.Table().Flush()
	if !waitFor(5*time.Second, func() bool { return e.up.Flows() == 0 }) {
		t.Fatalf("%d flows left after a flush", e.up.Flows())
	}
	var last []net.PacketConn
	for range limit {
		pc := client(who)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := pc.ReadFrom(make([]byte, 64)); err != nil {
			t.Fatalf("no answer: %v (uplink %v)", err, e.up.Counters())
		}
		last = append(last, pc)
	}
	time.Sleep(2100 * time.Millisecond)
	for _, pc := range last {
		pc.WriteTo([]byte("x"), who)
	}
	if !waitFor(5*time.Second, func() bool {
		n := 0
		for _, en := range e.gw.Table().List() {
			if en.Status&conntrack.Assured != 0 {
				n++
			}
		}
		return n == limit
	}) {
		t.Fatalf("the last %d flows were not all assured: %v", limit, e.gw.Table().List())
	}
	dropped := e.up.Counters()["drop_table_full"]
	client(toSink)
	if !waitFor(5*time.Second, func() bool { return e.up.Counters()["drop_table_full"] == dropped+1 }) {
		t.Errorf("a client beyond a cap of assured flows was not dropped (uplink %v, table %+v)", e.up.Counters(), e.gw.Table().Stats())
	}
	if n := e.up.Flows(); n > limit {
		t.Errorf("%d flows, beyond the table's cap of %d", n, limit)
	}
}

// A table full of the container's own flows out, not assured, makes room
// for a published port's new client, as for the container's next flow
// out (early drop): neither is refused.
func TestIntegrationPublishedUDPEarlyDrop(t *testing.T) {
	const limit = 16
	e := newEnv(t, envConfig{ctMax: limit})
	udpWhoServer(t, e.remote, "198.51.100.2:5300")
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	publish(t, e.up, "5353:172.17.0.4:53/udp")
	to5300 := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 5300}
	for range limit + 1 {
		c := openUDPFlow(t, e.ctr, to5300)
		defer c.Close()
	}
	pc, err := e.remote.ListenPacket("udp4", "198.51.100.2:40053")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	buf := make([]byte, 256)
	for range 3 {
		pc.WriteTo([]byte("in"), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 5353})
		pc.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := pc.ReadFrom(buf); err == nil {
			return
		}
	}
	t.Errorf("a published port's new client was refused with the table full of flows early drop may evict (uplink %v, table %+v)", e.up.Counters(), e.gw.Table().Stats())
}

// Unpublished, a UDP port's flows end with their entries, which name its
// socket: a container's next datagram to the client is a flow of its
// own, out from another port, with an entry of its own, not sent under
// the published port's entry.
func TestIntegrationPublishedUDPUnpublish(t *testing.T) {
	e := newEnv(t, envConfig{})
	srv, err := e.ctr.ListenPacket("udp4", "172.17.0.4:53")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	id := publish(t, e.up, "5353:172.17.0.4:53/udp")[0]
	cl, err := e.remote.ListenPacket("udp4", "198.51.100.2:40053")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cl.WriteTo([]byte("q"), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 5353})
	buf := make([]byte, 256)
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, from, err := srv.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	inbound := conntrack.Tuple{Src: netip.MustParseAddr("198.51.100.2"), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: 40053, DstPort: 5353, Proto: conntrack.ProtoUDP}
	if _, _, ok := e.gw.Table().Get(0, inbound); !ok {
		t.Fatalf("no entry %v for the published port's flow", inbound)
	}
	if err := e.up.Unpublish(id); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := e.gw.Table().Get(0, inbound); ok {
		t.Errorf("entry %v outlived its flow's socket", inbound)
	}
	srv.WriteTo([]byte("a"), from)
	cl.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, src, err := cl.ReadFrom(buf)
	if err != nil {
		t.Fatalf("the container's datagram after Unpublish: %v", err)
	}
	host := netip.MustParseAddrPort(src.String())
	if host.Port() == 5353 {
		t.Errorf("answer from %v, the unpublished port", src)
	}
	out := conntrack.Tuple{Src: netip.MustParseAddr("172.17.0.4"), Dst: netip.MustParseAddr("198.51.100.2"), SrcPort: 53, DstPort: 40053, Proto: conntrack.ProtoUDP}
	en, _, ok := e.gw.Table().Get(0, out)
	if want := (conntrack.Tuple{Src: out.Dst, Dst: host.Addr(), SrcPort: out.DstPort, DstPort: host.Port(), Proto: conntrack.ProtoUDP}); !ok || en.Orig != out || en.Reply != want {
		t.Errorf("entry of the container's flow: %v / %v (found %v), want %v / %v", en.Orig, en.Reply, ok, out, want)
	}
	if n := e.up.Counters()["stale_entries"]; n != 0 {
		t.Errorf("stale_entries %d: Unpublish left an entry behind", n)
	}
}

// udpEchoServer echoes every datagram on addr in the container, byte for
// byte, whatever its size (up to 65507 bytes, empty included).
func udpEchoServer(t *testing.T, e *env, addr string) {
	t.Helper()
	pc, err := e.ctr.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// A published UDP port carries datagrams of every size the protocol
// allows, both ways: the largest (65507 bytes, fragmented on every link)
// and the empty one, byte for byte.
func TestIntegrationPublishedUDPSizes(t *testing.T) {
	e := newEnv(t, envConfig{})
	udpEchoServer(t, e, "172.17.0.4:53")
	publish(t, e.up, "5353:172.17.0.4:53/udp")
	c, err := e.remote.Dial(ctx(t), "udp4", "198.51.100.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 70000)
	for _, size := range []int{0, 1, 1472, 1473, 8000, 65507} {
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = byte(i*7 + size)
		}
		ok := false
		for range 3 {
			c.Write(msg)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err == nil && n == size && bytes.Equal(buf[:n], msg) {
				ok = true
				break
			}
			if err == nil {
				t.Logf("size %d: got %d bytes", size, n)
			}
		}
		if !ok {
			t.Errorf("a %d-byte datagram was not echoed whole (uplink %v, gateway %+v)", size, e.up.Counters(), e.gw.Stats())
		}
	}
}

// A published UDP range is many ports that sit idle most of the time (a
// media server's RTP range): an idle port costs its socket, not a
// goroutine (the poller reads it) nor a 64 KiB datagram buffer, as an idle
// outbound flow holds none (TestIntegrationIdleFlowMemory).
func TestIntegrationPublishedUDPRangeMemory(t *testing.T) {
	const n = 500
	e := newEnv(t, envConfig{})
	inUse := func() int64 {
		time.Sleep(100 * time.Millisecond)
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapInuse + m.StackInuse)
	}
	before, gor := inUse(), runtime.NumGoroutine()
	publish(t, e.up, fmt.Sprintf("20000-%d:172.17.0.4:20000-%d/udp", 20000+n-1, 20000+n-1))
	grown := inUse() - before
	t.Logf("%d published UDP ports: %d KiB more in use, %d KiB each", n, grown>>10, grown/n>>10)
	const limit = 24 << 10
	if grown > n*limit {
		t.Errorf("%d idle published UDP ports hold %d KiB, more than %d KiB each", n, grown>>10, limit>>10)
	}
	if g := runtime.NumGoroutine() - gor; g >= n/2 {
		t.Errorf("%d published UDP ports took %d goroutines more", n, g)
	}
}

// A client whose one socket sends to two published ports of one
// container port (two rules, 5353 and 5354, both to port 53) has two
// flows, as through the kernel's NAT (which gives the second another
// source port towards the container, its reply tuple being taken): the
// container's answer to each query goes back from the port the query
// went to.
func TestIntegrationPublishedUDPTwoPortsOneContainerPort(t *testing.T) {
	e := newEnv(t, envConfig{})
	srv, err := e.ctr.ListenPacket("udp4", "172.17.0.4:53")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	publish(t, e.up, "5353:172.17.0.4:53/udp", "5354:172.17.0.4:53/udp")
	cl, err := e.remote.ListenPacket("udp4", "198.51.100.2:40053")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Both queries reach the server before it answers either (a server
	// that takes its time: a resolver asking upstream).
	cl.WriteTo([]byte("to5353"), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 5353})
	buf := make([]byte, 256)
	type q struct {
		msg  string
		from net.Addr
	}
	var qs []q
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	qs = append(qs, q{string(buf[:n]), from})
	cl.WriteTo([]byte("to5354"), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 5354})
	n, from, err = srv.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	qs = append(qs, q{string(buf[:n]), from})
	t.Logf("the container saw %q from %v and %q from %v", qs[0].msg, qs[0].from, qs[1].msg, qs[1].from)
	for _, q := range qs {
		srv.WriteTo([]byte("re:"+q.msg), q.from)
	}
	got := map[string]string{}
	for range 2 {
		cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, src, err := cl.ReadFrom(buf)
		if err != nil {
			break
		}
		got[string(buf[:n])] = src.String()
	}
	for _, want := range []struct{ msg, from string }{{"re:to5353", "198.51.100.1:5353"}, {"re:to5354", "198.51.100.1:5354"}} {
		if got[want.msg] != want.from {
			t.Errorf("answer %q came from %q, want %s (all answers: %v)", want.msg, got[want.msg], want.from, got)
		}
	}
}

// The same through one port published on every address, for a client
// whose one socket sends to two of the host's addresses: each answer
// comes from the address its query went to, and each flow has its entry.
func TestIntegrationPublishedUDPTwoAddressesOneClient(t *testing.T) {
	e := newEnv(t, envConfig{})
	if err := e.host.AddAddr("eth0", netip.MustParsePrefix("198.51.100.3/24")); err != nil {
		t.Fatal(err)
	}
	srv, err := e.ctr.ListenPacket("udp4", "172.17.0.4:53")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	publish(t, e.up, "5353:172.17.0.4:53/udp")
	cl, err := e.remote.ListenPacket("udp4", "198.51.100.2:40053")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	buf := make([]byte, 256)
	var froms []net.Addr
	var msgs []string
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	for _, a := range []string{"198.51.100.1", "198.51.100.3"} {
		cl.WriteTo([]byte("to"+a), &net.UDPAddr{IP: net.ParseIP(a), Port: 5353})
		n, from, err := srv.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		froms, msgs = append(froms, from), append(msgs, string(buf[:n]))
	}
	for i := range msgs {
		srv.WriteTo([]byte("re:"+msgs[i]), froms[i])
	}
	got := map[string]string{}
	for range 2 {
		cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, src, err := cl.ReadFrom(buf)
		if err != nil {
			break
		}
		got[string(buf[:n])] = src.String()
	}
	for _, a := range []string{"198.51.100.1", "198.51.100.3"} {
		if f := got["re:to"+a]; f != a+":5353" {
			t.Errorf("answer to the query to %s came from %q, want %s:5353 (all: %v)", a, f, a, got)
		}
	}
	var b strings.Builder
	for _, en := range e.gw.Table().List() {
		fmt.Fprintln(&b, en.Orig, en.Reply)
	}
	t.Logf("table:\n%s", b.String())
	cl4 := netip.MustParseAddrPort("198.51.100.2:40053")
	for _, a := range []string{"198.51.100.1", "198.51.100.3"} {
		orig := conntrack.Tuple{Src: cl4.Addr(), Dst: netip.MustParseAddr(a), SrcPort: cl4.Port(), DstPort: 5353, Proto: conntrack.ProtoUDP}
		if _, _, ok := e.gw.Table().Get(0, orig); !ok {
			t.Errorf("no entry %v: each flow's entry names the address its client sent to", orig)
		}
	}
}

// A client port sending to two published ports of one container port
// is two flows, and stays so: the second is shown to the container with
// another port, of the range Linux's NAT picks from for the client's
// (a privileged port stays privileged), the same for each of its
// datagrams, and each answer goes back from the port its query went to.
func TestIntegrationPublishedUDPTwoPortsMapping(t *testing.T) {
	for _, tc := range []struct {
		port        uint16
		first, last uint16 // where the second flow's port must be
	}{
		{40053, 1024, 65535},
		{700, 600, 1023},
		{53, 1, 511},
	} {
		t.Run(fmt.Sprint(tc.port), func(t *testing.T) {
			e := newEnv(t, envConfig{})
			srv, err := e.ctr.ListenPacket("udp4", "172.17.0.4:53")
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			publish(t, e.up, "5353:172.17.0.4:53/udp", "5354:172.17.0.4:53/udp")
			cl, err := e.remote.ListenPacket("udp4", fmt.Sprintf("198.51.100.2:%d", tc.port))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			buf := make([]byte, 256)
			seen := map[uint16]netip.AddrPort{} // by published port: the client as the container saw it
			for round := range 3 {
				for _, pub := range []uint16{5353, 5354} {
					msg := fmt.Sprintf("%d/%d", pub, round)
					cl.WriteTo([]byte(msg), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: int(pub)})
					srv.SetReadDeadline(time.Now().Add(3 * time.Second))
					n, from, err := srv.ReadFrom(buf)
					if err != nil {
						t.Fatalf("%s: %v (uplink %v)", msg, err, e.up.Counters())
					}
					if string(buf[:n]) != msg {
						t.Fatalf("the container read %q, want %q", buf[:n], msg)
					}
					got := netip.MustParseAddrPort(from.String())
					if want, ok := seen[pub]; ok && got != want {
						t.Errorf("%s: the container saw the client as %v, before as %v", msg, got, want)
					}
					seen[pub] = got
					srv.WriteTo([]byte("re:"+msg), from)
					cl.SetReadDeadline(time.Now().Add(2 * time.Second))
					n, src, err := cl.ReadFrom(buf)
					if err != nil {
						t.Fatalf("%s: no answer: %v", msg, err)
					}
					if want := fmt.Sprintf("198.51.100.1:%d", pub); string(buf[:n]) != "re:"+msg || src.String() != want {
						t.Errorf("answer %q from %v, want %q from %s", buf[:n], src, "re:"+msg, want)
					}
				}
			}
			first, second := seen[5353], seen[5354]
			if first != netip.AddrPortFrom(netip.MustParseAddr("198.51.100.2"), tc.port) {
				t.Errorf("the first flow's client was shown as %v, want its own address and port", first)
			}
			if second.Addr() != first.Addr() || second.Port() == tc.port || second.Port() < tc.first || second.Port() > tc.last {
				t.Errorf("the second flow's client was shown as %v, want 198.51.100.2 with another port in %d-%d", second, tc.first, tc.last)
			}
			if n := e.up.Counters()["inbound_opened"]; n != 2 {
				t.Errorf("inbound_opened %d, want 2", n)
			}
			// The entries: a DNAT each, and the second a SNAT too.
			for pub, want := range map[uint16]conntrack.Status{5353: conntrack.DstNAT, 5354: conntrack.DstNAT | conntrack.SrcNAT} {
				orig := conntrack.Tuple{Src: first.Addr(), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: tc.port, DstPort: pub, Proto: conntrack.ProtoUDP}
				en, _, ok := e.gw.Table().Get(0, orig)
				if !ok || en.Status&(conntrack.DstNAT|conntrack.SrcNAT) != want {
					t.Errorf("entry %v: %v (there %v), want NAT status %v", orig, en, ok, want)
				}
			}
		})
	}
}

// Of a client's two flows through two published ports of one container
// port, unpublishing one port ends its flow alone: the other's datagrams
// still reach the container from the client's own port, and its answers
// still leave from its port.
func TestIntegrationPublishedUDPTwoPortsUnpublishOne(t *testing.T) {
	e := newEnv(t, envConfig{})
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	publish(t, e.up, "5353:172.17.0.4:53/udp")
	id := publish(t, e.up, "5354:172.17.0.4:53/udp")[0]
	cl, err := e.remote.ListenPacket("udp4", "198.51.100.2:40053")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	buf := make([]byte, 256)
	ask := func(port int, msg string) (string, string) {
		t.Helper()
		cl.WriteTo([]byte(msg), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: port})
		cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, src, err := cl.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%s to %d: no answer: %v (uplink %v)", msg, port, err, e.up.Counters())
		}
		return string(buf[:n]), src.String()
	}
	for _, port := range []int{5353, 5354} {
		if _, src := ask(port, "q"); src != fmt.Sprintf("198.51.100.1:%d", port) {
			t.Errorf("answer to %d from %s", port, src)
		}
	}
	if n := e.up.Flows(); n != 2 {
		t.Fatalf("%d flows, want 2", n)
	}
	if err := e.up.Unpublish(id); err != nil {
		t.Fatal(err)
	}
	if n := e.up.Flows(); n != 1 {
		t.Errorf("%d flows after unpublishing one port, want 1", n)
	}
	if got, src := ask(5353, "again"); got != "198.51.100.2:40053 again" || src != "198.51.100.1:5353" {
		t.Errorf("after unpublishing 5354: answer %q from %s, want %q from 198.51.100.1:5353", got, src, "198.51.100.2:40053 again")
	}
	if n := e.up.Counters()["inbound_opened"]; n != 2 {
		t.Errorf("inbound_opened %d, want 2: the flow of 5353 should have lived on", n)
	}
}

// At the cap, while the gateway is behind (the link to it held), a
// published UDP port's new clients do not outnumber the cap: the table's
// room is that of flows whose first datagrams wait for the gateway, not
// theirs.
func TestIntegrationPublishedUDPCapBusyGateway(t *testing.T) {
	const limit = 16
	e := newEnv(t, envConfig{ctMax: limit})
	sink, err := e.ctr.ListenPacket("udp4", "172.17.0.4:54")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	publish(t, e.up, "5354:172.17.0.4:54/udp")
	toSink := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.1:5354"))
	client := func() net.PacketConn {
		pc, err := e.remote.ListenPacket("udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	for range limit {
		client().WriteTo([]byte("x"), toSink)
	}
	if !waitFor(5*time.Second, func() bool { return e.gw.Table().Len() == limit && e.up.Flows() == limit }) {
		t.Fatalf("table %d, flows %d", e.gw.Table().Len(), e.up.Flows())
	}
	var more []net.PacketConn
	for range 8 {
		more = append(more, client())
	}
	stalled := make(chan struct{})
	go func() {
		defer close(stalled)
		hostnet.StallLink(e.up, 500*time.Millisecond)
	}()
	time.Sleep(50 * time.Millisecond) // the link is held
	peak := 0
	for _, pc := range more {
		pc.WriteTo([]byte("x"), toSink)
		time.Sleep(20 * time.Millisecond)
		peak = max(peak, e.up.Flows())
	}
	<-stalled
	if peak > limit {
		t.Errorf("%d flows carried at once, beyond the table's cap of %d (table %+v)", peak, limit, e.gw.Table().Stats())
	}
}
