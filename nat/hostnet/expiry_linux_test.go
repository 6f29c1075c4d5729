package hostnet_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/usernat/usernat/conntrack"
)

// afterExpiry runs ask (a datagram of the flow whose entry is orig, and
// its answer) again and again, each time as soon as the entry expired
// while the uplink still has the flow (flows flows in all): the table's
// reaper, which removes expired entries (and so has the uplink release
// their flows), runs every 200 ms, so for a while after its deadline an
// entry is gone for every packet while its flow is still there. Now and
// then the reaper comes at the deadline and the moment is missed: ask
// then opens a new flow, and afterExpiry tries again; it wants three
// datagrams in that moment.
func afterExpiry(t *testing.T, e *env, orig conntrack.Tuple, flows int, ask func(round int)) {
	t.Helper()
	ask(0)
	hits := 0
	for round := 1; round <= 10 && hits < 3; round++ {
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("entry %v did not expire", orig)
			}
			if _, _, ok := e.gw.Table().Get(0, orig); !ok {
				break
			}
		}
		if e.up.Flows() == flows {
			hits++
		}
		ask(round)
	}
	if hits < 3 {
		t.Fatalf("only %d datagrams came between an expiry and the reaper", hits)
	}
}

// A container's datagram that comes after its flow's entry expired, but
// before the table's reaper removed it (and the uplink released the
// flow), is a new flow's first, as through the kernel's NAT (whose
// lookup takes an expired entry for none and makes a new one): its
// answer reaches the container. Sent through the old flow's socket
// without an entry, the datagram left, but its answer found no entry
// at the gateway and was dropped (and the socket closed under it a moment
// later, when the reaper came).
func TestIntegrationUDPAfterExpiry(t *testing.T) {
	e := newEnv(t, envConfig{timeouts: conntrack.Timeouts{UDP: 2 * time.Second, UDPStream: 2 * time.Second}})
	udpWhoServer(t, e.remote, "198.51.100.2:5300")
	c, err := e.ctr.ListenPacket("udp4", "172.17.0.4:41001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 5300}
	orig := conntrack.Tuple{Src: ctrAddr.Addr(), Dst: remoteAddr.Addr(), SrcPort: 41001, DstPort: 5300, Proto: conntrack.ProtoUDP}
	buf := make([]byte, 256)
	ask := func(round int) {
		t.Helper()
		c.WriteTo([]byte("q"), dst)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := c.ReadFrom(buf); err != nil {
			t.Fatalf("round %d: no answer: %v (uplink %v, gateway %+v)", round, err, e.up.Counters(), e.gw.Stats())
		}
	}
	afterExpiry(t, e, orig, 1, ask)
}

// The same for a published port's client: its datagram after the
// flow's entry expired (not yet reaped) makes a new entry, through
// which the container's answer goes back from the published port, as
// the kernel's DNAT would send it. The uplink took the new entry's
// making (which destroys the expired one) for its flow's end, released
// the flow, and sent the container's answer out of a socket of its own,
// from another port, which the client (here on a connected socket, as
// a resolver's) never reads.
func TestIntegrationPublishedUDPAfterExpiry(t *testing.T) {
	e := newEnv(t, envConfig{timeouts: conntrack.Timeouts{UDP: 2 * time.Second, UDPStream: 2 * time.Second}})
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	publish(t, e.up, "5353:172.17.0.4:53/udp")
	c, err := e.remote.Dial(ctx(t), "udp4", "198.51.100.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := netip.MustParseAddrPort(c.LocalAddr().String())
	orig := conntrack.Tuple{Src: cl.Addr(), Dst: hostAddr.Addr(), SrcPort: cl.Port(), DstPort: 5353, Proto: conntrack.ProtoUDP}
	buf := make([]byte, 256)
	ask := func(round int) {
		t.Helper()
		c.Write([]byte("q"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil || !strings.HasPrefix(string(buf[:n]), cl.String()+" ") {
			t.Fatalf("round %d: answer %q, %v; want the container's, from the published port (uplink %v)", round, buf[:n], err, e.up.Counters())
		}
	}
	afterExpiry(t, e, orig, 1, ask)
}

// The same for an echo flow: ping's next request after the entry
// expired is answered.
func TestIntegrationPingAfterExpiry(t *testing.T) {
	e := newEnv(t, envConfig{ping: true, timeouts: conntrack.Timeouts{ICMP: 2 * time.Second}})
	pc, err := e.ctr.ListenPacket("ip4:icmp", "172.17.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := &net.IPAddr{IP: net.IPv4(198, 51, 100, 2)}
	orig := conntrack.ICMPTuple(ctrAddr.Addr(), remoteAddr.Addr(), 8, 0, 0x4444)
	buf := make([]byte, 1500)
	ask := func(seq byte) {
		t.Helper()
		echo := []byte{8, 0, 0, 0, 0x44, 0x44, 0, seq, 'p'}
		s := ^icmpSum(echo)
		echo[2], echo[3] = byte(s>>8), byte(s)
		pc.WriteTo(echo, dst)
		deadline := time.Now().Add(2 * time.Second)
		for {
			pc.SetReadDeadline(deadline)
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("echo %d: no reply: %v (uplink %v)", seq, err, e.up.Counters())
			}
			if n >= 8 && buf[0] == 0 && buf[4] == 0x44 && buf[5] == 0x44 && buf[7] == seq {
				return
			}
		}
	}
	afterExpiry(t, e, orig, 1, func(round int) { ask(byte(round)) })
}
