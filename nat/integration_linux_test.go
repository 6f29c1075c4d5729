package nat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	topopkg "github.com/usernat/usernat/internal/topo"
	"github.com/usernat/usernat/nat"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/netns"
)

// topo is the reference experiment: containers c1 (172.17.0.4) and c2
// (172.17.0.5) on the bridge, the client (192.168.2.104) on the uplink.
type topo struct {
	*topopkg.Topo
	gw     *nat.Gateway
	c1, c2 *netns.NS
	client *netns.NS
	extra  *bridge.Pipe
}

type topoConfig struct {
	uplinkMTU              int
	timeouts               conntrack.Timeouts
	offload, uplinkOffload bool
}

func newTopo(t *testing.T, tc topoConfig) *topo {
	t.Helper()
	netns.RequirePrivileged(t)
	tt, err := topopkg.New(topopkg.Config{
		UplinkMTU: tc.uplinkMTU, Timeouts: tc.timeouts,
		Offload: tc.offload, UplinkOffload: tc.uplinkOffload,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.Close() })
	return &topo{Topo: tt, gw: tt.Gateway, c1: tt.Containers[0].NS, c2: tt.Containers[1].NS, client: tt.Client, extra: tt.Extra}
}

// serveHTTP runs an HTTP server on addr in ns whose answer is the client
// address it saw.
func serveHTTP(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	stop, err := topopkg.ServeWho(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
}

// get fetches url from ns and returns the body and the address the
// connection went to.
func get(t *testing.T, ns *netns.NS, url string) (body, remote string) {
	t.Helper()
	body, remote, err := topopkg.Get(ns, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return body, remote
}

func hostOf(addrport string) string {
	h, _, _ := net.SplitHostPort(addrport)
	return h
}

func conntrackList(gw *nat.Gateway) string {
	var b strings.Builder
	gw.Table().WriteList(&b, true)
	return b.String()
}

// publish adds the publish rule spec (the -p syntax) to gw.
func publish(t *testing.T, gw *nat.Gateway, spec string) nat.RuleID {
	t.Helper()
	p, err := nat.ParsePublish(spec)
	if err != nil {
		t.Fatal(err)
	}
	id, err := gw.Rules().AddPublish(p)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIntegrationPublishedTCP(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	publish(t, tp.gw, "8080:172.17.0.4:80/tcp")
	serveHTTP(t, tp.c1, ":80")
	body, remote := get(t, tp.client, "http://192.168.2.116:8080/")
	if hostOf(body) != "192.168.2.104" {
		t.Fatalf("the container saw the client as %s, want 192.168.2.104", body)
	}
	if remote != "192.168.2.116:8080" {
		t.Fatalf("the client talked to %v, want 192.168.2.116:8080", remote)
	}
	list := conntrackList(tp.gw)
	t.Logf("conntrack:\n%s", list)
	want := fmt.Sprintf("dst=192.168.2.116 sport=%s dport=8080", strings.Split(body, ":")[1])
	if !strings.Contains(list, want) || !strings.Contains(list, "src=172.17.0.4 dst=192.168.2.104 sport=80") {
		t.Fatalf("no DNAT entry %q in the table", want)
	}
}

func TestIntegrationPublishedUDP(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	publish(t, tp.gw, "5353:172.17.0.4:53/udp")
	udpEcho(t, tp.c1, ":53")
	c, err := tp.client.Dial(context.Background(), "udp", "192.168.2.116:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := udpRoundTrip(t, c, "hello")
	if !strings.HasPrefix(got, "192.168.2.104:") || !strings.HasSuffix(got, " hello") {
		t.Fatalf("echo %q: the container did not see the client's address", got)
	}
}

// udpEcho runs netns.UDPEcho on addr in ns for the test.
func udpEcho(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	c, err := netns.UDPEcho(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
}

// udpRoundTrip sends msg on c until an answer comes, for at most 5 s.
func udpRoundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	buf := make([]byte, 2048)
	for i := 0; i < 10; i++ {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no answer to %q", msg)
	return ""
}

func TestIntegrationMasquerade(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	serveHTTP(t, tp.client, "192.168.2.104:5201")
	body, _ := get(t, tp.c1, "http://192.168.2.104:5201/")
	if hostOf(body) != "192.168.2.116" {
		t.Fatalf("the server saw the container as %s, want the host 192.168.2.116", body)
	}
}

func TestIntegrationSameSourcePort(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	serveHTTP(t, tp.client, "192.168.2.104:5201")
	seen := map[string]bool{}
	for _, ns := range []*netns.NS{tp.c1, tp.c2} {
		var body string
		err := ns.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{Port: 40000}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", "192.168.2.104:5201")
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
			b, err := io.ReadAll(c)
			body = string(b[strings.LastIndex(string(b), "\n")+1:])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		seen[body] = true
	}
	if len(seen) != 2 || !seen["192.168.2.116:40000"] {
		t.Fatalf("the server saw %v: want two different ports, one of them 40000", seen)
	}
}

func TestIntegrationHairpin(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	publish(t, tp.gw, "8080:172.17.0.4:80/tcp")
	serveHTTP(t, tp.c1, ":80")
	for _, ns := range []*netns.NS{tp.c2, tp.c1} { // a neighbour's, then its own published port
		// Through the host's address, and through the gateway's on the
		// bridge, which Docker's DNAT (any local address) takes too.
		for _, at := range []string{"192.168.2.116:8080", "172.17.0.1:8080"} {
			body, remote := get(t, ns, "http://"+at+"/")
			if hostOf(body) != "172.17.0.1" || remote != at {
				t.Fatalf("hairpin through %s: container saw %s, client talked to %v", at, body, remote)
			}
		}
	}
}

func ping(t *testing.T, ns *netns.NS, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := ns.Run(ctx, "ping", append([]string{"-c", "2", "-i", "0.2", "-W", "2"}, args...)...)
	if err != nil {
		t.Fatalf("ping %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestIntegrationPing(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	ping(t, tp.c1, "172.17.0.1")    // the gateway
	ping(t, tp.c1, "192.168.2.104") // through it
	ping(t, tp.client, "192.168.2.116")
	ping(t, tp.c1, "172.17.0.5") // the neighbour, at L2
	if !strings.Contains(conntrackList(tp.gw), "icmp     1 ") {
		t.Fatal("no ICMP entry")
	}
}

func TestIntegrationPathMTU(t *testing.T) {
	tp := newTopo(t, topoConfig{uplinkMTU: 1280})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, _ := tp.c1.Run(ctx, "ping", "-c", "2", "-i", "0.3", "-W", "2", "-M", "do", "-s", "1400", "192.168.2.104")
	if !strings.Contains(string(out), "mtu = 1280") && !strings.Contains(string(out), "mtu=1280") {
		t.Fatalf("no fragmentation-needed with mtu 1280:\n%s", out)
	}
	// The container's kernel learnt the path MTU; packets that fit pass.
	ping(t, tp.c1, "-M", "do", "-s", "1200", "192.168.2.104")
	// And without DF the gateway fragments.
	ping(t, tp.c1, "-M", "dont", "-s", "1400", "192.168.2.104")
}

func TestIntegrationUDPMappingFreed(t *testing.T) {
	tp := newTopo(t, topoConfig{timeouts: conntrack.Timeouts{UDP: 2 * time.Second}})
	udpEcho(t, tp.client, "192.168.2.104:9999")
	from := func(ns *netns.NS) string {
		var got string
		if err := ns.Do(func() error {
			c, err := net.DialUDP("udp", &net.UDPAddr{Port: 50001}, &net.UDPAddr{IP: net.IPv4(192, 168, 2, 104), Port: 9999})
			if err != nil {
				return err
			}
			defer c.Close()
			got, _, _ = strings.Cut(udpRoundTrip(t, c, "x"), " ")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := from(tp.c1); got != "192.168.2.116:50001" {
		t.Fatalf("first mapping %s", got)
	}
	if got := from(tp.c2); got == "192.168.2.116:50001" {
		t.Fatal("two live flows share a mapping")
	}
	deadline := time.Now().Add(10 * time.Second)
	for tp.gw.Table().Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := from(tp.c2); got != "192.168.2.116:50001" {
		t.Fatalf("after the timeout the port was not reused: %s", got)
	}
}

func TestIntegrationGarbageFrames(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	publish(t, tp.gw, "8080:172.17.0.4:80/tcp")
	serveHTTP(t, tp.c1, ":80")
	get(t, tp.client, "http://192.168.2.116:8080/")
	r := rand.New(rand.NewPCG(1, 2))
	mac := tp.gw.MAC()
	frames := make([][]byte, 0, 64)
	for i := 0; i < 2000; i++ {
		f := make([]byte, 14+r.IntN(200))
		for j := range f {
			f[j] = byte(r.Uint32())
		}
		copy(f[0:6], mac[:])
		f[6] = 0x02 // a unicast source
		if i%2 == 0 {
			f[12], f[13] = 0x08, 0x00 // claim IPv4
			if len(f) > 14 {
				f[14] = 0x45
			}
		}
		frames = append(frames, f)
		if len(frames) == cap(frames) {
			tp.extra.WriteFrames(frames)
			frames = frames[:0]
		}
	}
	body, _ := get(t, tp.client, "http://192.168.2.116:8080/")
	if hostOf(body) != "192.168.2.104" {
		t.Fatalf("after garbage: %s", body)
	}
	if st := tp.gw.Stats(); st.DropMalformed+st.DropChecksum == 0 {
		t.Fatalf("garbage not counted: %+v", st)
	}
}

func TestIntegrationPublishAddRemove(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	serveHTTP(t, tp.c1, ":80")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(timeout time.Duration) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return tp.client.Dial(ctx, "tcp", "192.168.2.116:8080")
	}
	request := func(c net.Conn) error {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err == nil && !strings.Contains(string(buf[:n]), "192.168.2.104") {
			err = fmt.Errorf("answer %q", buf[:n])
		}
		return err
	}
	if c, err := dial(time.Second); err == nil {
		c.Close()
		t.Fatal("connected to a port not published yet")
	}
	id := publish(t, tp.gw, "8080:172.17.0.4:80/tcp")
	c, err := dial(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := request(c); err != nil {
		t.Fatal(err)
	}
	if !tp.gw.Rules().Remove(id) {
		t.Fatal("rule not removed")
	}
	// The flow already tracked keeps its translation until it expires...
	if err := request(c); err != nil {
		t.Fatalf("existing flow after removal: %v", err)
	}
	// ...and new ones find nothing.
	if c2, err := dial(time.Second); err == nil {
		c2.Close()
		t.Fatal("connected after the rule was removed")
	}
}

// With segmentation offload on the TAP devices, the containers' and the
// client's kernels send TCP as GSO packets of up to 64 KiB at MTU 1500:
// the gateway rewrites them whole and passes them on to a link with
// offloads, and cuts them into segments for a link without; the bytes
// arrive intact both ways, through the published port (the container
// still sees the client's address) and through masquerade. With a
// smaller uplink MTU, path MTU discovery holds for GSO packets too.
func TestIntegrationOffload(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  topoConfig
	}{
		{"both", topoConfig{offload: true, uplinkOffload: true}},
		{"containers only", topoConfig{offload: true}},
		{"uplink only", topoConfig{uplinkOffload: true}},
		{"both, uplink MTU 1280", topoConfig{offload: true, uplinkOffload: true, uplinkMTU: 1280}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t, tc.cfg)
			publish(t, tp.gw, "8080:172.17.0.4:80/tcp")
			const n = 16 << 20
			seen, err := netns.Transfer(tp.client, "192.168.2.116:8080", tp.c1, "172.17.0.4:80", n)
			if err != nil {
				t.Fatalf("inbound: %v", err)
			}
			if seen.Addr() != topopkg.ClientAddr.Addr() {
				t.Errorf("the container saw the client as %v", seen)
			}
			seen, err = netns.Transfer(tp.c1, "192.168.2.104:5201", tp.client, "192.168.2.104:5201", n)
			if err != nil {
				t.Fatalf("outbound: %v", err)
			}
			if seen.Addr() != topopkg.HostAddr.Addr() {
				t.Errorf("the client saw the container as %v, want the host", seen)
			}
			st := tp.gw.Stats()
			t.Logf("stats: %+v", st)
			if st.GSO == 0 {
				t.Error("no GSO packet went through the gateway")
			}
			// The gateway cuts only GSO packets for a link without
			// offloads: the plain uplink. Towards the bridge it hands
			// them on whole, and the bridge cuts them for a plain TAP;
			// segments follow the MSS, which the smaller MTU lowers.
			if wantCut := tc.cfg.offload && !tc.cfg.uplinkOffload; (st.Segmented > 0) != wantCut {
				t.Errorf("gateway cut %d GSO packets into segments; want some: %v", st.Segmented, wantCut)
			}
		})
	}
}

// A container's connection to an address on the uplink's link that no
// one answers ARP for fails with "no route to host" (host unreachable
// from the gateway, once its ARP requests go unanswered), as through a
// Linux router, not after TCP's two minutes of retries.
func TestIntegrationUnansweredNeighbour(t *testing.T) {
	tp := newTopo(t, topoConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tp.c1.Dial(ctx, "tcp4", "192.168.2.200:80")
	if err == nil {
		c.Close()
		t.Fatal("connected to an address no one has")
	}
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("connect: %v, want no route to host", err)
	}
}
