package conntrack

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(closingShared{m}) }

func udpTuple(src, dst string) Tuple {
	s, d := ap(src), ap(dst)
	return Tuple{Src: s.Addr(), Dst: d.Addr(), SrcPort: s.Port(), DstPort: d.Port(), Proto: ProtoUDP}
}

func TestUDPTimeouts(t *testing.T) {
	for _, fam := range []struct{ c, s string }{
		{"192.0.2.10:50001", "198.51.100.200:9999"},
		{"[2001:db8:1:2::3]:50001", "[fd12:3456:789a::42]:9999"},
	} {
		t.Run("unreplied/"+fam.c, func(t *testing.T) {
			tbl, clk := newTable(t, Config{})
			track(t, tbl, udpPacket(ap(fam.c), ap(fam.s), 10))
			clk.Advance(10 * time.Second)
			track(t, tbl, udpPacket(ap(fam.c), ap(fam.s), 10)) // refreshes
			clk.Advance(30*time.Second - time.Nanosecond)
			tbl.Expire(0)
			if e := mustGet(t, tbl, udpTuple(fam.c, fam.s)); e.Status&(SeenReply|Assured) != 0 {
				t.Fatalf("status %v", e.Status)
			}
			clk.Advance(time.Nanosecond)
			if _, _, ok := tbl.Get(0, udpTuple(fam.c, fam.s)); ok {
				t.Fatal("unreplied UDP flow alive 30 s after its last packet")
			}
			if n := tbl.Expire(0); n != 1 || tbl.Len() != 0 {
				t.Fatalf("Expire removed %d, %d left", n, tbl.Len())
			}
		})
		t.Run("assured/"+fam.c, func(t *testing.T) {
			tbl, clk := newTable(t, Config{})
			res := track(t, tbl, udpPacket(ap(fam.c), ap(fam.s), 10))
			if res.Class != ClassNew || !res.Created {
				t.Fatalf("first packet %+v", res)
			}
			clk.Advance(time.Second)
			res = track(t, tbl, udpPacket(ap(fam.s), ap(fam.c), 10))
			if res.Class != ClassEstablished || res.Dir != Reply || res.Status&SeenReply == 0 {
				t.Fatalf("reply %+v", res)
			}
			// Replied, but not yet 2 s old: still the unreplied timeout.
			if e := mustGet(t, tbl, udpTuple(fam.c, fam.s)); e.Status&Assured != 0 || e.Timeout != 30*time.Second {
				t.Fatalf("after reply: %v", e)
			}
			clk.Advance(time.Second)
			track(t, tbl, udpPacket(ap(fam.c), ap(fam.s), 10))
			e := mustGet(t, tbl, udpTuple(fam.c, fam.s))
			if e.Status&Assured == 0 || e.Timeout != 120*time.Second {
				t.Fatalf("active after 2 s: %v", e)
			}
			clk.Advance(120*time.Second - time.Nanosecond)
			tbl.Expire(0)
			mustGet(t, tbl, udpTuple(fam.c, fam.s))
			clk.Advance(time.Nanosecond)
			if tbl.Expire(0) != 1 {
				t.Fatal("assured UDP flow alive 120 s after its last packet")
			}
		})
	}
}

func TestICMPEcho(t *testing.T) {
	for _, fam := range []struct {
		c, s           string
		req, rep, kind uint8
	}{
		{"192.0.2.10", "198.51.100.200", 8, 0, 1},
		{"2001:db8:1:2::3", "fd12:3456:789a::42", 128, 129, 58},
	} {
		t.Run(fam.c, func(t *testing.T) {
			tbl, clk := newTable(t, Config{})
			c, s := ip(fam.c), ip(fam.s)
			if res := track(t, tbl, icmpPacket(s, c, fam.rep, 0, 7, nil)); res.Class != ClassInvalid || tbl.Len() != 0 {
				t.Fatalf("echo reply with no request: %+v", res)
			}
			res := track(t, tbl, icmpPacket(c, s, fam.req, 0, 7, nil))
			if !res.Created || res.Orig() != ICMPTuple(c, s, fam.req, 0, 7) || res.Reply() != ICMPTuple(s, c, fam.rep, 0, 7) {
				t.Fatalf("request %+v", res)
			}
			if res := track(t, tbl, icmpPacket(s, c, fam.rep, 0, 7, nil)); res.Dir != Reply || res.Class != ClassEstablished {
				t.Fatalf("reply %+v", res)
			}
			if res := track(t, tbl, icmpPacket(s, c, fam.rep, 0, 8, nil)); res.Class != ClassInvalid {
				t.Fatalf("reply with another id %+v", res)
			}
			if res := track(t, tbl, icmpPacket(c, s, fam.req, 0, 8, nil)); !res.Created {
				t.Fatal("request with another id is not its own flow")
			}
			if tbl.Len() != 2 {
				t.Fatalf("%d entries, want 2", tbl.Len())
			}
			clk.Advance(30 * time.Second)
			if tbl.Expire(0) != 2 {
				t.Fatal("echo flows alive after 30 s")
			}
		})
	}
}

// snat translates the source of every flow to gw, keeping the port when
// it is free and searching upwards otherwise; ICMP ids are mapped alike.
type snat struct {
	gw    netip.Addr
	calls int
}

func (n *snat) Translate(tbl *Table, zone Zone, orig Tuple) (Tuple, Status, error) {
	n.calls++
	r, _ := orig.Reverse()
	r.Dst = n.gw
	for i := 0; i < 64; i++ {
		if orig.Proto.isICMP() {
			r.SrcPort = orig.SrcPort + uint16(i)
		} else {
			r.DstPort = orig.SrcPort + uint16(i)
		}
		if !tbl.Taken(zone, r) {
			return r, SrcNAT, nil
		}
	}
	return Tuple{}, 0, errors.New("ports exhausted")
}

func TestNATHookAndICMPErrors(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	gw := ip("203.0.113.1")
	nat := &snat{gw: gw}
	c1, c2, srv := ap("10.1.2.3:5000"), ap("10.1.2.4:5000"), ap("198.51.100.200:53")
	r1, err := tbl.Track(0, decode(t, udpPacket(c1, srv, 20)), nat)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tbl.Track(0, decode(t, udpPacket(c2, srv, 20)), nat)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Reply().DstPort != 5000 || r2.Reply().DstPort != 5001 || r1.Status&SrcNAT == 0 {
		t.Fatalf("mapped ports %d and %d, want 5000 and 5001", r1.Reply().DstPort, r2.Reply().DstPort)
	}
	// The reply to the second client comes to gw:5001.
	res := track(t, tbl, udpPacket(srv, netip.AddrPortFrom(gw, 5001), 20))
	if res.ID != r2.ID || res.Dir != Reply {
		t.Fatalf("reply matched %+v", res)
	}
	// A reply tuple another live entry uses is refused.
	_, err = tbl.Track(0, decode(t, udpPacket(ap("10.1.2.5:7"), srv, 1)), FixedReply{Reply: r1.Reply(), Status: SrcNAT})
	if !errors.Is(err, ErrReplyInUse) || tbl.Len() != 2 || tbl.Stats().Clash != 4 { // tried 4 times
		t.Fatalf("clashing reply: err %v, %d entries", err, tbl.Len())
	}
	// A reply tuple equal to another entry's original tuple is refused too.
	_, err = tbl.Track(0, decode(t, udpPacket(ap("10.1.2.5:7"), srv, 1)), FixedReply{Reply: r1.Orig(), Status: SrcNAT})
	if !errors.Is(err, ErrReplyInUse) {
		t.Fatalf("reply equal to an original tuple: %v", err)
	}
	// A Translator returning another protocol is refused.
	bad := r1.Reply()
	bad.Proto = ProtoTCP
	if _, err = tbl.Track(0, decode(t, udpPacket(ap("10.1.2.5:7"), srv, 1)), FixedReply{Reply: bad, Status: SrcNAT}); !errors.Is(err, ErrBadReply) {
		t.Fatalf("reply of another protocol: %v", err)
	}

	// The server's port is closed: its unreachable quotes the datagram as
	// it arrived, from gw:5001.
	quote := udpPacket(netip.AddrPortFrom(gw, 5001), srv, 20)
	unreach := icmpPacket(srv.Addr(), gw, 3, 3, 0, quote[:28])
	res = track(t, tbl, unreach)
	if res.Class != ClassRelated || res.ID != r2.ID || res.Dir != Reply {
		t.Fatalf("unreachable classified %+v", res)
	}
	// An error about no known flow, or one not addressed to the quoted
	// packet's sender, is invalid and creates nothing.
	for _, b := range [][]byte{
		icmpPacket(srv.Addr(), gw, 3, 3, 0, udpPacket(netip.AddrPortFrom(gw, 6000), srv, 20)[:28]),
		icmpPacket(srv.Addr(), ip("203.0.113.99"), 3, 3, 0, quote[:28]),
	} {
		if res := track(t, tbl, b); res.Class != ClassInvalid {
			t.Fatalf("stray error classified %v", res.Class)
		}
	}
	// An error from a router past the gateway quotes the translated
	// packet and travels in the reply direction.
	ttl := icmpPacket(ip("192.0.2.254"), gw, 11, 0, 0, udpPacket(netip.AddrPortFrom(gw, 5000), srv, 20)[:28])
	if res := track(t, tbl, ttl); res.Class != ClassRelated || res.ID != r1.ID || res.Dir != Reply {
		t.Fatalf("time exceeded classified %+v", res)
	}
	// The client's own error about a reply travels in the original
	// direction.
	back := icmpPacket(c1.Addr(), srv.Addr(), 3, 3, 0, udpPacket(srv, c1, 20)[:28])
	if res := track(t, tbl, back); res.Class != ClassRelated || res.ID != r1.ID || res.Dir != Original {
		t.Fatalf("client's unreachable classified %+v", res)
	}
	// IPv6: packet too big about a TCP flow.
	tbl6, _ := newTable(t, Config{})
	c6, s6 := ap("[2001:db8:1:2::3]:40000"), ap("[fd12:3456:789a::42]:443")
	track(t, tbl6, tcpPacket(c6, s6, seg{flags: TCPSyn, seq: 1}))
	ptb := icmpPacket(ip("2001:db8:ff::1"), c6.Addr(), 2, 0, 0, tcpPacket(c6, s6, seg{flags: TCPSyn, seq: 1})[:48])
	if res := track(t, tbl6, ptb); res.Class != ClassRelated || res.Dir != Reply {
		t.Fatalf("packet too big classified %+v", res)
	}
	if tbl.Len() != 2 || tbl6.Len() != 1 {
		t.Fatal("ICMP errors created entries")
	}
}

func TestZonesAreSeparate(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	b := udpPacket(ap("10.0.0.2:1000"), ap("10.0.0.3:2000"), 5)
	for _, z := range []Zone{0, 1, 65535} {
		res, err := tbl.Track(z, decode(t, b), nil)
		if err != nil || !res.Created {
			t.Fatalf("zone %d: %+v %v", z, res, err)
		}
	}
	if tbl.Len() != 3 {
		t.Fatalf("%d entries, want 3", tbl.Len())
	}
	e, _, ok := tbl.Get(65535, udpTuple("10.0.0.2:1000", "10.0.0.3:2000"))
	if !ok || e.Zone != 65535 {
		t.Fatalf("zone entry %v", e)
	}
}

func TestTableFull(t *testing.T) {
	const max = 8
	t.Run("evicts unassured", func(t *testing.T) {
		tbl, _ := newTable(t, Config{Max: max})
		sub := tbl.Subscribe(64)
		defer sub.Close()
		for i := range max {
			track(t, tbl, udpPacket(netip.AddrPortFrom(ip("10.0.0.2"), uint16(1000+i)), ap("192.0.2.9:53"), 1))
		}
		for i := range 20 {
			res := track(t, tbl, udpPacket(netip.AddrPortFrom(ip("10.0.0.3"), uint16(1000+i)), ap("192.0.2.9:53"), 1))
			if !res.Created {
				t.Fatalf("flow %d refused", i)
			}
			if tbl.Len() > max {
				t.Fatalf("%d entries, cap %d", tbl.Len(), max)
			}
		}
		if st := tbl.Stats(); st.EarlyDrop != 20 || st.Refused != 0 {
			t.Fatalf("stats %+v", st)
		}
		evicted := 0
		for len(sub.Events()) > 0 {
			if ev := <-sub.Events(); ev.Type == EventDestroy && ev.Reason == ReasonEvicted {
				evicted++
			}
		}
		if evicted != 20 {
			t.Fatalf("%d eviction events, want 20", evicted)
		}
	})
	t.Run("MakeRoom", func(t *testing.T) {
		tbl, clk := newTable(t, Config{Max: max})
		next := ap("10.0.0.4:3")
		if _, id, ok := tbl.MakeRoom(0, udpTuple(next.String(), "192.0.2.9:53")); !ok || id != 0 {
			t.Fatalf("a table with room: evicted %d, ok %v", id, ok)
		}
		var flows []Tuple
		for i := range max {
			c := netip.AddrPortFrom(ip("10.0.0.2"), uint16(1000+i))
			s := ap("192.0.2.9:53")
			track(t, tbl, udpPacket(c, s, 1))
			track(t, tbl, udpPacket(s, c, 1))
			flows = append(flows, udpTuple(c.String(), s.String()))
		}
		// Full of flows not assured: one goes, the one named.
		orig, id, ok := tbl.MakeRoom(0, udpTuple(next.String(), "192.0.2.9:53"))
		if !ok || id == 0 || tbl.Len() != max-1 || tbl.Stats().EarlyDrop != 1 {
			t.Fatalf("evicted %v %d, ok %v: %d entries, %+v", orig, id, ok, tbl.Len(), tbl.Stats())
		}
		if _, _, there := tbl.Get(0, orig); there || !slices.Contains(flows, orig) {
			t.Fatalf("evicted %v: still there %v, or not one of the flows", orig, there)
		}
		track(t, tbl, udpPacket(next, ap("192.0.2.9:53"), 1))
		track(t, tbl, udpPacket(ap("192.0.2.9:53"), next, 1))
		// Full of assured flows: none goes, and the refusal counts.
		clk.Advance(3 * time.Second)
		for _, en := range tbl.List() {
			track(t, tbl, udpPacket(netip.AddrPortFrom(en.Orig.Src, en.Orig.SrcPort), netip.AddrPortFrom(en.Orig.Dst, en.Orig.DstPort), 1))
			track(t, tbl, udpPacket(netip.AddrPortFrom(en.Orig.Dst, en.Orig.DstPort), netip.AddrPortFrom(en.Orig.Src, en.Orig.SrcPort), 1))
		}
		if _, id, ok := tbl.MakeRoom(0, udpTuple("10.0.0.5:3", "192.0.2.9:53")); ok || id != 0 || tbl.Len() != max || tbl.Stats().Refused != 1 {
			t.Fatalf("a table of assured flows: evicted %d, ok %v, %d entries, %+v", id, ok, tbl.Len(), tbl.Stats())
		}
	})
	t.Run("keeps assured", func(t *testing.T) {
		tbl, clk := newTable(t, Config{Max: max})
		var assured []Tuple
		for i := range max {
			c := netip.AddrPortFrom(ip("10.0.0.2"), uint16(1000+i))
			s := ap("192.0.2.9:53")
			track(t, tbl, udpPacket(c, s, 1))
			track(t, tbl, udpPacket(s, c, 1))
			assured = append(assured, udpTuple(c.String(), s.String()))
		}
		clk.Advance(3 * time.Second)
		for _, tp := range assured {
			track(t, tbl, udpPacket(netip.AddrPortFrom(tp.Src, tp.SrcPort), netip.AddrPortFrom(tp.Dst, tp.DstPort), 1))
		}
		_, err := tbl.Track(0, decode(t, udpPacket(ap("10.0.0.4:3"), ap("192.0.2.9:53"), 1)), nil)
		if !errors.Is(err, ErrTableFull) {
			t.Fatalf("err %v, want ErrTableFull", err)
		}
		if st := tbl.Stats(); st.Refused != 1 || st.EarlyDrop != 0 || st.Entries != max {
			t.Fatalf("stats %+v", st)
		}
		for _, tp := range assured {
			mustGet(t, tbl, tp)
		}
		// Existing flows still work.
		if res := track(t, tbl, udpPacket(netip.AddrPortFrom(assured[0].Dst, 53), netip.AddrPortFrom(assured[0].Src, assured[0].SrcPort), 1)); res.Class != ClassEstablished {
			t.Fatalf("existing flow: %+v", res)
		}
		// Once the assured flows expire, their room is free again, even
		// before the reaper runs.
		clk.Advance(121 * time.Second)
		if _, err := tbl.Track(0, decode(t, udpPacket(ap("10.0.0.4:3"), ap("192.0.2.9:53"), 1)), nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMemoryStaysBounded(t *testing.T) {
	const max = 3000
	tbl, clk := newTable(t, Config{Max: max})
	for round := range 20 {
		for i := range 2 * max {
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(round), byte(i >> 8), byte(i)}), 4000)
			if _, err := tbl.Track(0, decode(t, udpPacket(c, ap("192.0.2.9:53"), 1)), nil); err != nil {
				t.Fatal(err)
			}
		}
		if tbl.Len() > max || len(tbl.slab.chunks) > (max+tbl.slab.chunkSize()-1)/tbl.slab.chunkSize() {
			t.Fatalf("round %d: %d entries in %d chunks, cap %d", round, tbl.Len(), len(tbl.slab.chunks), max)
		}
		clk.Advance(time.Minute)
	}
	tbl.Flush()
	slots := 0
	for i := range tbl.shards {
		slots += len(tbl.shards[i].slots)
	}
	if tbl.Len() != 0 || len(tbl.slab.chunks) > 1 || slots > len(tbl.shards)*minSlots {
		t.Fatalf("after flush: %d entries, %d chunks, %d index slots", tbl.Len(), len(tbl.slab.chunks), slots)
	}
}

func TestExpireIsIncremental(t *testing.T) {
	tbl, clk := newTable(t, Config{Max: 100000})
	for i := range 5000 {
		track(t, tbl, udpPacket(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 9), ap("192.0.2.9:53"), 1))
	}
	clk.Advance(time.Minute)
	first := tbl.Expire(500)
	if first == 0 || first > 500 {
		t.Fatalf("Expire(500) removed %d", first)
	}
	total := first
	for calls := 0; tbl.Len() > 0; calls++ {
		if calls > 1000 {
			t.Fatalf("%d entries left after 1000 calls", tbl.Len())
		}
		total += tbl.Expire(500)
	}
	if total != 5000 || tbl.Stats().Expired != 5000 {
		t.Fatalf("removed %d", total)
	}
}

func TestBackgroundReaper(t *testing.T) {
	clk := newClock()
	tbl, err := New(Config{Clock: clk, ExpireInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	sub := tbl.Subscribe(8)
	track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	<-sub.Events()
	clk.Advance(31 * time.Second)
	select {
	case ev := <-sub.Events():
		if ev.Type != EventDestroy || ev.Reason != ReasonTimeout {
			t.Fatalf("event %v %v", ev.Type, ev.Reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reaper did not remove an expired entry")
	}
}

// TestSystemClock runs the default configuration: the system clock, kept
// coarsely by the reaper.
func TestSystemClock(t *testing.T) {
	tbl, err := New(Config{ExpireInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	// The coarse clock moves with the reaper's ticks: wait for one, within
	// bounds, rather than sleep a guessed while.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e := mustGet(t, tbl, udpTuple("10.0.0.2:1", "192.0.2.9:53"))
		if e.Timeout < 30*time.Second {
			if e.Timeout < 25*time.Second {
				t.Fatalf("timeout %v moments after the packet, want a little under 30 s", e.Timeout)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the coarse clock did not move in 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A quiet table's reaper stops keeping the coarse clock, and ticks only
// to expire entries (an idle gateway wakes five times a second, not a
// hundred), and not at all once the table is empty: entries still
// expire, and listing the table does not wake the clock. The next packet
// reads the clock itself, so its entry's timeout counts from then, and
// the reaper keeps the clock again.
func TestSystemClockParks(t *testing.T) {
	// Ticks of 10 ms, expiry every 500 ms; once the table is empty, the
	// clock kept again after a packet is the packet's kick.
	const expiry = 500 * time.Millisecond
	tbl, err := New(Config{Timeouts: Timeouts{UDP: 300 * time.Millisecond}, ExpireInterval: expiry})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	until := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(d); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("not %s after %v", what, d)
			}
		}
	}
	parked := func() bool { return tbl.ticking.Load() == clockParked }
	track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	until("parked", 5*time.Second, parked)
	stopped := tbl.coarseNow.Load()
	until("expired while parked", 10*time.Second, func() bool { return tbl.Len() == 0 })
	tbl.List()
	wakes := tbl.reap.wakes.Load()
	time.Sleep(5 * expiry / 2) // past two expiry ticks
	if n := tbl.reap.wakes.Load() - wakes; n != 0 {
		t.Errorf("the reaper of an empty, parked table woke %d times in %v, want none", n, 5*expiry/2)
	}
	if !parked() || tbl.coarseNow.Load() != stopped {
		t.Fatalf("parked %v, clock moved by %v: want the clock left alone by the reaper's expiry and by List",
			parked(), time.Duration(tbl.coarseNow.Load()-stopped))
	}
	before := int64(time.Since(tbl.epoch))
	track(t, tbl, udpPacket(ap("10.0.0.2:2"), ap("192.0.2.9:53"), 1))
	if parked() || tbl.coarseNow.Load() < before {
		t.Fatalf("after a packet: parked %v, clock %v behind; want it read afresh and kept",
			parked(), time.Duration(before-tbl.coarseNow.Load()))
	}
	woken := tbl.coarseNow.Load()
	until("kept by the reaper again", time.Second, func() bool { return tbl.coarseNow.Load() != woken })
}

func TestEvents(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	sub := tbl.Subscribe(64)
	c, s := ap("10.0.0.2:1234"), ap("192.0.2.9:53")
	track(t, tbl, udpPacket(c, s, 1))
	track(t, tbl, udpPacket(s, c, 1))
	clk.Advance(3 * time.Second)
	track(t, tbl, udpPacket(c, s, 1))
	track(t, tbl, udpPacket(ap("10.0.0.2:1235"), s, 1))
	track(t, tbl, udpPacket(ap("10.0.0.2:1236"), s, 1))
	tbl.Delete(0, udpTuple("10.0.0.2:1235", "192.0.2.9:53"))
	clk.Advance(31 * time.Second)
	tbl.Expire(0)
	track(t, tbl, udpPacket(ap("10.0.0.2:1237"), s, 1))
	tbl.Flush()
	want := []string{
		"NEW none 1", "UPDATE none 1", "UPDATE none 1", "NEW none 2", "NEW none 3",
		"DESTROY deleted 2", "DESTROY timeout 3", "NEW none 4",
	}
	for i, w := range want {
		ev := <-sub.Events()
		if got := fmt.Sprintf("%v %v %d", ev.Type, ev.Reason, ev.Entry.ID); got != w {
			t.Fatalf("event %d: %q, want %q", i, got, w)
		}
	}
	flushed := map[string]bool{}
	for range 2 {
		ev := <-sub.Events()
		flushed[fmt.Sprintf("%v %v %d", ev.Type, ev.Reason, ev.Entry.ID)] = true
	}
	if !flushed["DESTROY flushed 1"] || !flushed["DESTROY flushed 4"] {
		t.Fatalf("flush events %v", flushed)
	}
	if len(sub.Events()) != 0 {
		t.Fatalf("%d extra events", len(sub.Events()))
	}
	// A full buffer drops events and counts them; the packet path goes on.
	small := tbl.Subscribe(1)
	for i := range 5 {
		track(t, tbl, udpPacket(netip.AddrPortFrom(ip("10.0.0.9"), uint16(i+1)), s, 1))
	}
	if small.Lost() != 4 || tbl.Stats().EventsLost != 4 {
		t.Fatalf("lost %d, want 4", small.Lost())
	}
	small.Close()
	small.Close()
	if _, ok := <-small.Events(); !ok {
		t.Fatal("Close lost the event already buffered")
	}
	if _, ok := <-small.Events(); ok {
		t.Fatal("closed subscription still delivers")
	}
	tbl.Close()
	if _, ok := <-sub.Events(); ok {
		for range sub.Events() {
		}
	}
	if _, err := tbl.Track(0, decode(t, udpPacket(c, s, 1)), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Track after Close: %v", err)
	}
	if err := tbl.Close(); err != nil {
		t.Fatal(err)
	}
}

// A subscription to some types of event gets those only, in order, beside
// one that takes all; with no subscriber of a type, the table builds no
// event of it (active says so to the packet path).
func TestSubscribeTo(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	all := tbl.Subscribe(64)
	gone := tbl.SubscribeTo(64, EventDestroy)
	none := tbl.SubscribeTo(64, EventType(9))
	born := tbl.SubscribeTo(64, EventNew, EventDestroy)
	c, s := ap("10.0.0.2:1234"), ap("192.0.2.9:53")
	track(t, tbl, udpPacket(c, s, 1))
	track(t, tbl, udpPacket(s, c, 1)) // an update: the first reply
	clk.Advance(31 * time.Second)
	tbl.Expire(0)
	for _, sc := range []struct {
		sub  *Subscription
		want []string
	}{
		{all, []string{"NEW 1", "UPDATE 1", "DESTROY 1"}},
		{gone, []string{"DESTROY 1"}},
		{born, []string{"NEW 1", "DESTROY 1"}},
		{none, nil},
	} {
		var got []string
		for len(sc.sub.Events()) > 0 {
			ev := <-sc.sub.Events()
			got = append(got, fmt.Sprintf("%v %d", ev.Type, ev.Entry.ID))
		}
		if !slices.Equal(got, sc.want) {
			t.Errorf("subscription to %03b: events %q, want %q", sc.sub.types, got, sc.want)
		}
	}
	all.Close()
	born.Close()
	none.Close()
	if tbl.subs.active(EventNew) || tbl.subs.active(EventUpdate) || !tbl.subs.active(EventDestroy) {
		t.Errorf("with a subscriber of destroy events alone: active new %v, update %v, destroy %v; want destroy only",
			tbl.subs.active(EventNew), tbl.subs.active(EventUpdate), tbl.subs.active(EventDestroy))
	}
	gone.Close()
	if tbl.subs.active(EventDestroy) {
		t.Error("no subscriber left, and destroy events still built")
	}
}

// A proxy's flow whose reply tuple, its own socket's, an entry of a
// socket gone still holds (a connection the table keeps in TIME_WAIT, the
// host's port given again) replaces that entry with Supersede, which is
// destroyed as closed; without it, the new flow is refused.
func TestFixedReplySupersede(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	sub := tbl.SubscribeTo(8, EventDestroy)
	srv := ap("192.0.2.9:53")
	reply := udpTuple("192.0.2.9:53", "198.51.100.1:33000") // the host socket's
	old, err := tbl.Track(0, decode(t, udpPacket(ap("10.0.0.2:40000"), srv, 1)), FixedReply{Reply: reply, Status: SrcNAT})
	if err != nil {
		t.Fatal(err)
	}
	next := decode(t, udpPacket(ap("10.0.0.2:40001"), srv, 1))
	if _, err := tbl.Track(0, next, FixedReply{Reply: reply, Status: SrcNAT}); !errors.Is(err, ErrReplyInUse) {
		t.Fatalf("without Supersede: %v, want ErrReplyInUse", err)
	}
	res, err := tbl.Track(0, next, FixedReply{Reply: reply, Status: SrcNAT, Supersede: true})
	if err != nil || !res.Created || res.Reply() != reply {
		t.Fatalf("with Supersede: %+v, %v; want a new entry with the reply %v", res, err, reply)
	}
	if _, _, ok := tbl.Get(0, old.Orig()); ok || tbl.Len() != 1 {
		t.Fatalf("the old entry is still there (%d entries)", tbl.Len())
	}
	if ev := <-sub.Events(); ev.Type != EventDestroy || ev.Reason != ReasonClosed || ev.Entry.ID != old.ID {
		t.Fatalf("event %v %v of entry %d, want entry %d destroyed as closed", ev.Type, ev.Reason, ev.Entry.ID, old.ID)
	}
	// A reply tuple that is another entry's original one is a live flow's:
	// refused still, even through a pointer.
	_, err = tbl.Track(0, decode(t, udpPacket(ap("10.0.0.2:40002"), srv, 1)), &FixedReply{Reply: res.Orig(), Status: SrcNAT, Supersede: true})
	if !errors.Is(err, ErrReplyInUse) || tbl.Len() != 1 {
		t.Fatalf("superseding an original tuple: %v, %d entries; want ErrReplyInUse and the entry kept", err, tbl.Len())
	}
	third, err := tbl.Track(0, decode(t, udpPacket(ap("10.0.0.2:40003"), srv, 1)), &FixedReply{Reply: reply, Status: SrcNAT, Supersede: true})
	if err != nil || !third.Created {
		t.Fatalf("Supersede through a *FixedReply: %+v, %v", third, err)
	}
}

func TestDeleteFlushSetMark(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	res := track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	if !tbl.SetMark(0, res.Reply(), 42) || mustGet(t, tbl, res.Orig()).Mark != 42 {
		t.Fatal("SetMark by the reply tuple")
	}
	if !tbl.Delete(0, res.Reply()) || tbl.Delete(0, res.Orig()) || tbl.Len() != 0 {
		t.Fatal("Delete by the reply tuple")
	}
	// DeleteID removes the entry with that ID only: not another that
	// took the tuple since.
	old := track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	tbl.Delete(0, old.Orig())
	res = track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	if tbl.DeleteID(0, res.Orig(), old.ID) || tbl.Len() != 1 {
		t.Fatal("DeleteID removed an entry with another ID")
	}
	if !tbl.DeleteID(0, res.Orig(), res.ID) || tbl.Len() != 0 {
		t.Fatal("DeleteID did not remove the entry with its ID")
	}
	for i := range 3000 {
		track(t, tbl, udpPacket(netip.AddrPortFrom(ip("10.0.0.2"), uint16(i+1)), ap("192.0.2.9:53"), 1))
	}
	if n := tbl.Flush(); n != 3000 || tbl.Len() != 0 {
		t.Fatalf("Flush removed %d, left %d", n, tbl.Len())
	}
}

func TestGenericAndFragments(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	esp := ipPacket(ip("10.0.0.2"), ip("192.0.2.9"), 50, make([]byte, 24))
	res := track(t, tbl, esp)
	if !res.Created || res.Orig().Proto != 50 {
		t.Fatalf("generic %+v", res)
	}
	if res := track(t, tbl, ipPacket(ip("192.0.2.9"), ip("10.0.0.2"), 50, nil)); res.Dir != Reply {
		t.Fatalf("generic reply %+v", res)
	}
	clk.Advance(600 * time.Second)
	if tbl.Expire(0) != 1 {
		t.Fatal("generic flow alive after 600 s")
	}
	frag := udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 100)
	frag[6] = 0x20 // more fragments
	var p Packet
	if err := p.Decode(frag); err != nil || p.Kind != KindFragment {
		t.Fatalf("fragment decoded as %v %v", p.Kind, err)
	}
	if _, err := tbl.Track(0, &p, nil); !errors.Is(err, ErrFragment) {
		t.Fatalf("fragment: %v", err)
	}
}

// GRE has Linux's timeouts of its own (nf_conntrack_proto_gre): 30 s
// until a reply, then, from the first packet after it, 180 s and assured.
func TestGRETimeouts(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	out := ipPacket(ip("10.0.0.2"), ip("192.0.2.9"), 47, make([]byte, 24))
	back := ipPacket(ip("192.0.2.9"), ip("10.0.0.2"), 47, make([]byte, 24))
	res := track(t, tbl, out)
	tp := res.Orig()
	for i, c := range []struct {
		pkt     []byte
		timeout time.Duration
		assured bool
	}{{out, 30 * time.Second, false}, {back, 30 * time.Second, false}, {out, 180 * time.Second, true}, {back, 180 * time.Second, true}} {
		if i > 0 {
			clk.Advance(time.Second)
			track(t, tbl, c.pkt)
		}
		e := mustGet(t, tbl, tp)
		if e.Timeout != c.timeout || (e.Status&Assured != 0) != c.assured {
			t.Fatalf("packet %d: timeout %v, status %v; want %v, assured %v", i+1, e.Timeout, e.Status, c.timeout, c.assured)
		}
	}
	clk.Advance(180 * time.Second)
	if tbl.Expire(0) != 1 {
		t.Fatal("GRE flow alive after 180 s idle")
	}
}

func TestTimeoutsConfig(t *testing.T) {
	var to Timeouts
	if err := to.Set("udp", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := to.Set("tcp_establish", time.Second); err == nil {
		t.Fatal("unknown name accepted")
	}
	if err := to.Set("icmp", 0); err == nil {
		t.Fatal("zero accepted")
	}
	if _, err := New(Config{Timeouts: Timeouts{UDP: -time.Second}}); err == nil {
		t.Fatal("negative timeout accepted")
	}
	if _, err := New(Config{Max: -1}); err == nil {
		t.Fatal("negative Max accepted")
	}
	tbl, clk := newTable(t, Config{Timeouts: to})
	track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	clk.Advance(5 * time.Second)
	if tbl.Expire(0) != 1 {
		t.Fatal("configured UDP timeout not applied")
	}
	if len(TimeoutNames()) != 17 {
		t.Fatalf("names %v", TimeoutNames())
	}
}

func TestTrackExistingFlowDoesNotAllocate(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	sub := tbl.Subscribe(1) // events on: still nothing allocated
	defer sub.Close()
	udp := decode(t, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	k := newConn(t, tbl, nil, ap("10.0.0.2:2"), ap("192.0.2.9:80"))
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	ack := decode(t, tcpPacket(k.c, k.s, seg{flags: TCPAck, seq: k.cNext, ack: k.sNext, win: 4096}))
	if _, err := tbl.Track(0, udp, nil); err != nil {
		t.Fatal(err)
	}
	raw := udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1)
	var p Packet
	if n := testing.AllocsPerRun(1000, func() {
		p.Decode(raw)
		tbl.Track(0, &p, nil)
		tbl.Track(0, ack, nil)
		tbl.Taken(0, p.Tuple)
	}); n != 0 {
		t.Fatalf("%v allocations per existing-flow lookup", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	tbl, clk := newTable(t, Config{Max: 2000})
	sub := tbl.Subscribe(128)
	var readers, packets, house sync.WaitGroup
	readers.Add(1)
	go func() { // a slow subscriber
		defer readers.Done()
		for range sub.Events() {
		}
	}()
	for g := range 4 {
		packets.Add(1)
		go func() {
			defer packets.Done()
			// Two pairs of goroutines compete for the same mapped ports.
			n := &snat{gw: netip.AddrFrom4([4]byte{203, 0, 113, byte(g % 2)})}
			var p Packet
			for i := range 20000 {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(g), byte(i % 50), 1}), uint16(1000+i%3000))
				p.Decode(udpPacket(c, ap("192.0.2.9:53"), 1))
				res, err := tbl.Track(0, &p, n)
				if err != nil && !errors.Is(err, ErrTableFull) && !errors.Is(err, ErrReplyInUse) && err.Error() != "ports exhausted" {
					t.Error(err)
					return
				}
				if err == nil && i%3 == 0 {
					p.Decode(udpPacket(netip.AddrPortFrom(res.Reply().Src, res.Reply().SrcPort), netip.AddrPortFrom(res.Reply().Dst, res.Reply().DstPort), 1))
					tbl.Track(0, &p, nil)
				}
				if i%5000 == 0 {
					tbl.Flush()
				}
			}
		}()
	}
	stop := make(chan struct{})
	house.Add(1)
	go func() {
		defer house.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.Advance(time.Second)
			tbl.Expire(200)
			tbl.List()
			if tbl.Len() > tbl.Max() {
				t.Errorf("%d entries over the cap", tbl.Len())
			}
			runtime.Gosched()
		}
	}()
	packets.Wait()
	close(stop)
	house.Wait()
	sub.Close()
	readers.Wait()
	checkInvariants(t, tbl)
	if st := tbl.Stats(); st.Inserted == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// checkInvariants checks that every live entry is found by both of its
// tuples in the right direction, that no tuple belongs to two entries, and
// that the table keeps its cap.
func checkInvariants(t testing.TB, tbl *Table) {
	t.Helper()
	if tbl.Len() > tbl.Max() {
		t.Fatalf("%d entries, cap %d", tbl.Len(), tbl.Max())
	}
	seen := map[key]uint64{}
	for _, e := range tbl.List() {
		for d, tp := range [2]Tuple{e.Orig, e.Reply} {
			k := makeKey(e.Zone, tp)
			if id, dup := seen[k]; dup && id != e.ID {
				t.Fatalf("tuple %v in entries %d and %d", tp, id, e.ID)
			}
			seen[k] = e.ID
			got, dir, ok := tbl.Get(e.Zone, tp)
			if !ok || got.ID != e.ID || (dir != Dir(d) && e.Orig != e.Reply) {
				t.Fatalf("entry %d not found by its %v tuple %v", e.ID, Dir(d), tp)
			}
		}
	}
}

// A proxy-terminated flow: the entry holds what crossed the proxy, the
// table sees the conversation between one end and the proxy. Outbound,
// the container's packets carry the original tuple and the proxy's
// answers its reverse; inbound (a published port), the proxy's packets
// carry the reverse of the reply tuple and the container's the reply
// tuple. Either way the state machine, window and counters follow that
// conversation, and nothing is ever created.
func TestTrackTerminated(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	ctr, remote, host := ap("172.17.0.4:40000"), ap("192.0.2.9:443"), ap("192.168.2.116:51000")
	syn := decode(t, tcpPacket(ctr, remote, seg{flags: TCPSyn, seq: 100}))
	if _, ok := tbl.TrackTerminated(0, syn, false); ok || tbl.Len() != 0 {
		t.Fatal("TrackTerminated took a packet of no flow, or created an entry")
	}
	// The proxy opened its host socket: it creates the entry with the SYN.
	reply := Tuple{Src: remote.Addr(), Dst: host.Addr(), SrcPort: remote.Port(), DstPort: host.Port(), Proto: ProtoTCP}
	if _, err := tbl.Track(0, syn, FixedReply{Reply: reply, Status: SrcNAT}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		from, to netip.AddrPort
		s        seg
		dir      Dir
	}{
		{remote, ctr, seg{flags: TCPSyn | TCPAck, seq: 5000, ack: 101}, Reply},
		{ctr, remote, seg{flags: TCPAck, seq: 101, ack: 5001}, Original},
		{ctr, remote, seg{flags: TCPAck | TCPPsh, seq: 101, ack: 5001, data: 100}, Original},
		{remote, ctr, seg{flags: TCPAck, seq: 5001, ack: 201, data: 1000}, Reply},
	}
	for i, st := range steps {
		res, ok := tbl.TrackTerminated(0, decode(t, tcpPacket(st.from, st.to, st.s)), st.dir == Reply)
		if !ok || res.Dir != st.dir || res.Class == ClassInvalid {
			t.Fatalf("step %d: ok %v, dir %v, class %v; want dir %v", i, ok, res.Dir, res.Class, st.dir)
		}
	}
	e := mustGet(t, tbl, syn.Tuple)
	if e.TCPState != TCPEstablished || e.Reply != reply || e.Packets != [2]uint64{3, 2} {
		t.Fatalf("entry %v", e)
	}
	// Out of window for the conversation: invalid, as Track would say.
	if res, ok := tbl.TrackTerminated(0, decode(t, tcpPacket(remote, ctr, seg{flags: TCPAck, seq: 5001 + 1<<30, ack: 201, data: 10})), true); !ok || res.Class != ClassInvalid {
		t.Fatalf("out-of-window answer: ok %v class %v", ok, res.Class)
	}

	// Inbound through a published port: the client 192.168.2.104 came to
	// the host's 8080, the proxy dials the container's 80 from the
	// client's address.
	client, pub, web := ap("192.168.2.104:52140"), ap("192.168.2.116:8080"), ap("172.17.0.4:80")
	orig := Tuple{Src: client.Addr(), Dst: pub.Addr(), SrcPort: client.Port(), DstPort: pub.Port(), Proto: ProtoTCP}
	in := Tuple{Src: web.Addr(), Dst: client.Addr(), SrcPort: web.Port(), DstPort: client.Port(), Proto: ProtoTCP}
	psyn := decode(t, tcpPacket(client, web, seg{flags: TCPSyn, seq: 7}))
	psyn.Tuple = orig // the entry is created under the tuple the client used
	if _, err := tbl.Track(0, psyn, FixedReply{Reply: in, Status: SrcNAT}); err != nil {
		t.Fatal(err)
	}
	for i, st := range []struct {
		from, to netip.AddrPort
		s        seg
		dir      Dir
	}{
		{web, client, seg{flags: TCPSyn | TCPAck, seq: 900, ack: 8}, Reply},
		{client, web, seg{flags: TCPAck, seq: 8, ack: 901}, Original},
	} {
		res, ok := tbl.TrackTerminated(0, decode(t, tcpPacket(st.from, st.to, st.s)), st.dir == Original)
		if !ok || res.Dir != st.dir || res.Class == ClassInvalid {
			t.Fatalf("inbound step %d: ok %v, dir %v, class %v; want dir %v", i, ok, res.Dir, res.Class, st.dir)
		}
	}
	if e := mustGet(t, tbl, orig); e.TCPState != TCPEstablished || e.Packets != [2]uint64{2, 1} {
		t.Fatalf("inbound entry %v", e)
	}
	if tbl.Len() != 2 {
		t.Fatalf("%d entries, want 2", tbl.Len())
	}
}

// seqSNAT maps the source to gw:port, the ports taken in turn from ports,
// one per call: a fully random allocator whose picks land on mappings of
// flows that expired but that the reaper has not reached yet (Taken says
// they are free, rightly).
type seqSNAT struct {
	gw    netip.Addr
	ports []uint16
	calls int
}

func (n *seqSNAT) Translate(tbl *Table, zone Zone, orig Tuple) (Tuple, Status, error) {
	r, _ := orig.Reverse()
	r.Dst, r.DstPort = n.gw, n.ports[n.calls%len(n.ports)]
	n.calls++
	if tbl.Taken(zone, r) {
		return Tuple{}, 0, errors.New("taken")
	}
	return r, SrcNAT, nil
}

// A table far from full must not refuse a new flow with ErrTableFull
// because the reply tuples its Translator chose were held by expired,
// unreaped entries: each is removed on the spot, and it is room made,
// not a lost race.
func TestExpiredClashesAreNotTableFull(t *testing.T) {
	tbl, clk := newTable(t, Config{Max: 1000})
	gw := ip("203.0.113.1")
	srv := ap("198.51.100.200:53")
	for i := range 4 {
		c := netip.AddrPortFrom(ip("10.1.2.3"), uint16(2000+i))
		if _, err := tbl.Track(0, decode(t, udpPacket(c, srv, 1)), &seqSNAT{gw: gw, ports: []uint16{uint16(40000 + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(31 * time.Second) // all four expired; no reaper has run
	nat := &seqSNAT{gw: gw, ports: []uint16{40000, 40001, 40002, 40003, 40004}}
	res, err := tbl.Track(0, decode(t, udpPacket(ap("10.9.9.9:5555"), srv, 1)), nat)
	if err != nil {
		t.Fatalf("new flow on a table holding %d of %d entries: %v (stats %+v)", tbl.Len(), tbl.Max(), err, tbl.Stats())
	}
	if !res.Created {
		t.Fatalf("%+v", res)
	}
}

// A full table of unassured flows never refuses a new flow, whatever the
// contention; and any ErrTableFull returned is counted in Stats().Refused.
func TestTableFullUnderContention(t *testing.T) {
	tbl, _ := newTable(t, Config{Max: 4})
	var full atomic.Uint64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p Packet
			for i := range 20000 {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(g), 0, 1}), uint16(1+i))
				p.Decode(udpPacket(c, ap("192.0.2.9:53"), 1))
				if _, err := tbl.Track(0, &p, nil); errors.Is(err, ErrTableFull) {
					full.Add(1)
				} else if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	// Every entry is an unassured UDP flow, so early drop can always
	// make room: Linux (__nf_conntrack_alloc, early_drop) refuses only
	// when nothing near could be dropped, and counts it.
	st := tbl.Stats()
	if full.Load() != 0 || st.Refused != full.Load() {
		t.Fatalf("%d ErrTableFull returned with every entry evictable; Refused %d (%+v)", full.Load(), st.Refused, st)
	}
}

// hookClock calls hook at its at-th reading, once.
type hookClock struct {
	base  time.Time
	calls atomic.Int32
	at    atomic.Int32
	hook  func()
}

func (c *hookClock) Now() time.Time {
	if n := c.calls.Add(1); n == c.at.Load() && c.hook != nil {
		h := c.hook
		c.hook = nil
		h()
	}
	return c.base
}

// A full table whose entries other goroutines evict between a new flow's
// failed allocation and its early-drop scan (what
// TestTableFullUnderContention's goroutines do to one another) has room:
// the new flow must not get ErrTableFull from an empty table.
// Track's eviction finds nothing to evict because others emptied the
// table meanwhile (evicting for flows of their own, not inserted yet):
// the table has room, and the new flow takes it, not ErrTableFull.
func TestNoTableFullFromEmptiedTable(t *testing.T) {
	clk := &hookClock{base: time.Unix(1e9, 0)}
	tbl, err := New(Config{Max: 4, Clock: clk, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	var p Packet
	for i := range 4 {
		p.Decode(udpPacket(netip.AddrPortFrom(ip("10.0.0.1"), uint16(1000+i)), ap("192.0.2.9:53"), 1))
		if _, err := tbl.Track(0, &p, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The next Track reads the clock in Track, in insert, and at the
	// start of earlyDrop, after its allocation failed: there, others
	// evict every entry (and have not inserted theirs yet).
	clk.hook = func() { tbl.Flush() }
	clk.at.Store(clk.calls.Load() + 3)
	p.Decode(udpPacket(ap("10.0.0.2:5000"), ap("192.0.2.9:53"), 1))
	_, err = tbl.Track(0, &p, nil)
	if errors.Is(err, ErrTableFull) {
		t.Fatalf("ErrTableFull from a table of %d/%d entries (stats %+v)", tbl.Len(), tbl.Max(), tbl.Stats())
	}
	if err != nil {
		t.Fatal(err)
	}
}
