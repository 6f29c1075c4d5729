package nat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipeGateway is a gateway whose container and uplink are pipes the test
// drives by hand, frame by frame: no devices, no root.
type pipeGateway struct {
	t         *testing.T
	gw        *Gateway
	br        *bridge.Bridge
	container *bridge.Pipe // the test's end of a container's link
	lan       *bridge.Pipe // the test's end of the uplink
	upMAC     bridge.MAC
}

var (
	ctrMAC    = bridge.MustParseMAC("02:42:ac:11:00:04")
	clientMAC = bridge.MustParseMAC("0a:1b:2c:3d:4e:5f")
	ctrIP     = netip.MustParseAddr("172.17.0.4")
	gwIP      = netip.MustParseAddr("172.17.0.1")
	hostIP    = netip.MustParseAddr("192.168.2.116")
	clientIP  = netip.MustParseAddr("192.168.2.104")
)

// newPipeBridge is a bridge with one container port, whose other end it
// returns.
func newPipeBridge(t *testing.T) (*bridge.Bridge, *bridge.Pipe) {
	br, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := bridge.NewPipe(bridge.PipeConfig{})
	if _, err := br.AddPort(theirs, bridge.PortConfig{Name: "ctr"}); err != nil {
		t.Fatal(err)
	}
	return br, mine
}

func newPipeGateway(t *testing.T) *pipeGateway {
	br, mine := newPipeBridge(t)
	lanGW, lanTest := bridge.NewPipe(bridge.PipeConfig{})
	up, err := NewLinkUplink(LinkUplinkConfig{Port: lanGW, Addr: netip.MustParsePrefix("192.168.2.116/24")})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix("172.17.0.1/16"), Uplink: up,
		Conntrack: conntrack.Config{ExpireInterval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	pg := &pipeGateway{t: t, gw: gw, br: br, container: mine, lan: lanTest, upMAC: up.MAC()}
	t.Cleanup(func() {
		gw.Close()
		mine.Close()
		lanTest.Close()
		br.Close()
	})
	return pg
}

// read returns the next frame on p, failing after 5 s.
func (pg *pipeGateway) read(p *bridge.Pipe) []byte {
	pg.t.Helper()
	type res struct {
		b   []byte
		err error
	}
	c := make(chan res, 1)
	go func() {
		buf := make([]byte, 70000)
		n, err := p.ReadFrame(buf)
		c <- res{buf[:n], err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			pg.t.Fatal(r.err)
		}
		return r.b
	case <-time.After(5 * time.Second):
		pg.t.Fatal("no frame within 5 s")
		return nil
	}
}

func frame(dst, src bridge.MAC, typ uint16, payload []byte) []byte {
	f := make([]byte, etherHeader+len(payload))
	putEther(f, dst, src, typ)
	copy(f[etherHeader:], payload)
	return f
}

func arpFrame(dst bridge.MAC, a arpPacket) []byte { return appendARPFrame(nil, dst, a) }

// stallUplink has the container send a datagram out through the gateway,
// whose MAC is gwMAC: with the uplink never read, the gateway's ARP
// request for the datagram's next hop waits there, and the gateway with
// it.
func (pg *pipeGateway) stallUplink(gwMAC bridge.MAC) {
	out := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 12))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, out))
}

// resolveGateway has the container learn the gateway's MAC, as its kernel
// would, and returns it.
func (pg *pipeGateway) resolveGateway() bridge.MAC {
	pg.container.WriteFrame(arpFrame(bridge.Broadcast, arpPacket{op: arpRequest, senderMAC: ctrMAC, senderIP: ctrIP, targetIP: gwIP}))
	reply, ok := parseARP(pg.read(pg.container)[etherHeader:])
	if !ok || reply.op != arpReply || reply.senderIP != gwIP || reply.targetMAC != ctrMAC {
		pg.t.Fatalf("ARP reply %+v", reply)
	}
	return reply.senderMAC
}

func TestGatewayARPAndPing(t *testing.T) {
	pg := newPipeGateway(t)
	gwMAC := pg.resolveGateway()
	if gwMAC != pg.gw.MAC() {
		t.Fatalf("gateway answered with %v, its MAC is %v", gwMAC, pg.gw.MAC())
	}
	req := ipPacket(ctrIP, gwIP, conntrack.ProtoICMP, icmpHeader(8, 0, 77, []byte("ping")))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, req))
	rep := pg.read(pg.container)[etherHeader:]
	if err := verify(rep); err != nil {
		t.Fatal(err)
	}
	if rep[20] != 0 || netip.AddrFrom4([4]byte(rep[16:20])) != ctrIP || binary.BigEndian.Uint16(rep[24:]) != 77 {
		t.Fatalf("echo reply % x", rep)
	}
	e := pg.gw.Table().List()
	if len(e) != 1 || e[0].Status&conntrack.SeenReply == 0 {
		t.Fatalf("conntrack %v", e)
	}
}

func TestGatewayMasqueradeThroughPipes(t *testing.T) {
	pg := newPipeGateway(t)
	gwMAC := pg.resolveGateway()
	out := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 12))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, out))

	// The gateway asks for the next hop, then sends the held packet.
	ask, ok := parseARP(pg.read(pg.lan)[etherHeader:])
	if !ok || ask.op != arpRequest || ask.targetIP != clientIP || ask.senderIP != hostIP {
		t.Fatalf("ARP request %+v", ask)
	}
	pg.lan.WriteFrame(arpFrame(pg.upMAC, arpPacket{op: arpReply, senderMAC: clientMAC, senderIP: clientIP, targetMAC: pg.upMAC, targetIP: hostIP}))
	f := pg.read(pg.lan)
	pkt := f[etherHeader:]
	if err := verify(pkt); err != nil {
		t.Fatal(err)
	}
	if bridge.MAC(f[0:6]) != clientMAC || netip.AddrFrom4([4]byte(pkt[12:16])) != hostIP || binary.BigEndian.Uint16(pkt[20:]) != 5000 || pkt[8] != 63 {
		t.Fatalf("masqueraded packet % x", f)
	}
	// The answer is translated back to the container.
	back := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(53, 5000, 30))
	pg.lan.WriteFrame(frame(pg.upMAC, clientMAC, etherTypeIP4, back))
	f = pg.read(pg.container)
	pkt = f[etherHeader:]
	if err := verify(pkt); err != nil {
		t.Fatal(err)
	}
	if bridge.MAC(f[0:6]) != ctrMAC || netip.AddrFrom4([4]byte(pkt[16:20])) != ctrIP || netip.AddrFrom4([4]byte(pkt[12:16])) != clientIP {
		t.Fatalf("reply % x", f)
	}
	// An unsolicited packet from outside to a port nobody published
	// reaches nobody.
	stray := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(53, 6000, 1))
	pg.lan.WriteFrame(frame(pg.upMAC, clientMAC, etherTypeIP4, stray))
	icmp := pg.read(pg.lan)[etherHeader:] // port unreachable, from the host address
	if icmp[9] != 1 || icmp[20] != 3 || icmp[21] != 3 {
		t.Fatalf("no port unreachable: % x", icmp)
	}
}

func TestGatewayDropsGarbage(t *testing.T) {
	pg := newPipeGateway(t)
	gwMAC := pg.resolveGateway()
	// Whatever the gateway answers on the LAN is read, so its writes to
	// the unbuffered pipe never wait on this test.
	go func() {
		buf := make([]byte, 70000)
		for {
			if _, err := pg.lan.ReadFrame(buf); err != nil {
				return
			}
		}
	}()
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 3000 {
		b := make([]byte, r.IntN(120))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%3 == 0 && len(b) > 0 {
			b[0] = 0x45
		}
		pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, b))
		pg.lan.WriteFrame(frame(pg.upMAC, clientMAC, etherTypeIP4, b))
	}
	st := pg.gw.Stats()
	if st.DropMalformed+st.DropChecksum+st.DropNoRule+st.DropInvalid == 0 {
		t.Fatalf("garbage not counted: %+v", st)
	}
	// Still alive: a ping works.
	req := ipPacket(ctrIP, gwIP, conntrack.ProtoICMP, icmpHeader(8, 0, 78, nil))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, req))
	for {
		if rep := pg.read(pg.container); len(rep) > 34 && rep[12] == 8 && rep[etherHeader+20] == 0 {
			break
		}
	}
}

func TestGatewayRefusesTCPWithRST(t *testing.T) {
	pg := newPipeGateway(t)
	gwMAC := pg.resolveGateway()
	syn := make([]byte, 20)
	binary.BigEndian.PutUint16(syn[0:], 40000)
	binary.BigEndian.PutUint16(syn[2:], 22)
	binary.BigEndian.PutUint32(syn[4:], 0x7fffffff)
	syn[12], syn[13] = 5<<4, conntrack.TCPSyn
	binary.BigEndian.PutUint16(syn[14:], 1024)
	pkt := ipPacket(ctrIP, gwIP, conntrack.ProtoTCP, syn)
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, pkt))
	rst := pg.read(pg.container)[etherHeader:]
	if err := verify(rst); err != nil {
		t.Fatal(err)
	}
	tcp := rst[20:]
	if tcp[13] != conntrack.TCPRst|conntrack.TCPAck || binary.BigEndian.Uint32(tcp[8:]) != 0x80000000 ||
		binary.BigEndian.Uint16(tcp[0:]) != 22 || binary.BigEndian.Uint16(tcp[2:]) != 40000 {
		t.Fatalf("reset % x", rst)
	}
	if n := pg.gw.Table().Len(); n != 0 {
		t.Fatalf("%d entries after the refused connection, want 0", n)
	}
}

// Fragments that each fit the uplink MTU, with DF set (as Linux's
// forwarding sends a reassembled DF datagram on, IPSKB_FRAG_PMTU), must go
// on as fragments: Linux's nf_defrag sets ignore_df, and ip_exceeds_mtu
// compares frag_max_size, the largest fragment, with the MTU. Answering
// "fragmentation needed, MTU 1500" to a sender whose fragments are no
// larger would black-hole it.
func TestReassembledDFFragmentsFit(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	pkt := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 2000))
	frags := fragment4(t, pkt, 1500)
	for _, f := range frags {
		f[6] |= 0x40 // DF on every fragment
		putIPv4Checksum(f)
		gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, f), true, bridge.Offload{})
	}
	st := gw.Stats()
	if port.sent != len(frags) || st.DropTooBig != 0 || st.ICMPSent != 0 {
		t.Fatalf("%d fragments of <= 1500 bytes with DF: %d sent, DropTooBig %d, ICMPSent %d; want them forwarded",
			len(frags), port.sent, st.DropTooBig, st.ICMPSent)
	}
}

// RFC 1812 4.3.2.7 / RFC 1122 3.2.2: no ICMP error about an ICMP error.
// Linux's __icmp_send reads the inner type of a first fragment too, and
// so do the builders.
func TestNoErrorAboutFirstFragmentOfError(t *testing.T) {
	gw := netip.MustParseAddr("172.17.0.1")
	quoted := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 600))
	icmpErr := ipPacket(router4, cont4, conntrack.ProtoICMP, icmpHeader(3, 3, 0, quoted))
	first := fragment4(t, icmpErr, 576)[0]
	if _, err := TimeExceeded(nil, first, gw); !errors.Is(err, ErrNoICMP) {
		t.Fatalf("time exceeded about the first fragment of an ICMP error: err %v, want ErrNoICMP", err)
	}
}

// RFC 1812 4.3.2.8: a router MUST be able to limit the rate of the ICMP
// errors it sends; Linux does by default (icmp_ratelimit 1 s per
// destination with a burst of 6, icmp_msgs_per_sec 1000 burst 50); 100 leaves room for refill.
func TestICMPErrorRateLimited(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	// A spoofed source outside: UDP to a closed port on the host address.
	pkt := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, 9, 10))
	for i := range 1000 {
		binary.BigEndian.PutUint16(pkt[20:], uint16(10000+i)) // a new flow each
		fillChecksums(pkt)
		gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, bytes.Clone(pkt)), false, bridge.Offload{})
	}
	if st := gw.Stats(); st.ICMPSent > 100 {
		t.Fatalf("%d port unreachables sent to one address at once (%d frames out); want a rate limit", st.ICMPSent, port.sent)
	}
}

// A ping to the gateway that arrived in fragments is answered in
// fragments within the link's MTU, as Linux's icmp_reply is (RFC 1122
// 3.3.3: a host fragments what exceeds the MTU).
func TestLocalReplyFragmented(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	req := ipPacket(clientIP, hostIP, conntrack.ProtoICMP, icmpHeader(8, 0, 77, bytes.Repeat([]byte{0xab}, 2500)))
	for _, f := range fragment4(t, req, 1500) {
		gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, f), false, bridge.Offload{})
	}
	if port.sent == 0 {
		t.Fatal("no reply")
	}
	if n := len(port.last) - Headroom; n > 1500 {
		t.Fatalf("echo reply of %d bytes sent on an uplink of MTU 1500 (%d frames)", n, port.sent)
	}
}

// RFC 1122 4.1.3.4 (UDP) and 4.2.2.7 (TCP): a datagram or segment with a
// wrong checksum MUST be silently discarded; Linux's udp_rcv and tcp_v4_rcv
// check it before answering port unreachable or RST, and so does the
// gateway.
func TestLocalBadChecksumUnanswered(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	udp := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, 9, 10))
	udp[20+6] ^= 0x55 // break the UDP checksum
	tcp := ipPacket(clientIP, hostIP, conntrack.ProtoTCP, tcpHeader(5001, 9, 0))
	tcp[20+13] = conntrack.TCPSyn
	fillChecksums(tcp)
	tcp[20+16] ^= 0x55 // break the TCP checksum
	for _, p := range [][]byte{udp, tcp} {
		gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, p), false, bridge.Offload{})
	}
	if port.sent != 0 {
		t.Fatalf("%d answers (ICMPSent %d) to a UDP datagram and a TCP SYN with bad checksums; want none", port.sent, gw.Stats().ICMPSent)
	}
}

// The wall clock stepping back an hour (NTP, a suspended VM's resync)
// must not silence the gateway's ICMP errors for that hour: Linux's
// limiter runs on jiffies, and so does the gateway's, on the clock's
// monotonic reading, ignoring steps back.
func TestICMPRateLimitClockStepBack(t *testing.T) {
	clk := newClock()
	port := &sink{done: make(chan struct{})}
	br, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	up, err := NewLinkUplink(LinkUplinkConfig{Port: port, Addr: netip.MustParsePrefix("192.168.2.116/24"), MTU: 1500, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	up.l.neigh.learn(clientIP, clientMAC, up.now(), true)
	gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix("172.17.0.1/16"), Uplink: up, Clock: clk,
		Conntrack: conntrack.Config{ExpireInterval: -1, Clock: clk}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	send := func(i int) {
		pkt := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(uint16(10000+i), 9, 10))
		fillChecksums(pkt)
		gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, bytes.Clone(pkt)), false, bridge.Offload{})
	}
	send(0)
	clk.Advance(-time.Hour) // the wall clock is stepped back
	clk.Advance(time.Second)
	before := gw.Stats().ICMPSent
	send(1)
	clk.Advance(time.Second)
	send(2)
	if n := gw.Stats().ICMPSent - before; n != 2 {
		t.Fatalf("%d port unreachables for 2 datagrams a second apart after the clock stepped back", n)
	}
}

// A SYN to the gateway with a bad TCP checksum is dropped unanswered; it
// must not leave an entry behind either (Linux's conntrack finds it
// INVALID in tcp_error and makes none), where a good one's RST ends its.
func TestBadChecksumSYNLeavesNoEntry(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	for i, bad := range []bool{false, true} {
		tcp := ipPacket(clientIP, hostIP, conntrack.ProtoTCP, tcpHeader(uint16(5001+i), 9, 0))
		tcp[20+13] = conntrack.TCPSyn
		fillChecksums(tcp)
		if bad {
			tcp[20+16] ^= 0x55
		}
		gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, tcp), false, bridge.Offload{})
		if n := gw.Table().Len(); n != 0 {
			t.Fatalf("bad checksum %v: %d entries after a SYN to a closed port of the gateway, want 0", bad, n)
		}
	}
}

// Linux forwards a reassembled datagram whose fragments had DF in
// fragments no larger than its sender's largest (frag_max_size), each
// with DF (IPSKB_FRAG_PMTU), whether or not it would fit whole: a router
// further on with a smaller MTU then answers "fragmentation needed" only
// when the sender's own fragments are too big, which it can act on.
func TestRefragmentKeepsDFAndSize(t *testing.T) {
	for _, c := range []struct {
		payload, frag int
		df            bool
	}{
		{2500, 1000, true}, // larger than the uplink's 1500 whole
		{1300, 700, true},  // fits whole
		{1300, 700, false}, // the same without DF: no DF added
		{3000, 1480, false},
	} {
		port := &offloadSink{sink: sink{done: make(chan struct{})}}
		gw := sinkGateway(t, port, 1500)
		pkt := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, c.payload))
		for _, f := range fragment4(t, pkt, c.frag) {
			if c.df {
				f[6] |= 0x40
				putIPv4Checksum(f)
			}
			gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, f), true, bridge.Offload{})
		}
		if len(port.frames) < 2 {
			t.Errorf("%d-byte fragments, DF %v: %d frames out, want fragments", c.frag, c.df, len(port.frames))
		}
		for i, f := range port.frames {
			ip := f[Headroom:]
			if n := int(binary.BigEndian.Uint16(ip[2:])); (ip[6]&0x40 != 0) != c.df || n > c.frag || Checksum(ip[:20]) != 0 {
				t.Errorf("%d-byte fragments in, DF %v: out %d is %d bytes, DF %v; want <= %d bytes, DF %v", c.frag, c.df, i, n, ip[6]&0x40 != 0, c.frag, c.df)
			}
		}
	}
}

// Each destination gets at most 6 ICMP errors at once, then one a second,
// as from Linux (icmp_ratelimit, inet_peer_xrlim_allow); another
// destination is not held back by it; fragmentation needed is not
// limited.
func TestICMPErrorRateLimitPerDestination(t *testing.T) {
	var l peerLimit
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	sec := int64(time.Second)
	count := func(dst netip.Addr, n int, now int64) int {
		k := 0
		for range n {
			if l.allow(dst, now) {
				k++
			}
		}
		return k
	}
	if k := count(a, 10, 0); k != 6 {
		t.Errorf("%d of 10 errors to one destination at once, want 6", k)
	}
	if k := count(b, 1, 0); k != 1 {
		t.Errorf("another destination: %d of 1, want it sent", k)
	}
	if k := count(a, 3, sec); k != 1 {
		t.Errorf("a second later: %d of 3, want 1", k)
	}
	if k := count(a, 10, 20*sec); k != 6 {
		t.Errorf("after a long quiet: %d of 10, want 6 again", k)
	}
	if k := count(a, 3, 10*sec); k != 0 {
		t.Errorf("the clock stepped back: %d sent, want none from a time that refills nothing", k)
	}

	// Through the gateway: 20 port unreachables to one client at once
	// are 6; frag-needed goes every time.
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	for i := range 20 {
		pkt := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(uint16(20000+i), 9, 10))
		fillChecksums(pkt)
		gw.forward(frame(gw.inside.mac, clientMAC, etherTypeIP4, pkt), false, bridge.Offload{})
	}
	if n := gw.Stats().ICMPSent; n != 6 {
		t.Errorf("%d port unreachables to one client at once, want 6", n)
	}
	for range 20 {
		big := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 2000))
		big[6] |= 0x40
		fillChecksums(big)
		gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, big), true, bridge.Offload{})
	}
	if n := gw.Stats().ICMPSent; n != 6+20 {
		t.Errorf("%d errors after 20 packets too big for the uplink, want 20 fragmentation needed more than the 6", n)
	}
}

// With every destination place taken, a new destination is limited by
// the overall bucket only, and the places are swept of destinations as
// good as new at most once a second, not on every error of a flood.
func TestICMPErrorRateLimitPeersFull(t *testing.T) {
	var l peerLimit
	sec := int64(time.Second)
	for i := range maxICMPPeers {
		l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 0)
	}
	other := netip.MustParseAddr("192.0.2.9")
	for i := range 10 {
		if !l.allow(other, 2*sec+int64(i)) {
			t.Fatal("a destination past the full map was limited")
		}
	}
	if len(l.peers) != maxICMPPeers || l.scanned != 2*sec {
		t.Errorf("%d places, swept at %d; want the map full, swept once (at %d)", len(l.peers), l.scanned, 2*sec)
	}
	// Once the others are as good as new, the sweep frees their places.
	l.allow(other, 10*sec)
	if _, ok := l.peers[other]; !ok || len(l.peers) != 1 {
		t.Errorf("after a quiet 10 s: %d places, the new destination placed %v; want it alone", len(l.peers), ok)
	}
}

// A datagram its sender cut into fragments smaller than the 68 bytes
// every link carries goes on, in fragments of 68, as Linux forwards it.
func TestRefragmentTinyFragments(t *testing.T) {
	port := &offloadSink{sink: sink{done: make(chan struct{})}}
	gw := sinkGateway(t, port, 1500)
	pkt := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 100))
	fillChecksums(pkt)
	data := pkt[20:]
	for off := 0; off < len(data); off += 24 { // 44-byte fragments, which Fragment would not cut
		end := min(off+24, len(data))
		f := append(bytes.Clone(pkt[:20]), data[off:end]...)
		binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
		fo := uint16(off / 8)
		if end < len(data) {
			fo |= 0x2000 // MF
		}
		binary.BigEndian.PutUint16(f[6:], fo)
		putIPv4Checksum(f)
		gw.forward(frame(gw.MAC(), ctrMAC, etherTypeIP4, f), true, bridge.Offload{})
	}
	if st := gw.Stats(); len(port.frames) < 2 || st.DropTooBig != 0 || st.Forwarded != 1 {
		t.Fatalf("%d frames out, DropTooBig %d, Forwarded %d; want the datagram forwarded in fragments", len(port.frames), st.DropTooBig, st.Forwarded)
	}
	for i, f := range port.frames {
		if n := int(binary.BigEndian.Uint16(f[Headroom+2:])); n > 68 {
			t.Errorf("fragment %d: %d bytes, want at most 68", i, n)
		}
	}
}

// The overall budget is looked at first and spent last: errors it
// refuses spend no destination's own tokens (Linux since 6.9).
func TestICMPLimitOrder(t *testing.T) {
	var l ICMPLimit
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 50 { // the overall burst, to as many destinations
		l.Allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 3, 3, 0)
	}
	for range 6 {
		if l.Allow(a, 3, 3, 0) {
			t.Fatal("an error past the overall burst went")
		}
	}
	if !l.Allow(a, 3, 4, 0) {
		t.Error("fragmentation needed was limited")
	}
	later := int64(100 * time.Millisecond) // 100 tokens back overall
	for i := range 6 {
		if !l.Allow(a, 11, 0, later) {
			t.Fatalf("error %d to a destination that had none refused: its tokens went on errors the overall limit refused", i)
		}
	}
	if l.Allow(a, 11, 0, later) || !l.Allow(b, 11, 0, later) {
		t.Error("a destination's seventh error went, or another destination's first did not")
	}
}

// Linux's get_unique_tuple (nf_nat_core.c) first looks for a current
// mapping of the same source (find_appropriate_src: same address, port
// and protocol, in the bysource hash) and reuses its address and port
// when the new reply tuple is free with it: a container's UDP socket
// keeps one public port for every destination (endpoint-independent
// mapping, what STUN and hole punching rely on), even when the socket's
// own port was taken and it got another.
func TestMasqueradeReusesSourceMapping(t *testing.T) {
	gw, up, _ := recGateway(t)
	other := netip.MustParseAddr("172.17.0.5")
	server2 := netip.MustParseAddr("192.168.2.1")
	srcPort := func() uint16 {
		t.Helper()
		pkt := lastIP(up)
		if pkt == nil || netip.AddrFrom4([4]byte(pkt[12:16])) != hostIP {
			t.Fatalf("not masqueraded: % x", pkt)
		}
		return binary.BigEndian.Uint16(pkt[20:])
	}
	// Another container holds host:5000 towards client:53.
	fromBridgeIP(gw, ipPacket(other, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 4)))
	if p := srcPort(); p != 5000 {
		t.Fatalf("first flow mapped to %d, want 5000 kept", p)
	}
	// So the container's socket 5000 gets another port towards client:53.
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 4)))
	mapped := srcPort()
	if mapped == 5000 {
		t.Fatal("clash not resolved")
	}
	// The same socket to another server: the same public port, as Linux.
	fromBridgeIP(gw, ipPacket(ctrIP, server2, conntrack.ProtoUDP, udpHeader(5000, 53, 4)))
	if p := srcPort(); p != mapped {
		t.Errorf("same socket to another server mapped to %d, want %d (its current mapping)", p, mapped)
	}
}

// A datagram from a container to the broadcast address of the uplink's
// subnet (192.168.2.255 for 192.168.2.116/24) is, for Linux's routing, a
// broadcast of the host (RTN_BROADCAST: delivered locally, never
// forwarded, bc_forwarding off): nothing leaves, and no ARP request asks
// who has 192.168.2.255.
func TestUplinkBroadcastNotForwarded(t *testing.T) {
	gw, up, _ := recGateway(t)
	bcast := netip.MustParseAddr("192.168.2.255")
	fromBridgeIP(gw, ipPacket(ctrIP, bcast, conntrack.ProtoUDP, udpHeader(5000, 137, 10)))
	if len(up.frames) != 0 {
		t.Errorf("%d frames out of the uplink for the uplink subnet's broadcast address (first % x); want none", len(up.frames), up.frames[0])
	}
	if n := gw.Table().Len(); n != 0 {
		t.Errorf("%d entries for a broadcast", n)
	}
}

// A packet that arrives with one of the gateway's own addresses as its
// source is a martian for Linux (fib_validate_source refuses a local
// source unless accept_local is set): dropped, never forwarded. A
// container could otherwise send, through the gateway, packets from the
// host's uplink address (untranslated: it is not in the masqueraded
// subnet), or from the gateway's bridge address.
func TestOwnSourceFromBridgeDropped(t *testing.T) {
	gw, up, _ := recGateway(t)
	for _, src := range []netip.Addr{hostIP, gwIP} {
		fromBridgeIP(gw, ipPacket(src, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 10)))
	}
	if len(up.frames) != 0 {
		t.Errorf("%d packets with the gateway's own source forwarded (last % x); want none", len(up.frames), lastIP(up))
	}
	if n := gw.Table().Len(); n != 0 {
		t.Errorf("%d entries for spoofed packets", n)
	}
}

// A gateway's rules take no publish rule that leads to an address the
// gateway forwards nothing to (the subnet's broadcast, loopback,
// multicast, 0.0.0.0/8, IPv6), as Linux routes no DNAT there: such a
// rule is refused when added or checked, with whichever uplink, so
// nothing is ever sent to every container (nor ARPed for). A client's
// packet to the port is the gateway's own, to a port it refuses. Rules
// of no gateway's take such a rule.
func TestPublishToUnroutedRefused(t *testing.T) {
	gw, _, br := recGateway(t)
	for _, spec := range []string{"8080:172.17.255.255:80/udp", "8080:127.0.0.1:80/udp", "8080:224.0.0.1:80/udp", "8080:0.1.2.3:80/udp", "[::1]:8080:[2001:db8::2]:80/udp"} {
		p, err := ParsePublish(spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gw.Rules().AddPublish(p); !errors.Is(err, ErrBadRule) {
			t.Errorf("adding %v: %v, want ErrBadRule", p, err)
		}
		if err := gw.Rules().CheckPublish(p); !errors.Is(err, ErrBadRule) {
			t.Errorf("checking %v: %v, want ErrBadRule", p, err)
		}
		var lone Rules
		if _, err := lone.AddPublish(p); err != nil {
			t.Errorf("adding %v to rules of no gateway's: %v", p, err)
		}
	}
	if len(gw.Rules().Publishes()) != 0 {
		t.Fatalf("rules %v, want none", gw.Rules().Publishes())
	}
	fromUplinkIP(gw, ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, 8080, 10)))
	if len(br.frames) != 0 || gw.Stats().Local != 1 || gw.Stats().ICMPSent != 1 {
		t.Errorf("%d frames to the bridge, stats %+v; want the packet the gateway's own, a port it refuses", len(br.frames), gw.Stats())
	}
	p, err := ParsePublish("8080:172.17.0.100:80/udp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Rules().AddPublish(p); err != nil {
		t.Errorf("adding %v: %v", p, err)
	}
}

// The gateway's MAC is a static FDB entry from the start, as a Linux
// bridge's own address is a permanent one: a frame to it reaches the
// gateway alone, even before the gateway has sent a frame the bridge
// could learn it from, or after a learnt entry would have aged out or
// been evicted. Flooded, the frame would reach the other ports too, and
// the gateway rewrites it where it lies while they read it.
func TestGatewayMACStatic(t *testing.T) {
	br, mine := newPipeBridge(t)
	otherEnd, other := bridge.NewPipe(bridge.PipeConfig{})
	if _, err := br.AddPort(other, bridge.PortConfig{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	lanGW, lanTest := bridge.NewPipe(bridge.PipeConfig{})
	up, err := NewLinkUplink(LinkUplinkConfig{Port: lanGW, Addr: netip.MustParsePrefix("192.168.2.116/24")})
	if err != nil {
		t.Fatal(err)
	}
	gwMAC := bridge.MustParseMAC("02:42:00:00:00:01")
	gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix("172.17.0.1/16"), Uplink: up, MAC: gwMAC,
		Conntrack: conntrack.Config{ExpireInterval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		gw.Close()
		mine.Close()
		otherEnd.Close()
		lanTest.Close()
		br.Close()
	}()
	static := false
	for _, e := range br.FDB() {
		static = static || e.MAC == gwMAC && e.Static && e.Port == "gateway"
	}
	if !static {
		t.Errorf("FDB %v: no static entry for the gateway's %v on its port", br.FDB(), gwMAC)
	}
	mine.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 12))))
	got := make(chan int, 1)
	go func() {
		n, _ := otherEnd.ReadFrame(make([]byte, 2048))
		got <- n
	}()
	select {
	case n := <-got:
		t.Errorf("a %d-byte frame to the gateway's MAC reached another port (flooded)", n)
	case <-time.After(200 * time.Millisecond):
	}
}

// An uplink whose writes wait (a Pipe whose reader is away) stalls the
// gateway, but not the bridge: a container's frames to another container
// still go through. The gateway takes the bridge's frames through its
// port's own transmit goroutine then, not in the forwarding goroutine of
// the container's port, which would wait with it.
func TestUplinkThatWaitsStallsOnlyTheGateway(t *testing.T) {
	pg := newPipeGateway(t)
	gwMAC := pg.resolveGateway()
	mineB, theirsB := bridge.NewPipe(bridge.PipeConfig{})
	t.Cleanup(func() { mineB.Close() })
	if _, err := pg.br.AddPort(theirsB, bridge.PortConfig{Name: "ctrB"}); err != nil {
		t.Fatal(err)
	}
	macB := bridge.MustParseMAC("02:42:ac:11:00:05")
	const etherTypeTest = 0x88b5 // local experimental
	mineB.WriteFrame(frame(ctrMAC, macB, etherTypeTest, []byte("from b")))
	if f := pg.read(pg.container); string(f[etherHeader:]) != "from b" {
		t.Fatalf("the container read % x, want B's frame", f)
	}

	pg.stallUplink(gwMAC)
	go pg.container.WriteFrame(frame(macB, ctrMAC, etherTypeTest, []byte("to b"))) // ends with the pipe's close
	if f := pg.read(mineB); string(f[etherHeader:]) != "to b" {
		t.Fatalf("B read % x, want the container's frame", f)
	}
}

// The bridge closed before the gateway, while the gateway's write to an
// uplink nobody reads waits: the gateway's port, closed by the bridge,
// closes the uplink, which ends the write, as a Port's Close must, and
// the bridge's Close returns. An embedder's deferred closes may come in
// either order.
func TestBridgeClosedFirstEndsAWaitingUplink(t *testing.T) {
	pg := newPipeGateway(t)
	pg.stallUplink(pg.resolveGateway())
	time.Sleep(100 * time.Millisecond) // the gateway's write reaches the uplink
	done := make(chan struct{})
	go func() {
		pg.br.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		pg.lan.Close() // let it end
		<-done
		t.Fatal("the bridge's Close waited for the gateway's write to its uplink")
	}
}
