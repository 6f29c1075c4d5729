package hostnet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/nat/hostnet"
)

// logBuffer keeps what a logger writes, for a test to read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logTo returns a logger of warnings and worse into a new logBuffer.
func logTo() (*slog.Logger, *logBuffer) {
	l := &logBuffer{}
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelWarn})), l
}

// prohibited routes 203.0.113.0/24 from the host through the remote
// machine, which answers for 203.0.113.5 with ICMP "administratively
// prohibited" (a host socket connected there reads EHOSTUNREACH), until
// the returned func makes it a host that answers, with an echo server
// on UDP port 53.
func prohibited(t *testing.T, e *env) (heal func()) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.host.IP("route", "add", "203.0.113.0/24", "via", "198.51.100.2"))
	must(e.remote.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0) }))
	must(unlimitedICMP(e.remote))
	must(e.remote.IP("route", "add", "prohibit", "203.0.113.5/32"))
	return func() {
		t.Helper()
		must(e.remote.IP("route", "del", "prohibit", "203.0.113.5/32"))
		must(e.remote.AddAddr("lo", netip.MustParsePrefix("203.0.113.5/32")))
		udpWhoServer(t, e.remote, "203.0.113.5:53")
	}
}

// An ICMP error from the network (a router's "administratively
// prohibited") is the news of one datagram, not the end of the flow: the
// flow, its host socket and its entry live on, and when the destination
// answers, it sees the host socket the entry names.
func TestIntegrationUDPICMPError(t *testing.T) {
	e := newEnv(t, envConfig{})
	heal := prohibited(t, e)
	c, err := e.ctr.ListenPacket("udp4", "172.17.0.4:41000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 5), Port: 53}
	orig := conntrack.Tuple{Src: netip.MustParseAddr("172.17.0.4"), Dst: netip.MustParseAddr("203.0.113.5"), SrcPort: 41000, DstPort: 53, Proto: conntrack.ProtoUDP}
	c.WriteTo([]byte("1"), dst)
	if !waitFor(2*time.Second, func() bool { return e.up.Counters()["udp_opened"] == 1 }) {
		t.Fatal("no flow opened for the first datagram")
	}
	time.Sleep(300 * time.Millisecond) // for the router's answer, and what the flow makes of it
	en, _, ok := e.gw.Table().Get(0, orig)
	if !ok || e.up.Flows() != 1 {
		t.Fatalf("after the router's ICMP error: entry %v, %d flows; want both still there", ok, e.up.Flows())
	}
	heal()
	c.WriteTo([]byte("2"), dst)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 256)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	seen := strings.Fields(string(buf[:n]))[0]
	if want := netip.AddrPortFrom(en.Reply.Dst, en.Reply.DstPort).String(); seen != want {
		t.Errorf("the destination saw %s; the entry's reply tuple names %s", seen, want)
	}
	if got := e.up.Counters(); got["udp_opened"] != 1 || got["host_socket_errors"] != 0 {
		t.Errorf("udp_opened %d, host_socket_errors %d; want one socket, no failure", got["udp_opened"], got["host_socket_errors"])
	}
}

// The same for echo: the router's error leaves the ICMP socket, so the
// echo flow keeps its identifier and its one entry.
func TestIntegrationPingICMPError(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	prohibited(t, e)
	out, err := e.ctr.Run(ctx(t), "ping", "-c", "3", "-i", "0.3", "-W", "1", "203.0.113.5")
	if err == nil {
		t.Fatalf("ping answered through a prohibited route:\n%s", out)
	}
	if c := e.up.Counters(); c["ping_opened"] != 1 || c["host_socket_errors"] != 0 || e.up.Flows() != 1 {
		t.Errorf("ping_opened %d, host_socket_errors %d, %d flows; want one socket, alive", c["ping_opened"], c["host_socket_errors"], e.up.Flows())
	}
}

// An echo to a broadcast address, which the ICMP socket may not send to
// (connect says EACCES), goes unanswered, as a broadcast echo through
// the kernel's NAT does; it is not the host refusing ICMP sockets, which
// is logged, once, only when it is so.
func TestIntegrationPingBroadcast(t *testing.T) {
	logger, logs := logTo()
	e := newEnv(t, envConfig{ping: true, uplink: hostnet.Config{Logger: logger}})
	if out, err := e.ctr.Run(ctx(t), "ping", "-b", "-c", "1", "-W", "1", "198.51.100.255"); err == nil {
		t.Errorf("broadcast echo answered:\n%s", out)
	}
	if n := e.up.Counters()["drop_ping_refused"]; n != 0 || strings.Contains(logs.String(), "ping_group_range") {
		t.Errorf("a broadcast echo taken for the host's refusal: drop_ping_refused %d; log: %s", n, logs)
	}
	if out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "3", "198.51.100.2"); err != nil {
		t.Errorf("ping after the broadcast: %v\n%s", err, out)
	}
}

// A connected UDP socket in the container hears what the network says of
// its datagrams, as it would through the kernel's NAT: a closed port's
// ICMP port unreachable is ECONNREFUSED on its next read, a router's
// "administratively prohibited" EHOSTUNREACH.
func TestIntegrationUDPUnreachable(t *testing.T) {
	e := newEnv(t, envConfig{})
	prohibited(t, e)
	for _, c := range []struct {
		dst  string
		want error
	}{
		{"198.51.100.2:9", syscall.ECONNREFUSED}, // no server there
		{"203.0.113.5:53", syscall.EHOSTUNREACH},
	} {
		conn, err := e.ctr.Dial(ctx(t), "udp4", c.dst)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var got error
		for range 3 { // the first datagram opens the flow; its error may come before the reader
			conn.Write([]byte("x"))
			conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, got = conn.Read(make([]byte, 64)); errors.Is(got, c.want) {
				break
			}
		}
		if !errors.Is(got, c.want) {
			t.Errorf("%s: the container's socket read %v, want %v", c.dst, got, c.want)
		}
	}
	if n := e.up.Flows(); n != 2 {
		t.Errorf("%d flows after the errors, want the 2, alive", n)
	}
}

// unreachableToo adds to prohibited's routes one to 203.0.113.6 that the
// remote machine answers with ICMP host unreachable (code 1): an error
// Linux takes for a soft one, which a socket without IP_RECVERR never
// hears.
func unreachableToo(t *testing.T, e *env) {
	t.Helper()
	if err := e.remote.IP("route", "add", "unreachable", "203.0.113.6/32"); err != nil {
		t.Fatal(err)
	}
}

// A router's errors about a container's echo requests reach the
// container from the router, as through the kernel's NAT, about the
// container's own echo: ping says which router and what it said, soft
// errors (host unreachable) as well as hard ones (filtered).
func TestIntegrationPingErrorsForwarded(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	prohibited(t, e)
	unreachableToo(t, e)
	for _, c := range []struct{ dst, want string }{
		{"203.0.113.5", "From 198.51.100.2 icmp_seq=1 Packet filtered"},
		{"203.0.113.6", "From 198.51.100.2 icmp_seq=1 Destination Host Unreachable"},
	} {
		out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "2", c.dst)
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("ping %s: %v; want %q in:\n%s", c.dst, err, c.want, out)
		}
	}
	if n := e.up.Counters()["host_errors"]; n != 2 {
		t.Errorf("host_errors %d, want 2", n)
	}
}

// The same for UDP: a container's socket with IP_RECVERR hears each
// error as the network sent it, type, code and sender (the router, or
// the destination itself for a closed port), about its own datagram.
func TestIntegrationUDPErrorsForwarded(t *testing.T) {
	e := newEnv(t, envConfig{})
	prohibited(t, e)
	unreachableToo(t, e)
	for _, c := range []struct {
		dst        string
		code       uint8
		from       string
		hardErrnum syscall.Errno
	}{
		{"198.51.100.2:9", 3, "198.51.100.2", syscall.ECONNREFUSED},  // the destination's port unreachable
		{"203.0.113.5:53", 13, "198.51.100.2", syscall.EHOSTUNREACH}, // filtered by the router
		{"203.0.113.6:53", 1, "198.51.100.2", syscall.EHOSTUNREACH},  // host unreachable, soft
	} {
		conn, err := e.ctr.Dial(ctx(t), "udp4", c.dst)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rc, _ := conn.(*net.UDPConn).SyscallConn()
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1) })
		conn.Write([]byte("x"))
		ee, from, ok := queuedError(rc, 3*time.Second)
		if !ok {
			t.Errorf("%s: no error queued on the container's socket", c.dst)
			continue
		}
		if ee.Origin != 2 || ee.Type != 3 || ee.Code != c.code || ee.Errno != uint32(c.hardErrnum) || from != c.from {
			t.Errorf("%s: origin %d type %d code %d errno %d from %s; want ICMP type 3 code %d (%v) from %s",
				c.dst, ee.Origin, ee.Type, ee.Code, ee.Errno, from, c.code, c.hardErrnum, c.from)
		}
	}
	if n := e.up.Flows(); n != 3 {
		t.Errorf("%d flows after the errors, want the 3, alive", n)
	}
}

// extendedErr is what a test reads of struct sock_extended_err.
type extendedErr struct {
	Errno              uint32
	Origin, Type, Code uint8
	Info               uint32 // the MTU of "fragmentation needed"
}

// queuedError waits up to d for an error on the error queue of a socket
// with IP_RECVERR, and returns it with the address of its sender.
func queuedError(rc syscall.RawConn, d time.Duration) (extendedErr, string, bool) {
	var ee extendedErr
	var from string
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		got := false
		rc.Control(func(fd uintptr) {
			buf, oob := make([]byte, 512), make([]byte, 512)
			_, oobn, _, _, err := syscall.Recvmsg(int(fd), buf, oob, syscall.MSG_ERRQUEUE|syscall.MSG_DONTWAIT)
			if err != nil {
				return
			}
			msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return
			}
			for _, m := range msgs {
				if m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_RECVERR && len(m.Data) >= 16+8 {
					ee.Errno = binary.NativeEndian.Uint32(m.Data[0:])
					ee.Origin, ee.Type, ee.Code = m.Data[4], m.Data[5], m.Data[6]
					ee.Info = binary.NativeEndian.Uint32(m.Data[8:])
					from = netip.AddrFrom4([4]byte(m.Data[16+4 : 16+8])).String()
					got = true
				}
			}
		})
		if got {
			return ee, from, true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ee, from, false
}

// A container's traceroute finds the gateway, then the routers beyond
// the host, as through the kernel's NAT: a datagram with TTL 1 dies at
// the gateway, one with 2 leaves the host with 1 and dies at the next
// router (198.51.100.2), whose time exceeded reaches the container. Each
// for UDP (one flow per probe, as traceroute's) and echo (one flow whose
// probes change TTL, as traceroute -I's).
func TestIntegrationTraceroute(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	secondHop(t, e)
	for _, c := range []struct {
		ttl  int
		from string
	}{{1, "172.17.0.1"}, {2, "198.51.100.2"}} {
		conn, rc := probeConn(t, e, fmt.Sprintf("203.0.113.7:%d", 33433+c.ttl), c.ttl)
		conn.Write([]byte("probe"))
		ee, from, ok := queuedError(rc, 3*time.Second)
		if !ok || ee.Origin != 2 || ee.Type != 11 || from != c.from {
			t.Errorf("UDP with TTL %d: error %v (origin %d type %d) from %s; want time exceeded from %s", c.ttl, ok, ee.Origin, ee.Type, from, c.from)
		}
		out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "2", "-t", strconv.Itoa(c.ttl), "203.0.113.7")
		if want := "From " + c.from + " icmp_seq=1 Time to live exceeded"; err == nil || !strings.Contains(string(out), want) {
			t.Errorf("ping with TTL %d: %v; want %q in:\n%s", c.ttl, err, want, out)
		}
	}

	// One echo flow whose TTL changes: the first probe leaves the host
	// with 2 and is lost beyond the remote machine (which sends the host
	// a redirect, since it sends the probe back where it came from: news
	// an ICMP socket reports, and no end of the flow); the second, with
	// 1, dies there.
	pc, err := e.ctr.ListenPacket("ip4:icmp", "172.17.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, _ := pc.(*net.IPConn).SyscallConn()
	dst := &net.IPAddr{IP: net.IPv4(203, 0, 113, 7)}
	for seq, ttl := range []int{3, 2} {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, ttl) })
		echo := []byte{8, 0, 0, 0, 0x42, 0x42, 0, byte(seq + 1), 'p'}
		binary.BigEndian.PutUint16(echo[2:], ^icmpSum(echo))
		if _, err := pc.WriteTo(echo, dst); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	buf := make([]byte, 1500)
	for {
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no time exceeded for the echo flow's second probe: %v", err)
		}
		m := buf[:n]
		if n < 8+20+8 || m[0] != 11 {
			continue
		}
		inner := m[8+20:]
		if from.String() != "198.51.100.2" || binary.BigEndian.Uint16(inner[4:]) != 0x4242 || inner[7] != 2 {
			t.Errorf("time exceeded from %s about echo id %#x seq %d; want from 198.51.100.2 about id 0x4242 seq 2", from, binary.BigEndian.Uint16(inner[4:]), inner[7])
		}
		break
	}
	if c := e.up.Counters(); c["ping_opened"] != 2 || c["host_socket_errors"] != 0 {
		t.Errorf("ping_opened %d, host_socket_errors %d; want 2 (the second ping, one flow of two probes), none failed", c["ping_opened"], c["host_socket_errors"])
	}
}

// icmpSum is the ones' complement sum of b (even length or padded).
func icmpSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// The DNS address (slirp4netns's 10.0.2.3) answers the containers'
// queries over UDP and TCP from the resolver it stands for, whether a
// server elsewhere or one on the host's loopback (systemd-resolved's
// 127.0.0.53) that the container cannot reach otherwise; its other ports
// are refused.
func TestIntegrationDNS(t *testing.T) {
	dns := netip.MustParseAddr("172.17.0.3")
	for _, c := range []struct {
		name     string
		resolver string
		inHost   bool
	}{{"elsewhere", "198.51.100.2:53", false}, {"host loopback", "127.0.0.53:53", true}} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envConfig{uplink: hostnet.Config{DNS: dns, Resolver: netip.MustParseAddrPort(c.resolver)}})
			ns := e.remote
			if c.inHost {
				ns = e.host
			}
			udpWhoServer(t, ns, c.resolver)
			whoServer(t, ns, c.resolver)

			conn, err := e.ctr.Dial(ctx(t), "udp4", "172.17.0.3:53")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte("query"))
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 256)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("UDP query to the DNS address: %v", err)
			}
			// The entry is the container's flow to the DNS address, and
			// its reply tuple names the host socket the resolver saw.
			seen := strings.Fields(string(buf[:n]))[0]
			entries := e.gw.Table().List()
			var found bool
			for _, en := range entries {
				if en.Orig.Dst == dns && en.Orig.DstPort == 53 && netip.AddrPortFrom(en.Reply.Dst, en.Reply.DstPort).String() == seen {
					found = true
				}
			}
			if !found {
				t.Errorf("no entry from the container to %v:53 whose reply names %s, the socket the resolver saw: %v", dns, seen, entries)
			}

			tc, err := e.ctr.Dial(ctx(t), "tcp4", "172.17.0.3:53")
			if err != nil {
				t.Fatalf("TCP to the DNS address: %v", err)
			}
			tc.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := tc.Read(buf); err != nil {
				t.Errorf("TCP to the DNS address: no answer: %v", err)
			}
			tc.Close()

			if _, err := e.ctr.Dial(ctx(t), "tcp4", "172.17.0.3:54"); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("TCP to the DNS address's port 54: %v, want refused", err)
			}
			uc, err := e.ctr.Dial(ctx(t), "udp4", "172.17.0.3:54")
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			uc.Write([]byte("x"))
			uc.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := uc.Read(buf); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("UDP to the DNS address's port 54: %v, want port unreachable (refused)", err)
			}
		})
	}
}

// Five echo requests of one flow (one id), TTL 2, sent back to back, as
// mtr or ping -t send them: each leaves the host with TTL 1 and dies at
// 198.51.100.2, whose time exceeded (one each, within its burst of 6)
// must reach the container, and each request must leave the host: a send
// that finds the socket's pending error (an earlier echo's) hands it on
// and sends again.
func TestIntegrationEchoBurstErrors(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	secondHop(t, e)
	pc, err := e.ctr.ListenPacket("ip4:icmp", "172.17.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, _ := pc.(*net.IPConn).SyscallConn()
	rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, 2) })
	dst := &net.IPAddr{IP: net.IPv4(203, 0, 113, 7)}
	const n = 5
	for seq := 1; seq <= n; seq++ {
		echo := []byte{8, 0, 0, 0, 0x43, 0x43, 0, byte(seq), 'p'}
		binary.BigEndian.PutUint16(echo[2:], ^icmpSum(echo))
		if _, err := pc.WriteTo(echo, dst); err != nil {
			t.Fatal(err)
		}
	}
	got := map[byte]bool{}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(2 * time.Second)
	for len(got) < n {
		pc.SetReadDeadline(deadline)
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		m := buf[:k]
		if k < 8+20+8 || m[0] != 11 {
			continue
		}
		inner := m[8+20:]
		if binary.BigEndian.Uint16(inner[4:]) == 0x4343 {
			got[inner[7]] = true
		}
	}
	if len(got) != n {
		t.Errorf("time exceeded for %d of %d echo requests (seqs %v); counters %v", len(got), n, got, e.up.Counters())
	}
}

// An ICMP error that reaches a flow's host socket while its send buffer
// is more than half full (a slow uplink: here a tbf qdisc on the host's
// eth0) makes epoll report EPOLLERR alone, on which Go's poller fails
// every wait until another event; the flow must live on.
func TestIntegrationErrorWhileUnwritable(t *testing.T) {
	e := newEnv(t, envConfig{})
	if out, err := e.host.Run(ctx(t), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "8kbit", "burst", "1600", "limit", "10000000"); err != nil {
		t.Fatalf("tc: %v %s", err, out)
	}
	prohibited(t, e)
	unreachableToo(t, e) // 203.0.113.6: host unreachable, a soft error
	c, err := e.ctr.Dial(ctx(t), "udp4", "203.0.113.6:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1400)
	for range 80 {
		c.Write(payload)
		time.Sleep(time.Millisecond)
	}
	time.Sleep(3500 * time.Millisecond) // the second datagram leaves after ~1.4 s; its error comes back at once
	if got := e.up.Counters(); e.up.Flows() != 1 || got["released"] != 0 {
		t.Errorf("%d flows, released %d, host_errors %d, drop_host_full %d; want the flow alive", e.up.Flows(), got["released"], got["host_errors"], got["drop_host_full"])
	}
}

// The same for UDP: five datagrams of one flow, TTL 2, back to back;
// each leaves the host and its time exceeded reaches the container's
// socket.
func TestIntegrationUDPBurstErrors(t *testing.T) {
	e := newEnv(t, envConfig{})
	secondHop(t, e)
	conn, rc := probeConn(t, e, "203.0.113.7:33434", 2)
	const n = 5
	for sent := 0; sent < n; {
		// A write that takes the pending error of an earlier probe (the
		// container's socket has IP_RECVERR too) sends nothing: again.
		_, err := conn.Write([]byte("probe"))
		switch {
		case err == nil:
			sent++
		case !errors.Is(err, syscall.EHOSTUNREACH):
			t.Fatal(err)
		}
	}
	got := 0
	for got < n {
		ee, _, ok := queuedError(rc, 2*time.Second)
		if !ok {
			break
		}
		if ee.Type == 11 {
			got++
		}
	}
	if got != n {
		t.Errorf("time exceeded for %d of %d datagrams; counters %v", got, n, e.up.Counters())
	}
}

// secondHop routes 203.0.113.7 from the host through the remote machine,
// which sends it back to the host, which does not forward: a path whose
// second hop is 198.51.100.2, where a datagram that left the host with
// TTL 1 dies.
func secondHop(t *testing.T, e *env) {
	t.Helper()
	if err := e.host.IP("route", "add", "203.0.113.0/24", "via", "198.51.100.2"); err != nil {
		t.Fatal(err)
	}
	if err := e.remote.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0) }); err != nil {
		t.Fatal(err)
	}
	if err := unlimitedICMP(e.remote); err != nil {
		t.Fatal(err)
	}
	if err := e.remote.IP("route", "add", "203.0.113.7/32", "via", "198.51.100.1"); err != nil {
		t.Fatal(err)
	}
}

// unlimitedICMP has the router ns send every ICMP error the tests count:
// Linux limits them per destination (a burst of 6) and, on some kernels,
// across every namespace of the machine, which other tests running
// meanwhile use up. An empty icmp_ratemask exempts every type from both.
func unlimitedICMP(ns *netns.NS) error {
	return ns.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/icmp_ratemask", []byte("0"), 0) })
}

// probeConn is a container's UDP socket connected to dst that sends with
// TTL ttl and queues the ICMP errors it hears (IP_RECVERR), as
// traceroute's; closed when the test ends.
func probeConn(t *testing.T, e *env, dst string, ttl int) (net.Conn, syscall.RawConn) {
	t.Helper()
	conn, err := e.ctr.Dial(ctx(t), "udp4", dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc, _ := conn.(*net.UDPConn).SyscallConn()
	rc.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1)
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, ttl)
	})
	return conn, rc
}

// The port unreachable a port of the DNS address other than 53 draws
// comes from that address, as from a host with nothing listening there,
// and at the rate Linux sends them: 6 at once to a container sending
// again and again, not one a datagram.
func TestIntegrationDNSOtherPortUnreachable(t *testing.T) {
	e := newEnv(t, envConfig{uplink: hostnet.Config{DNS: netip.MustParseAddr("172.17.0.3"), Resolver: netip.MustParseAddrPort("198.51.100.2:53")}})
	conn, rc := probeConn(t, e, "172.17.0.3:54", 64)
	for range 20 {
		conn.Write([]byte("x"))
	}
	n := 0
	for {
		ee, from, ok := queuedError(rc, 500*time.Millisecond)
		if !ok {
			break
		}
		n++
		if ee.Type != 3 || ee.Code != 3 || from != "172.17.0.3" {
			t.Errorf("type %d code %d from %s; want port unreachable from the DNS address 172.17.0.3", ee.Type, ee.Code, from)
		}
	}
	if n != 6 {
		t.Errorf("%d port unreachables for 20 datagrams at once, want 6", n)
	}
}
