package nat

import (
	"errors"
	"net/netip"
	"sync"
	"testing"

	"github.com/usernat/usernat/conntrack"
)

func newTable(t testing.TB) *conntrack.Table {
	t.Helper()
	tbl, err := conntrack.New(conntrack.Config{Clock: newClock(), ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tbl.Close() })
	return tbl
}

// track decodes pkt and tracks it with m.
func track(t testing.TB, tbl *conntrack.Table, a *Allocator, pkt []byte, m Mapping) (conntrack.Result, error) {
	t.Helper()
	p := decode(pkt)
	return tbl.Track(0, &p, a.Translator(m))
}

func udpFrom(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) []byte {
	return ipPacket(src, dst, conntrack.ProtoUDP, udpHeader(sport, dport, 0))
}

func TestAllocatorMasquerade(t *testing.T) {
	cont5 := netip.MustParseAddr("172.17.0.5")
	for _, tc := range []struct {
		name     string
		port     uint16
		lo, hi   uint16
		m        Mapping
		distinct int // containers sharing the port
	}{
		{"high port", 40000, 1024, 65535, Mapping{SrcAddr: host4}, 4},
		{"port under 512", 123, 1, 511, Mapping{SrcAddr: host4}, 4},
		{"port 512-1023", 700, 600, 1023, Mapping{SrcAddr: host4}, 4},
		{"range", 40000, 5000, 5009, Mapping{SrcAddr: host4, SrcPorts: PortRange{5000, 5009}}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl := newTable(t)
			var a Allocator
			seen := map[uint16]bool{}
			for i := range tc.distinct {
				src := netip.AddrFrom4([4]byte{172, 17, 1, byte(i + 1)})
				if i == 0 {
					src = cont4
				}
				if i == 1 {
					src = cont5
				}
				res, err := track(t, tbl, &a, udpFrom(src, tc.port, client4, 53), tc.m)
				if err != nil {
					t.Fatal(err)
				}
				r := res.Reply()
				if r.Dst != host4 || r.Src != client4 || r.SrcPort != 53 {
					t.Fatalf("reply %v", r)
				}
				if res.Status&conntrack.SrcNAT == 0 {
					t.Errorf("status %v lacks SRC_NAT", res.Status)
				}
				p := r.DstPort
				if i == 0 && tc.m.SrcPorts.IsZero() && p != tc.port {
					t.Errorf("first flow's port %d changed to %d though free", tc.port, p)
				}
				if i > 0 && (p < tc.lo || p > tc.hi) {
					t.Errorf("flow %d mapped to port %d, outside %d-%d", i, p, tc.lo, tc.hi)
				}
				if seen[p] {
					t.Errorf("flow %d mapped to port %d, already in use", i, p)
				}
				seen[p] = true
			}
			if _, err := track(t, tbl, &a, udpFrom(netip.MustParseAddr("172.17.9.9"), tc.port, client4, 53), Mapping{SrcAddr: host4, SrcPorts: PortRange{tc.lo, tc.lo}}); tc.name == "range" && !errors.Is(err, ErrPortsExhausted) {
				t.Errorf("full range: %v, want ErrPortsExhausted", err)
			}
		})
	}
}

func TestAllocatorExhausted(t *testing.T) {
	tbl := newTable(t)
	var a Allocator
	m := Mapping{SrcAddr: host4, SrcPorts: PortRange{61000, 61003}}
	for i := range 4 {
		src := netip.AddrFrom4([4]byte{172, 17, 0, byte(10 + i)})
		if _, err := track(t, tbl, &a, udpFrom(src, 1000, client4, 53), m); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
	}
	_, err := track(t, tbl, &a, udpFrom(cont4, 1000, client4, 53), m)
	if !errors.Is(err, ErrPortsExhausted) {
		t.Fatalf("5th flow in a range of 4: %v, want ErrPortsExhausted", err)
	}
	// Another server is another reply tuple: the same ports serve again.
	if _, err := track(t, tbl, &a, udpFrom(cont4, 1000, router4, 53), m); err != nil {
		t.Fatalf("other server: %v", err)
	}
	if st := a.Stats(); st.Exhausted != 1 || st.Translated != 5 {
		t.Errorf("stats %+v", st)
	}
}

func TestAllocatorRandom(t *testing.T) {
	tbl := newTable(t)
	var a Allocator
	kept := 0
	for i := range 20 {
		src := netip.AddrFrom4([4]byte{172, 17, 0, byte(10 + i)})
		res, err := track(t, tbl, &a, udpFrom(src, uint16(30000+i), client4, 53), Mapping{SrcAddr: host4, Random: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Reply().DstPort == uint16(30000+i) {
			kept++
		}
	}
	if kept > 2 {
		t.Errorf("fully random kept the port %d times in 20", kept)
	}
}

func TestAllocatorICMP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		c1, c2, srv, gw := cont4, netip.MustParseAddr("172.17.0.5"), client4, host4
		typ := uint8(8)
		proto := conntrack.ProtoICMP
		if v6 {
			c1, c2, srv, gw, typ, proto = cont6, netip.MustParseAddr("fd00::5"), client6, host6, 128, conntrack.ProtoICMPv6
		}
		tbl := newTable(t)
		var a Allocator
		m := Mapping{SrcAddr: gw}
		r1, err := track(t, tbl, &a, ipPacket(c1, srv, proto, icmpHeader(typ, 0, 77, nil)), m)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := track(t, tbl, &a, ipPacket(c2, srv, proto, icmpHeader(typ, 0, 77, nil)), m)
		if err != nil {
			t.Fatal(err)
		}
		if r1.Reply().SrcPort != 77 {
			t.Errorf("v6=%v: first echo's id changed to %d", v6, r1.Reply().SrcPort)
		}
		if id := r2.Reply().SrcPort; id == 77 {
			t.Errorf("v6=%v: second echo kept the taken id", v6)
		}
		if r2.Status&conntrack.SrcNAT == 0 {
			t.Errorf("v6=%v: status %v", v6, r2.Status)
		}
		// The server's answer, to the mapped id, finds the second flow.
		reply, _ := r2.Reply().Reverse() // gw → srv request, as sent
		replyType := uint8(0)
		if v6 {
			replyType = 129
		}
		back := ipPacket(srv, gw, proto, icmpHeader(replyType, 0, reply.SrcPort, nil))
		res, err := track(t, tbl, &a, back, Mapping{})
		if err != nil || res.ID != r2.ID || res.Dir != conntrack.Reply {
			t.Errorf("v6=%v: echo reply matched %+v, %v", v6, res, err)
		}
	}
}

func TestAllocatorDNAT(t *testing.T) {
	tbl := newTable(t)
	var a Allocator
	m := Mapping{DstAddr: cont4, DstPorts: PortRange{80, 80}}
	res, err := track(t, tbl, &a, ipPacket(client4, host4, conntrack.ProtoTCP, tcpSyn(52140, 8080)), m)
	if err != nil {
		t.Fatal(err)
	}
	want := tup(cont4, client4, 80, 52140, conntrack.ProtoTCP)
	if res.Reply() != want || res.Status&(conntrack.DstNAT|conntrack.SrcNAT) != conntrack.DstNAT {
		t.Fatalf("reply %v status %v, want %v DST_NAT", res.Reply(), res.Status, want)
	}
	// Hairpin: DNAT and SNAT to the gateway address.
	gw := netip.MustParseAddr("172.17.0.1")
	res, err = track(t, tbl, &a, ipPacket(netip.MustParseAddr("172.17.0.5"), host4, conntrack.ProtoTCP, tcpSyn(52140, 8080)),
		Mapping{DstAddr: cont4, DstPorts: PortRange{80, 80}, SrcAddr: gw})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Reply(); r.Src != cont4 || r.SrcPort != 80 || r.Dst != gw || r.DstPort != 52140 || res.Status&(conntrack.DstNAT|conntrack.SrcNAT) != conntrack.DstNAT|conntrack.SrcNAT {
		t.Fatalf("hairpin reply %v status %v", r, res.Status)
	}
	// A range maps a port outside it to its start, and searches from
	// there when that is taken: the same client port reaching a second
	// host address needs the next container port.
	tbl2 := newTable(t)
	m = Mapping{DstAddr: cont4, DstPorts: PortRange{6000, 6001}}
	for i, tc := range []struct {
		hostAddr netip.Addr
		want     uint16
	}{{host4, 6000}, {router4, 6001}, {netip.MustParseAddr("192.0.2.77"), 0}} {
		res, err := track(t, tbl2, &a, ipPacket(client4, tc.hostAddr, conntrack.ProtoTCP, tcpSyn(1111, 5000)), m)
		if tc.want == 0 {
			if !errors.Is(err, ErrPortsExhausted) {
				t.Errorf("flow %d: %v, want ErrPortsExhausted", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if p := res.Reply().SrcPort; p != tc.want {
			t.Errorf("flow %d: port %d, want %d", i, p, tc.want)
		}
	}
	if _, _, err := a.Translate(tbl, 0, tup(client4, host4, 1, 2, conntrack.ProtoTCP), Mapping{DstAddr: cont6}); !errors.Is(err, ErrMismatch) {
		t.Errorf("family mismatch: %v", err)
	}
}

func tcpSyn(sport, dport uint16) []byte {
	b := tcpHeader(sport, dport, 0)
	b[13] = conntrack.TCPSyn
	return b
}

// Flows racing for the same ports all get distinct ones, retrying when a
// concurrent insertion took the tuple they chose.
func TestAllocatorConcurrent(t *testing.T) {
	tbl := newTable(t)
	var a Allocator
	const n = 64
	ports := make([]uint16, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			src := netip.AddrFrom4([4]byte{172, 17, byte(i >> 8), byte(i + 1)})
			p := decode(udpFrom(src, 40000, client4, 53))
			for {
				res, err := tbl.Track(0, &p, a.Translator(Mapping{SrcAddr: host4}))
				if errors.Is(err, conntrack.ErrReplyInUse) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				ports[i] = res.Reply().DstPort
				return
			}
		})
	}
	wg.Wait()
	seen := map[uint16]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d mapped twice", p)
		}
		seen[p] = true
	}
}

// A source keeps its mapping while any of its flows lives, as Linux's
// find_appropriate_src finds any conntrack of the source in the bysource
// hash: the end of the flow created last must not lose the mapping an
// older, live flow still has.
func TestSourceMappingOutlivesNewestFlow(t *testing.T) {
	tbl := newTable(t)
	var a Allocator
	m := Mapping{SrcAddr: host4}
	other := netip.MustParseAddr("172.17.0.5")
	server2 := netip.MustParseAddr("192.168.2.1")
	mapped := func(src netip.Addr, dst netip.Addr, dport uint16) (uint16, conntrack.Tuple) {
		t.Helper()
		res, err := track(t, tbl, &a, udpFrom(src, 5000, dst, dport), m)
		if err != nil {
			t.Fatal(err)
		}
		return res.Reply().DstPort, res.Orig()
	}
	mapped(other, client4, 53) // takes host4:5000 towards client4:53
	p1, _ := mapped(cont4, client4, 53)
	if p1 == 5000 {
		t.Fatal("clash not resolved")
	}
	p2, orig2 := mapped(cont4, server2, 53)
	if p2 != p1 {
		t.Fatalf("second flow mapped to %d, want %d", p2, p1)
	}
	tbl.Delete(0, orig2) // the newest flow ends; the first lives on
	if p3, _ := mapped(cont4, server2, 123); p3 != p1 {
		t.Errorf("third flow mapped to %d, want %d: the first flow, live, still has it", p3, p1)
	}
}

// The allocator records a mapping before the table inserts its entry:
// a sweep that runs on that record must not take it for a flow gone.
func TestSourceMappingFirstRecordKept(t *testing.T) {
	tbl := newTable(t)
	var a Allocator
	server2 := netip.MustParseAddr("192.168.2.1")
	// A flow from outside holds client4:53 -> host4:5000 (published to a
	// container; DNAT only, so nothing is recorded).
	if _, err := track(t, tbl, &a, udpFrom(client4, 53, host4, 5000), Mapping{DstAddr: cont4, DstPorts: PortRange{80, 80}}); err != nil {
		t.Fatal(err)
	}
	res, err := track(t, tbl, &a, udpFrom(cont4, 5000, client4, 53), Mapping{SrcAddr: host4})
	if err != nil {
		t.Fatal(err)
	}
	p1 := res.Reply().DstPort
	if p1 == 5000 {
		t.Fatal("clash not resolved")
	}
	res, err = track(t, tbl, &a, udpFrom(cont4, 5000, server2, 53), Mapping{SrcAddr: host4})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Reply().DstPort; p != p1 {
		t.Errorf("same socket to another server mapped to %d, want %d (its live mapping)", p, p1)
	}
}

// BenchmarkMasqueradeNewFlow is the cost of a new masqueraded UDP flow:
// tracking it, choosing its port (with the source mappings kept for
// reuse) and creating its entry. Entries are deleted as the run goes, so
// the table stays small.
func BenchmarkMasqueradeNewFlow(b *testing.B) {
	tbl := newTable(b)
	var a Allocator
	m := Mapping{SrcAddr: host4}
	pkts := make([][]byte, 4096)
	for i := range pkts {
		src := netip.AddrFrom4([4]byte{172, 17, byte(i >> 8), byte(i)})
		pkts[i] = udpFrom(src, uint16(1024+i), client4, 53)
	}
	tr := a.Translator(m)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p := decode(pkts[i%len(pkts)])
		res, err := tbl.Track(0, &p, tr)
		if err != nil {
			b.Fatal(err)
		}
		tbl.Delete(0, res.Orig())
	}
}
