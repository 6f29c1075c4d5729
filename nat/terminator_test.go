package nat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// fakeTerminator is a Terminator the test drives: it records what the
// gateway sends it and delivers what the test gives it.
type fakeTerminator struct {
	mu      sync.Mutex
	sent    [][]byte // packets from the bridge
	table   *conntrack.Table
	rules   *Rules
	deliver func([]byte, bridge.Offload)
	expect  map[conntrack.Tuple][2]conntrack.Tuple
	claim   netip.Addr
}

func (f *fakeTerminator) Addrs() []netip.Addr { return nil }
func (f *fakeTerminator) MTU() int            { return 1500 }
func (f *fakeTerminator) Offloading() bool    { return false }
func (f *fakeTerminator) Close() error        { return nil }
func (f *fakeTerminator) Start(d func([]byte, bridge.Offload)) error {
	f.deliver = d
	return nil
}
func (f *fakeTerminator) Send(frame []byte, _ netip.Addr, _ bridge.Offload) {
	f.mu.Lock()
	f.sent = append(f.sent, bytes.Clone(frame[Headroom:]))
	f.mu.Unlock()
}
func (f *fakeTerminator) Attach(t *conntrack.Table, r *Rules) error {
	f.table, f.rules = t, r
	return nil
}
func (f *fakeTerminator) Inbound(t conntrack.Tuple) (conntrack.Tuple, conntrack.Tuple, bool) {
	e, ok := f.expect[t]
	return e[0], e[1], ok
}
func (f *fakeTerminator) Claims(dst netip.Addr) bool { return dst == f.claim }

func (f *fakeTerminator) packets() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent
}

// track enters the flow of syn, from the container's port 40000 to
// remote:443, as the uplink does once its host socket is open (from the
// host's port 51000), and returns the entry's tuples and the SYN-ACK that
// answers syn.
func (f *fakeTerminator) track(t *testing.T, syn []byte, remote netip.Addr) (orig, reply conntrack.Tuple, synack []byte) {
	t.Helper()
	var p conntrack.Packet
	if err := p.Decode(syn); err != nil {
		t.Fatal(err)
	}
	reply = conntrack.Tuple{Src: remote, Dst: hostIP, SrcPort: 443, DstPort: 51000, Proto: conntrack.ProtoTCP}
	if _, err := f.table.Track(0, &p, conntrack.FixedReply{Reply: reply, Status: conntrack.DstNAT}); err != nil {
		t.Fatal(err)
	}
	return p.Tuple, reply, ipPacket(remote, ctrIP, conntrack.ProtoTCP, tcpSeg(443, 40000, conntrack.TCPSyn|conntrack.TCPAck, 9000, 101))
}

// fromUplink delivers pkt as the uplink would.
func (f *fakeTerminator) fromUplink(pkt []byte) {
	fr := make([]byte, Headroom+len(pkt))
	copy(fr[Headroom:], pkt)
	f.deliver(fr, bridge.Offload{})
}

func newTermGateway(t *testing.T, claim netip.Addr) (*pipeGateway, *fakeTerminator) {
	up := &fakeTerminator{expect: map[conntrack.Tuple][2]conntrack.Tuple{}, claim: claim}
	return termGateway(t, up, up), up
}

// termGateway is a gateway whose uplink is uplink, up or one made of it.
func termGateway(t *testing.T, up *fakeTerminator, uplink Terminator) *pipeGateway {
	br, mine := newPipeBridge(t)
	gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix("172.17.0.1/16"), Uplink: uplink,
		Conntrack: conntrack.Config{ExpireInterval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	pg := &pipeGateway{t: t, gw: gw, br: br, container: mine}
	t.Cleanup(func() {
		gw.Close()
		mine.Close()
		br.Close()
	})
	if up.table != gw.Table() || up.rules != gw.Rules() {
		t.Fatal("New did not attach the terminator to its table and rules")
	}
	return pg
}

// endingTerminator is a fakeTerminator told where batches end: it notes
// how many packets it had at each EndBatch.
type endingTerminator struct {
	*fakeTerminator
	ends []int
}

func (e *endingTerminator) EndBatch() {
	e.mu.Lock()
	e.ends = append(e.ends, len(e.sent))
	e.mu.Unlock()
}

// An uplink that is a bridge.BatchEnder is told where the batches of
// frames the bridge hands the gateway end: after the packets of a read
// from the container's port all went to Send.
func TestGatewayUplinkBatchEnd(t *testing.T) {
	up := &endingTerminator{fakeTerminator: &fakeTerminator{expect: map[conntrack.Tuple][2]conntrack.Tuple{}}}
	pg := termGateway(t, up.fakeTerminator, up)
	gwMAC := pg.resolveGateway()
	remote := netip.MustParseAddr("198.51.100.2")
	var burst [][]byte
	for i := range 3 {
		syn := ipPacket(ctrIP, remote, conntrack.ProtoTCP, tcpSeg(40000+uint16(i), 443, conntrack.TCPSyn, 100, 0))
		burst = append(burst, frame(gwMAC, ctrMAC, etherTypeIP4, syn))
	}
	if _, err := pg.container.WriteFrames(burst); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a batch end after the three packets", func() bool {
		up.mu.Lock()
		defer up.mu.Unlock()
		return len(up.ends) > 0 && up.ends[len(up.ends)-1] == 3
	})
}

// answeringTerminator sends its answer to the gateway from its EndBatch,
// at once, as nat/hostnet does (the acknowledgement of a FIN it held for
// the batch's end), when packets came since the last batch end.
type answeringTerminator struct {
	*fakeTerminator
	answer []byte
	seen   int
}

func (a *answeringTerminator) EndBatch() {
	a.mu.Lock()
	n := len(a.sent)
	send := n > a.seen && a.answer != nil
	a.seen = n
	a.mu.Unlock()
	if send {
		a.fromUplink(a.answer)
	}
}

// An uplink may send to the gateway from its EndBatch even when the batch
// ends inside the gateway's own answer to a frame of the same read (an
// ARP request after a packet for the uplink): the gateway's injection of
// its answer does not end its own port's batch, which would run EndBatch
// there, with the gateway's lock held, and the uplink's answer would wait
// for that lock forever. Both answers reach the container.
func TestGatewayUplinkBatchEndSends(t *testing.T) {
	up := &answeringTerminator{fakeTerminator: &fakeTerminator{expect: map[conntrack.Tuple][2]conntrack.Tuple{}}}
	pg := termGateway(t, up.fakeTerminator, up)
	gwMAC := pg.resolveGateway()
	remote := netip.MustParseAddr("198.51.100.2")
	syn := ipPacket(ctrIP, remote, conntrack.ProtoTCP, tcpSeg(40000, 443, conntrack.TCPSyn, 100, 0))
	_, _, synack := up.track(t, syn, remote)
	up.mu.Lock()
	up.answer = synack
	up.mu.Unlock()

	// The SYN again (its SYN-ACK lost), for the uplink, and the request.
	burst := [][]byte{
		frame(gwMAC, ctrMAC, etherTypeIP4, syn),
		arpFrame(gwMAC, arpPacket{op: arpRequest, senderMAC: ctrMAC, senderIP: ctrIP, targetIP: gwIP}),
	}
	if _, err := pg.container.WriteFrames(burst); err != nil {
		t.Fatal(err)
	}
	var gotARP, gotSynAck bool
	for range 2 {
		f := pg.read(pg.container)
		if a, ok := parseARP(f[etherHeader:]); ok && a.op == arpReply {
			gotARP = true
		} else if bytes.Equal(f[etherHeader:], synack) {
			gotSynAck = true
		}
	}
	if !gotARP || !gotSynAck {
		t.Fatalf("the container got the ARP reply %v, the uplink's answer %v; want both", gotARP, gotSynAck)
	}
}

// With a Terminator uplink the gateway translates nothing: a container's
// new flow goes to the uplink unchanged and untracked (the uplink enters
// it), its packets are tracked with TrackTerminated once the entry
// exists, the uplink's answers reach the container unchanged, and a flow
// the uplink opens into the container gets its entry from Inbound.
func TestGatewayTerminator(t *testing.T) {
	pg, up := newTermGateway(t, netip.Addr{})
	gwMAC := pg.resolveGateway()
	remote := netip.MustParseAddr("198.51.100.2")
	syn := ipPacket(ctrIP, remote, conntrack.ProtoTCP, tcpSeg(40000, 443, conntrack.TCPSyn, 100, 0))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, syn))
	waitFor(t, "the SYN at the uplink", func() bool { return len(up.packets()) == 1 })
	if got := up.packets()[0]; !bytes.Equal(got, syn) {
		t.Fatalf("the uplink got\n% x\nwant the SYN unchanged\n% x", got, syn)
	}
	if n := pg.gw.Table().Len(); n != 0 {
		t.Fatalf("the gateway made %d entries for the uplink's flow", n)
	}
	// The uplink opened its host socket and entered the flow.
	flow, reply, synack := up.track(t, syn, remote)
	// Its answer reaches the container as it was.
	pg.gw.inside.neigh.learn(ctrIP, ctrMAC, pg.gw.now(), true)
	up.fromUplink(synack)
	if got := pg.read(pg.container)[etherHeader:]; !bytes.Equal(got, synack) {
		t.Fatalf("the container got\n% x\nwant\n% x", got, synack)
	}
	ack := ipPacket(ctrIP, remote, conntrack.ProtoTCP, tcpSeg(40000, 443, conntrack.TCPAck, 101, 9001))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, ack))
	waitFor(t, "the ACK at the uplink", func() bool { return len(up.packets()) == 2 })
	e, _, _ := pg.gw.Table().Get(0, flow)
	if e.TCPState != conntrack.TCPEstablished || e.Packets != [2]uint64{2, 1} || e.Reply != reply {
		t.Fatalf("entry %v", e)
	}

	// A packet from the uplink for no flow is dropped, unless it is a
	// reset (a refused connection) ...
	stray := ipPacket(remote, ctrIP, conntrack.ProtoTCP, tcpSeg(443, 40001, conntrack.TCPAck, 1, 1))
	up.fromUplink(stray)
	if pg.gw.Stats().DropNoRule != 1 {
		t.Errorf("a stray packet from the uplink was not dropped: %+v", pg.gw.Stats())
	}
	rst := ipPacket(remote, ctrIP, conntrack.ProtoTCP, tcpSeg(443, 40002, conntrack.TCPRst|conntrack.TCPAck, 0, 1))
	up.fromUplink(rst)
	if got := pg.read(pg.container)[etherHeader:]; !bytes.Equal(got, rst) {
		t.Fatalf("the reset did not reach the container: % x", got)
	}

	// ... or a flow the uplink opens into the container.
	client := netip.MustParseAddr("192.168.2.104")
	in := conntrack.Tuple{Src: client, Dst: ctrIP, SrcPort: 52140, DstPort: 80, Proto: conntrack.ProtoTCP}
	orig := conntrack.Tuple{Src: client, Dst: hostIP, SrcPort: 52140, DstPort: 8080, Proto: conntrack.ProtoTCP}
	back, _ := in.Reverse()
	up.expect[in] = [2]conntrack.Tuple{orig, back}
	isyn := ipPacket(client, ctrIP, conntrack.ProtoTCP, tcpSeg(52140, 80, conntrack.TCPSyn, 5, 0))
	up.fromUplink(isyn)
	if got := pg.read(pg.container)[etherHeader:]; !bytes.Equal(got, isyn) {
		t.Fatalf("the inbound SYN: % x", got)
	}
	if e, dir, ok := pg.gw.Table().Get(0, orig); !ok || dir != conntrack.Original || e.Reply != back || e.Packets[0] != 1 {
		t.Fatalf("inbound entry %v (%v, %v)", e, dir, ok)
	}

	// A container speaking from outside the subnet gets nowhere, and
	// the uplink's packets only go to the subnet.
	spoofed := ipPacket(netip.MustParseAddr("10.9.9.9"), remote, conntrack.ProtoTCP, tcpSeg(40003, 443, conntrack.TCPSyn, 1, 0))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, spoofed))
	up.fromUplink(ipPacket(remote, netip.MustParseAddr("10.9.9.9"), conntrack.ProtoTCP, tcpSeg(443, 40003, conntrack.TCPRst, 0, 1)))
	waitFor(t, "the spoofed packets dropped", func() bool { return pg.gw.Stats().DropInvalid >= 2 })

	// The gateway still answers for itself.
	req := ipPacket(ctrIP, gwIP, conntrack.ProtoICMP, icmpHeader(8, 0, 7, []byte("hi")))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, req))
	if rep := pg.read(pg.container)[etherHeader:]; rep[20] != 0 {
		t.Fatalf("no echo reply from the gateway: % x", rep)
	}
	if len(up.packets()) != 2 {
		t.Fatalf("the uplink got %d packets, want 2", len(up.packets()))
	}
}

// A flow to the gateway's own address goes to the uplink only when it
// claims the address (the host's loopback).
func TestGatewayTerminatorClaims(t *testing.T) {
	pg, up := newTermGateway(t, gwIP)
	gwMAC := pg.resolveGateway()
	syn := ipPacket(ctrIP, gwIP, conntrack.ProtoTCP, tcpSeg(40000, 9000, conntrack.TCPSyn, 1, 0))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, syn))
	waitFor(t, "the claimed SYN at the uplink", func() bool { return len(up.packets()) == 1 })

	pg2, up2 := newTermGateway(t, netip.Addr{})
	gwMAC2 := pg2.resolveGateway()
	pg2.container.WriteFrame(frame(gwMAC2, ctrMAC, etherTypeIP4, syn))
	rst := pg2.read(pg2.container)[etherHeader:]
	if rst[33]&conntrack.TCPRst == 0 || len(up2.packets()) != 0 {
		t.Fatalf("unclaimed: the gateway answered % x, the uplink got %d", rst, len(up2.packets()))
	}
}

// tcpSeg is a TCP header with the given flags, sequence and
// acknowledgment numbers, and no payload.
func tcpSeg(sport, dport uint16, flags uint8, seq, ack uint32) []byte {
	b := tcpHeader(sport, dport, 0)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[13] = flags
	return b
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no %s within 5 s", what)
		}
	}
}

// With a Terminator uplink, a container reaching a published port through
// the gateway's bridge address is a hairpin the gateway translates itself,
// both ways: the answer goes back to the first container, not to the
// uplink untranslated (the gateway took the hairpin entry, translated as
// the uplink's are, for the uplink's own).
func TestGatewayTerminatorHairpin(t *testing.T) {
	pg, up := newTermGateway(t, netip.Addr{})
	gwMAC := pg.resolveGateway()
	if _, err := pg.gw.Rules().AddPublish(Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8080}, ContainerAddr: ctrIP, ContainerPorts: PortRange{80, 80}}); err != nil {
		t.Fatal(err)
	}
	other, otherMAC := netip.MustParseAddr("172.17.0.5"), bridge.MustParseMAC("02:42:ac:11:00:05")
	now := pg.gw.now()
	pg.gw.inside.neigh.learn(ctrIP, ctrMAC, now, true)
	pg.gw.inside.neigh.learn(other, otherMAC, now, true)
	syn := ipPacket(other, gwIP, conntrack.ProtoTCP, tcpSeg(40000, 8080, conntrack.TCPSyn, 1, 0))
	pg.container.WriteFrame(frame(gwMAC, otherMAC, etherTypeIP4, syn))
	in := pg.read(pg.container)[etherHeader:]
	if src, dst := netip.AddrFrom4([4]byte(in[12:16])), netip.AddrFrom4([4]byte(in[16:20])); src != gwIP || dst != ctrIP || binary.BigEndian.Uint16(in[22:]) != 80 {
		t.Fatalf("the SYN reached the bridge as %v > %v port %d, want the gateway to 172.17.0.4:80", src, dst, binary.BigEndian.Uint16(in[22:]))
	}
	sport := binary.BigEndian.Uint16(in[20:])
	synack := ipPacket(ctrIP, gwIP, conntrack.ProtoTCP, tcpSeg(80, sport, conntrack.TCPSyn|conntrack.TCPAck, 9000, 2))
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, synack))
	back := pg.read(pg.container)[etherHeader:]
	if src, dst := netip.AddrFrom4([4]byte(back[12:16])), netip.AddrFrom4([4]byte(back[16:20])); src != gwIP || dst != other ||
		binary.BigEndian.Uint16(back[20:]) != 8080 || binary.BigEndian.Uint16(back[22:]) != 40000 {
		t.Fatalf("the answer reached the bridge as %v:%d > %v:%d, want 172.17.0.1:8080 > 172.17.0.5:40000",
			src, binary.BigEndian.Uint16(back[20:]), dst, binary.BigEndian.Uint16(back[22:]))
	}
	if n := len(up.packets()); n != 0 {
		t.Errorf("the uplink got %d of the hairpin's packets", n)
	}
}

// A container's packet whose TTL runs out at the gateway dies there,
// with time exceeded from the gateway, as through the kernel's NAT (the
// first hop of a traceroute), and the uplink never sees it; one with a
// hop to spare reaches the uplink with its TTL as it was (the uplink
// sends it on with one less). A packet to the gateway's own address
// claimed by the uplink (the host's loopback) is delivered, not routed.
func TestGatewayTerminatorTTL(t *testing.T) {
	pg, up := newTermGateway(t, gwIP)
	gwMAC := pg.resolveGateway()
	remote := netip.MustParseAddr("198.51.100.2")
	probe := ipPacket(ctrIP, remote, conntrack.ProtoUDP, udpHeader(40000, 33434, 4))
	probe[8] = 1
	fillChecksums(probe)
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, probe))
	got := pg.read(pg.container)[etherHeader:]
	if got[9] != byte(conntrack.ProtoICMP) || got[20] != 11 || netip.AddrFrom4([4]byte(got[12:16])) != gwIP {
		t.Fatalf("the container got % x; want time exceeded from the gateway", got)
	}
	if len(up.packets()) != 0 || pg.gw.Table().Len() != 0 {
		t.Fatalf("the uplink got %d packets, the table has %d entries; want none", len(up.packets()), pg.gw.Table().Len())
	}
	probe[8] = 2
	fillChecksums(probe)
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, probe))
	waitFor(t, "the TTL 2 probe at the uplink", func() bool { return len(up.packets()) == 1 })
	if got := up.packets()[0]; !bytes.Equal(got, probe) {
		t.Fatalf("the uplink got\n% x\nwant the probe unchanged\n% x", got, probe)
	}
	own := ipPacket(ctrIP, gwIP, conntrack.ProtoUDP, udpHeader(40000, 53, 4))
	own[8] = 1
	fillChecksums(own)
	pg.container.WriteFrame(frame(gwMAC, ctrMAC, etherTypeIP4, own))
	waitFor(t, "the claimed datagram at the uplink", func() bool { return len(up.packets()) == 2 })
}

// An address on the bridge subnet that the uplink claims (a DNS
// forwarder's, as slirp4netns's 10.0.2.3) is the gateway's to answer
// ARP for, and TCP and UDP to it go to the uplink, as they are, and its
// answers back; an address nobody claims stays the bridge's.
func TestGatewayTerminatorClaimsSubnetAddr(t *testing.T) {
	dns := netip.MustParseAddr("172.17.0.3")
	pg, up := newTermGateway(t, dns)
	pg.container.WriteFrame(arpFrame(bridge.Broadcast, arpPacket{op: arpRequest, senderMAC: ctrMAC, senderIP: ctrIP, targetIP: dns}))
	reply, ok := parseARP(pg.read(pg.container)[etherHeader:])
	if !ok || reply.op != arpReply || reply.senderIP != dns || reply.senderMAC != pg.gw.MAC() || reply.targetMAC != ctrMAC {
		t.Fatalf("ARP reply for the claimed address %+v; want the gateway's MAC for %v", reply, dns)
	}
	q := ipPacket(ctrIP, dns, conntrack.ProtoUDP, udpHeader(40000, 53, 4))
	fillChecksums(q)
	pg.container.WriteFrame(frame(pg.gw.MAC(), ctrMAC, etherTypeIP4, q))
	waitFor(t, "the query at the uplink", func() bool { return len(up.packets()) == 1 })
	if got := up.packets()[0]; !bytes.Equal(got, q) {
		t.Fatalf("the uplink got\n% x\nwant the query unchanged\n% x", got, q)
	}
	var p conntrack.Packet
	p.Decode(q)
	resolver := conntrack.Tuple{Src: netip.MustParseAddr("198.51.100.53"), Dst: hostIP, SrcPort: 53, DstPort: 51000, Proto: conntrack.ProtoUDP}
	if _, err := up.table.Track(0, &p, conntrack.FixedReply{Reply: resolver, Status: conntrack.DstNAT}); err != nil {
		t.Fatal(err)
	}
	answer := ipPacket(dns, ctrIP, conntrack.ProtoUDP, udpHeader(53, 40000, 4))
	fillChecksums(answer)
	up.fromUplink(answer)
	if got := pg.read(pg.container)[etherHeader:]; !bytes.Equal(got, answer) {
		t.Fatalf("the container got\n% x\nwant the answer\n% x", got, answer)
	}

	// Another address: no ARP answer from the gateway.
	pg.container.WriteFrame(arpFrame(bridge.Broadcast, arpPacket{op: arpRequest, senderMAC: ctrMAC, senderIP: ctrIP, targetIP: netip.MustParseAddr("172.17.0.9")}))
	pg.container.WriteFrame(arpFrame(bridge.Broadcast, arpPacket{op: arpRequest, senderMAC: ctrMAC, senderIP: ctrIP, targetIP: gwIP}))
	if reply, _ := parseARP(pg.read(pg.container)[etherHeader:]); reply.senderIP != gwIP {
		t.Fatalf("ARP reply for %v, an address nobody claims", reply.senderIP)
	}
}

// The gateway answers pings to an address the uplink claims on the
// bridge (a DNS forwarder's), as libslirp answers them for 10.0.2.3,
// rather than routing them back onto the bridge.
func TestGatewayTerminatorPingClaimed(t *testing.T) {
	dns := netip.MustParseAddr("172.17.0.3")
	pg, up := newTermGateway(t, dns)
	req := ipPacket(ctrIP, dns, conntrack.ProtoICMP, icmpHeader(8, 0, 77, []byte("ping")))
	pg.gw.inside.neigh.learn(ctrIP, ctrMAC, pg.gw.now(), true)
	pg.container.WriteFrame(frame(pg.gw.MAC(), ctrMAC, etherTypeIP4, req))
	got := pg.read(pg.container)
	rep := got[etherHeader:]
	if got[12] != 0x08 || got[13] != 0 || rep[20] != 0 || netip.AddrFrom4([4]byte(rep[12:16])) != dns || len(up.packets()) != 0 {
		t.Fatalf("echo to %v: the container got % x; the uplink %d packets; want an echo reply from %v", dns, got[:min(len(got), 48)], len(up.packets()), dns)
	}
}

// A terminating uplink dials a published port's clients into the
// container on the bridge, and the gateway drops a dial to anywhere
// else: the gateway's rules refuse a port published to an address off
// the bridge subnet, rather than take it and leave each client waiting
// for a container that is never reached. A link uplink's gateway DNATs
// anywhere it routes, as Linux's does.
func TestTerminatorPublishOffBridgeRefused(t *testing.T) {
	pg, _ := newTermGateway(t, netip.Addr{})
	link, _, _ := recGateway(t)
	for _, tc := range []struct {
		spec       string
		term, link bool // accepted by each gateway's rules
	}{
		{"8080:172.17.0.4:80/tcp", true, true},
		{"8081:172.17.200.9:80/udp", true, true},
		{"8082:192.168.2.104:80/tcp", false, true},
		{"8083:198.51.100.7:53/udp", false, true},
	} {
		p, err := ParsePublish(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range []struct {
			name string
			gw   *Gateway
			want bool
		}{{"terminating", pg.gw, tc.term}, {"link", link, tc.link}} {
			if err := g.gw.Rules().CheckPublish(p); (err == nil) != g.want || err != nil && !errors.Is(err, ErrBadRule) {
				t.Errorf("%s gateway, checking %v: %v, want accepted %v (else ErrBadRule)", g.name, p, err, g.want)
			}
			if _, err := g.gw.Rules().AddPublish(p); (err == nil) != g.want {
				t.Errorf("%s gateway, adding %v: %v, want accepted %v", g.name, p, err, g.want)
			}
		}
	}
}
