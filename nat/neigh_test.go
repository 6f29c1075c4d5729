package nat

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

func TestNeighbourTable(t *testing.T) {
	nt := newNeighTable()
	a := netip.MustParseAddr("192.168.2.104")
	mac := bridge.MustParseMAC("0a:1b:2c:3d:4e:5f")
	var now int64
	if _, ok, _ := nt.lookup(a, now); ok {
		t.Fatal("found an address never learnt")
	}
	// A miss holds the packet and asks once per second at most.
	ask, dropped := nt.hold(a, []byte{1}, now)
	if !ask || dropped {
		t.Fatalf("first miss: ask %v dropped %v", ask, dropped)
	}
	if ask, _ := nt.hold(a, []byte{2}, now+int64(time.Millisecond)); ask {
		t.Fatal("asked again within a second")
	}
	for i := 0; i < neighQueueLen; i++ {
		nt.hold(a, []byte{3}, now)
	}
	if _, dropped := nt.hold(a, []byte{4}, now); !dropped {
		t.Fatal("the hold queue has no bound")
	}
	// The answer releases what waited, in order.
	q := nt.learn(a, mac, now, false)
	if len(q) != neighQueueLen || q[0][0] != 1 || q[1][0] != 2 {
		t.Fatalf("released %d packets", len(q))
	}
	if m, ok, _ := nt.lookup(a, now); !ok || m != mac {
		t.Fatal("learnt address not found")
	}
	// A resolved entry unconfirmed for neighReachable is stale: still
	// used, and probed once a second; answered, fresh again.
	stale := now + int64(neighReachable) + 1
	if m, ok, probe := nt.lookup(a, stale); !ok || m != mac || !probe {
		t.Fatalf("stale entry: %v %v, probe %v; want used and probed", m, ok, probe)
	}
	if _, ok, probe := nt.lookup(a, stale+int64(time.Millisecond)); !ok || probe {
		t.Fatalf("stale entry: used %v, probed again %v within a second", ok, probe)
	}
	if _, _, probe := nt.lookup(a, stale+int64(neighRetry)); !probe {
		t.Fatal("stale entry not probed again after a second")
	}
	nt.learn(a, mac, stale+int64(neighRetry), false)
	if _, ok, probe := nt.lookup(a, stale+2*int64(neighRetry)); !ok || probe {
		t.Fatalf("confirmed entry: used %v, probed %v", ok, probe)
	}
	// However long it lay unused, its first use stale starts its probes;
	// unanswered neighGiveUp longer, it is not used: the caller holds the
	// packet and asks the whole link again, at once.
	idle := stale + int64(neighRetry) + 10*int64(neighReachable)
	if _, ok, probe := nt.lookup(a, idle); !ok || !probe {
		t.Fatalf("entry stale long unused: used %v, probed %v; want both", ok, probe)
	}
	gone := idle + int64(neighGiveUp) + 1
	if _, ok, _ := nt.lookup(a, gone); ok {
		t.Fatal("entry unanswered past its probes still used")
	}
	if ask, _ := nt.hold(a, []byte{5}, gone); !ask {
		t.Fatal("a neighbour that stopped answering is not asked again at once")
	}
	nt.learn(a, mac, gone, false)
	nt.expire(gone + 4*int64(neighReachable) + 1)
	if len(nt.list()) != 0 {
		t.Fatal("stale entry not expired")
	}
	// An address that never answers is given up with its queue.
	b := netip.MustParseAddr("192.168.2.105")
	nt.hold(b, []byte{1}, now)
	if n := len(nt.expire(now + int64(neighGiveUp) + 1)); n != 1 || len(nt.list()) != 0 {
		t.Fatalf("expire dropped %d packets, %d entries left", n, len(nt.list()))
	}
	// Unsolicited answers create nothing; requests for us do.
	if nt.learn(b, mac, now, false); len(nt.list()) != 0 {
		t.Fatal("an unsolicited reply created an entry")
	}
	if nt.learn(b, mac, now, true); len(nt.list()) != 1 {
		t.Fatal("a request for us did not create an entry")
	}
	// The table has a cap.
	for i := 0; i < neighMax+10; i++ {
		nt.hold(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), []byte{1}, now)
	}
	if len(nt.list()) > neighMax {
		t.Fatalf("%d entries, cap %d", len(nt.list()), neighMax)
	}
}

// A full table makes room for a new neighbour by dropping the entry no
// packet went to for the longest time, never first: a container that
// fills the table by spoofing senders in ARP requests (entries nothing is
// ever sent to) pushes out no neighbour in use, and keeps none from being
// resolved (before, a new one waited for the entries to expire, 4
// minutes). A table whose every entry is in use refuses, and says no again
// without a scan for neighRefuse.
func TestNeighFullEvictsUnused(t *testing.T) {
	nt := newNeighTable()
	sec := int64(time.Second)
	inUse, inUseMAC := netip.MustParseAddr("172.17.0.4"), bridge.MustParseMAC("02:42:ac:11:00:04")
	nt.learn(inUse, inUseMAC, 0, true)
	attacker := bridge.MustParseMAC("02:42:ac:11:66:66")
	spoofed := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{172, 17, byte(100 + i/250), byte(1 + i%250)}) }
	for i := range neighMax - 1 {
		nt.learn(spoofed(i), attacker, sec+int64(i), true)
	}
	newIP, newMAC := netip.MustParseAddr("172.17.0.9"), bridge.MustParseMAC("02:42:ac:11:00:09")
	for now := 2 * sec; now < 10*sec; now += sec {
		nt.lookup(inUse, now) // packets go to it
		for i := range neighMax - 1 {
			nt.learn(spoofed(i), attacker, now, false) // the flood refreshes its senders
		}
	}
	nt.learn(newIP, newMAC, 10*sec, true)
	if mac, ok, _ := nt.lookup(newIP, 10*sec); !ok || mac != newMAC {
		t.Errorf("a new neighbour in a table full of spoofed senders: %v %v, want resolved", mac, ok)
	}
	if _, ok, _ := nt.lookup(inUse, 10*sec); !ok {
		t.Error("the neighbour in use was pushed out")
	}
	if n := len(nt.list()); n != neighMax {
		t.Errorf("%d entries, want the cap, %d", n, neighMax)
	}

	// Every entry in use: refused, then refused without a scan.
	full := newNeighTable()
	for i := range neighMax {
		full.learn(spoofed(i), attacker, 0, true)
		full.lookup(spoofed(i), sec)
	}
	full.learn(newIP, newMAC, 2*sec, true)
	if _, ok := full.m[newIP]; ok || !full.refusing || full.refused != 2*sec {
		t.Errorf("a table whose every entry is in use took a new one (refusing %v at %d)", full.refusing, full.refused)
	}
	full.learn(newIP, newMAC, 2*sec+int64(neighRefuse)/2, true)
	if full.refused != 2*sec {
		t.Error("a second refusal within neighRefuse scanned again")
	}

	// A pending entry dropped for room takes its queue with it.
	pend := newNeighTable()
	for i := range neighMax {
		pend.hold(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), []byte{1, 2}, int64(i))
	}
	pend.hold(newIP, []byte{1, 2}, int64(neighMax)) // none expired yet
	if _, ok := pend.m[netip.AddrFrom4([4]byte{10, 0, 0, 0})]; ok || pend.m[newIP] == nil {
		t.Error("the new pending entry did not take the oldest's place")
	}
	if pend.queued != 2*neighMax {
		t.Errorf("%d bytes queued, want %d: a dropped entry's queue counted still", pend.queued, 2*neighMax)
	}
}

// An ARP probe (RFC 5227: sender address 0.0.0.0) for the gateway's
// address is answered by Linux (arp_process: "sip == 0" and the target is
// local: a reply to the prober's MAC), so a container about to take the
// gateway's address by mistake detects the conflict.
func TestARPProbeAnswered(t *testing.T) {
	gw, _, br := recGateway(t)
	probe := arpFrame(bridge.Broadcast, arpPacket{op: arpRequest, senderMAC: ctrMAC, senderIP: netip.IPv4Unspecified(), targetIP: gwIP})
	gw.inside.input(probe, bridge.Offload{}, func([]byte, bridge.Offload) {})
	if len(br.frames) != 1 {
		t.Fatalf("%d frames in answer to an ARP probe for the gateway's address, want a reply", len(br.frames))
	}
	a, ok := parseARP(br.frames[0][etherHeader:])
	if !ok || a.op != arpReply || a.senderIP != gwIP || a.senderMAC != gw.MAC() || a.targetMAC != ctrMAC || bridge.MAC(br.frames[0][0:6]) != ctrMAC {
		t.Errorf("answer %+v, want a reply from %v at %v to %v", a, gwIP, gw.MAC(), ctrMAC)
	}
	if _, ok, _ := gw.inside.neigh.lookup(netip.IPv4Unspecified(), gw.now()); ok {
		t.Error("learnt 0.0.0.0 from a probe")
	}
}

// A packet to a stale neighbour (unconfirmed for neighReachable) goes to
// it at once, and an ARP request to its own MAC asks it to confirm, as
// Linux probes a stale entry while it uses it: a busy flow neither waits
// nor loses packets for a neighbour that is there.
func TestStaleNeighbourUsedAndProbed(t *testing.T) {
	gw, up, _ := recGateway(t)
	ul := gw.uplink.(*LinkUplink)
	ul.l.neigh.learn(clientIP, clientMAC, ul.now()-int64(neighReachable)-1, false)
	fromBridgeIP(gw, ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 10)))
	var probes, sent int
	for _, f := range up.frames {
		if bridge.MAC(f[0:6]) != clientMAC {
			t.Errorf("frame to %v, want all to the neighbour's MAC %v", bridge.MAC(f[0:6]), clientMAC)
			continue
		}
		switch binary.BigEndian.Uint16(f[12:14]) {
		case etherTypeARP:
			if a, ok := parseARP(f[etherHeader:]); ok && a.op == arpRequest && a.targetIP == clientIP {
				probes++
			}
		case etherTypeIP4:
			sent++
		}
	}
	if probes != 1 || sent != 1 {
		t.Errorf("%d probes and %d packets to the stale neighbour, want 1 and 1", probes, sent)
	}
}

// A packet held for a neighbour that never answers ARP draws host
// unreachable, as in Linux (arp_error_report): a container's flow to a
// dead address on the uplink's link hears it from the host address its
// masqueraded packet left with, as through Linux's NAT (`ping` prints
// "From 192.168.2.116"), about its own packet as it sent it (the
// masquerade undone), and fails in seconds; the error goes nowhere when
// it is about the gateway's own.
func TestUnansweredNeighbourUnreachable(t *testing.T) {
	gw, up, br := recGateway(t)
	dead := netip.MustParseAddr("192.168.2.200")
	orig := ipPacket(ctrIP, dead, conntrack.ProtoUDP, udpHeader(5000, 53, 10))
	fromBridgeIP(gw, append([]byte(nil), orig...))
	if len(up.frames) != 1 || binary.BigEndian.Uint16(up.frames[0][12:14]) != etherTypeARP {
		t.Fatalf("%d frames on the uplink, want the ARP request alone", len(up.frames))
	}
	ul := gw.uplink.(*LinkUplink)
	gw.unreachable(ul.expire()) // not yet: still asking
	if len(br.frames) != 0 {
		t.Fatalf("%d frames to the bridge while the neighbour may still answer", len(br.frames))
	}
	gw.unreachable(ul.l.neigh.expire(ul.now() + int64(neighGiveUp) + 1))
	if len(br.frames) != 1 {
		t.Fatalf("%d frames to the bridge, want the host unreachable", len(br.frames))
	}
	msg := lastIP(br)
	if err := verify(msg); err != nil {
		t.Fatal(err)
	}
	src, dst := netip.AddrFrom4([4]byte(msg[12:16])), netip.AddrFrom4([4]byte(msg[16:20]))
	inner := msg[28:]
	if src != hostIP || dst != ctrIP || msg[20] != 3 || msg[21] != 1 ||
		netip.AddrFrom4([4]byte(inner[12:16])) != ctrIP || netip.AddrFrom4([4]byte(inner[16:20])) != dead ||
		binary.BigEndian.Uint16(inner[20:]) != 5000 {
		t.Errorf("error %v -> %v type %d code %d about %v:%d -> %v; want host unreachable from %v to %v about %v:5000 -> %v",
			src, dst, msg[20], msg[21], netip.AddrFrom4([4]byte(inner[12:16])), binary.BigEndian.Uint16(inner[20:]),
			netip.AddrFrom4([4]byte(inner[16:20])), hostIP, ctrIP, ctrIP, dead)
	}
}

// The host unreachable about a translated flow comes from where Linux's
// NAT shows it from: the published address the sender sent to, for a
// container reaching a dead container's published port through the host
// address (hairpin), and the host address, for a container whose reply
// to a published port's client finds the client gone. Both came from the
// gateway's bridge address, which the container never sent to.
func TestUnreachableTranslatedFrom(t *testing.T) {
	dead := netip.MustParseAddr("172.17.0.9")
	gone := netip.MustParseAddr("192.168.2.150")
	for _, tc := range []struct {
		name string
		send func(gw *Gateway)
		// the error's addresses, and those of the packet it quotes
		from, to, qsrc, qdst netip.Addr
		qsport, qdport       uint16
	}{
		{"hairpin to a dead container", func(gw *Gateway) {
			fromBridgeIP(gw, ipPacket(ctrIP, hostIP, conntrack.ProtoUDP, udpHeader(5000, 9090, 10)))
		}, hostIP, ctrIP, ctrIP, hostIP, 5000, 9090},
		{"reply to a client gone", func(gw *Gateway) {
			fromUplinkIP(gw, ipPacket(gone, hostIP, conntrack.ProtoUDP, udpHeader(6000, 8080, 10)))
			fromBridgeIP(gw, ipPacket(ctrIP, gone, conntrack.ProtoUDP, udpHeader(80, 6000, 10)))
		}, hostIP, ctrIP, ctrIP, gone, 80, 6000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, _, br := recGateway(t)
			for _, p := range []Publish{
				{Proto: conntrack.ProtoUDP, HostPorts: PortRange{8080, 8080}, ContainerAddr: ctrIP, ContainerPorts: PortRange{80, 80}},
				{Proto: conntrack.ProtoUDP, HostPorts: PortRange{9090, 9090}, ContainerAddr: dead, ContainerPorts: PortRange{80, 80}},
			} {
				if _, err := gw.Rules().AddPublish(p); err != nil {
					t.Fatal(err)
				}
			}
			tc.send(gw)
			ul := gw.uplink.(*LinkUplink)
			gw.unreachable(append(gw.inside.neigh.expire(gw.now()+int64(neighGiveUp)+1),
				ul.l.neigh.expire(ul.now()+int64(neighGiveUp)+1)...))
			var msg []byte
			for _, f := range br.frames {
				if p := f[Headroom:]; binary.BigEndian.Uint16(f[12:14]) == etherTypeIP4 && p[9] == byte(conntrack.ProtoICMP) {
					msg = p
				}
			}
			if msg == nil {
				t.Fatal("no ICMP error reached the bridge")
			}
			if err := verify(msg); err != nil {
				t.Fatal(err)
			}
			inner := msg[28:]
			from, to := netip.AddrFrom4([4]byte(msg[12:16])), netip.AddrFrom4([4]byte(msg[16:20]))
			qsrc, qdst := netip.AddrFrom4([4]byte(inner[12:16])), netip.AddrFrom4([4]byte(inner[16:20]))
			qsport, qdport := binary.BigEndian.Uint16(inner[20:]), binary.BigEndian.Uint16(inner[22:])
			if msg[20] != 3 || msg[21] != 1 || from != tc.from || to != tc.to ||
				qsrc != tc.qsrc || qdst != tc.qdst || qsport != tc.qsport || qdport != tc.qdport {
				t.Errorf("type %d code %d from %v to %v about %v:%d -> %v:%d; want host unreachable from %v to %v about %v:%d -> %v:%d",
					msg[20], msg[21], from, to, qsrc, qsport, qdst, qdport, tc.from, tc.to, tc.qsrc, tc.qsport, tc.qdst, tc.qdport)
			}
		})
	}
}

// Entries that expire pending while a full table makes room report their
// packets as expire's do (host unreachable), not drop them unsaid.
func TestNeighbourRoomReportsFailed(t *testing.T) {
	nt := newNeighTable()
	for i := range neighMax {
		nt.hold(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), []byte{1}, 0)
	}
	later := int64(neighGiveUp) + 1
	if _, dropped := nt.hold(netip.MustParseAddr("10.1.0.1"), []byte{2}, later); dropped {
		t.Fatal("no room made in a table of expired entries")
	}
	if n := len(nt.expire(later)); n != neighMax {
		t.Errorf("expire reported %d packets, want the %d of the entries that expired making room", n, neighMax)
	}
	if nt.queued != 1 {
		t.Errorf("%d bytes counted held, want the new entry's 1", nt.queued)
	}
}

// BenchmarkNeighHoldFull holds a packet for a new address, as a scan of
// the link from a container does, with the table full of pending entries,
// against the same with room: a full table should not scan every entry
// for each new address.
func BenchmarkNeighHoldFull(b *testing.B) {
	for _, full := range []bool{false, true} {
		b.Run(map[bool]string{false: "room", true: "full"}[full], func(b *testing.B) {
			nt := newNeighTable()
			pkt := make([]byte, 100)
			n := 0
			addr := func() netip.Addr { n++; return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}) }
			if full {
				for range neighMax {
					nt.hold(addr(), pkt, 0)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				nt.hold(addr(), pkt, 0)
				if !full && i%1000 == 999 {
					b.StopTimer()
					nt = newNeighTable()
					b.StartTimer()
				}
			}
		})
	}
}

// A full table finds its next victims in one pass and drops them in
// order as new entries come, one each, but not one used since that pass:
// it goes on to the next.
func TestNeighFullVictimsInOrder(t *testing.T) {
	nt := newNeighTable()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }
	for i := range neighMax {
		nt.hold(addr(i), []byte{1}, int64(i)) // pending, the oldest first
	}
	now := int64(neighMax)
	nt.hold(netip.MustParseAddr("10.2.0.1"), []byte{1}, now) // the oldest goes, the pass finds the next
	if nt.m[addr(0)] != nil || len(nt.victims) == 0 {
		t.Fatalf("after the first new entry: oldest present %v, %d victims found", nt.m[addr(0)] != nil, len(nt.victims))
	}
	nt.m[addr(1)].used.Store(now) // a packet went to the next victim
	nt.hold(netip.MustParseAddr("10.2.0.2"), []byte{1}, now)
	if nt.m[addr(1)] == nil || nt.m[addr(2)] != nil {
		t.Errorf("after the second: the one used since present %v, the next dropped %v; want kept, dropped", nt.m[addr(1)] != nil, nt.m[addr(2)] == nil)
	}
	if n := len(nt.m); n != neighMax {
		t.Errorf("%d entries, want the cap, %d", n, neighMax)
	}
}

// A victim of a full table's last pass that has expired, pending, since
// is reported as a pass reports it (failLocked): its held packets draw
// host unreachable.
func TestNeighVictimExpiredReportsFailed(t *testing.T) {
	nt := newNeighTable()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }
	for i := range neighMax {
		nt.hold(addr(i), []byte{1}, int64(i))
	}
	nt.hold(netip.MustParseAddr("10.2.0.1"), []byte{1}, int64(neighMax)) // a pass: addr(0) goes, victims found
	later := int64(neighMax) + int64(neighGiveUp) + 1                    // every entry now expired pending
	nt.hold(netip.MustParseAddr("10.2.0.2"), []byte{1}, later)
	// Held: addr(1..4095) and 10.2.0.1, all expired: 4096 packets to report.
	if n := len(nt.expire(later)); n != neighMax {
		t.Errorf("expire reported %d packets, want the %d of the entries that expired", n, neighMax)
	}
}

// Entries never used go before any that was, the new ones a flood makes
// after the pass too: the pass keeps only never-used victims, so ten new
// addresses in a table of idle neighbours used once drop one of them,
// not ten.
func TestNeighVictimsNeverUsedFirst(t *testing.T) {
	nt := newNeighTable()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }
	mac := bridge.MustParseMAC("02:00:00:00:00:01")
	for i := range neighMax {
		nt.learn(addr(i), mac, 0, true)
		nt.m[addr(i)].used.Store(int64(time.Second))
	}
	now := int64(100 * time.Second)
	for i := range 10 {
		nt.hold(netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}), []byte{1}, now+int64(i))
	}
	used := 0
	for i := range neighMax {
		if nt.m[addr(i)] != nil {
			used++
		}
	}
	if used != neighMax-1 {
		t.Errorf("%d of the %d used neighbours left after 10 new addresses, want all but one: the new, never used, go first", used, neighMax)
	}
}
