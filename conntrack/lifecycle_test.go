package conntrack

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

// An expired entry not reaped yet is "never found": Delete, DeleteID and
// SetMark must not find it either (the kernel's ctnetlink delete and
// update look up with __nf_conntrack_find_get, which skips expired
// entries and gc's them). Its Destroy reason is timeout, not deleted.
func TestDeleteExpired(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	sub := tbl.Subscribe(8)
	tp := udpTuple("10.0.0.2:1", "192.0.2.9:53")
	res := track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	<-sub.Events()
	clk.Advance(31 * time.Second)
	if _, _, ok := tbl.Get(0, tp); ok {
		t.Fatal("Get found an expired entry")
	}
	if tbl.SetMark(0, tp, 7) {
		t.Error("SetMark set the mark of an expired entry")
	}
	if tbl.DeleteID(0, tp, res.ID) {
		t.Error("DeleteID reported deleting an expired entry, which Get says is not there")
	}
	select {
	case ev := <-sub.Events():
		if ev.Reason != ReasonTimeout {
			t.Errorf("expired entry destroyed with reason %v, want timeout", ev.Reason)
		}
	default:
	}
	if st := tbl.Stats(); st.Deleted != 0 {
		t.Errorf("stats: deleted %d expired %d; an expired entry counts as expired", st.Deleted, st.Expired)
	}
}

// Readers of the table do not wake a parked clock: List did not, but Get
// and Taken did, and the uplink's sweep calls Get every second.
func TestLookupLeavesClockParked(t *testing.T) {
	tbl, err := New(Config{ExpireInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	tp := udpTuple("10.0.0.2:1", "192.0.2.9:53")
	track(t, tbl, udpPacket(ap("10.0.0.2:1"), ap("192.0.2.9:53"), 1))
	for end := time.Now().Add(5 * time.Second); tbl.ticking.Load() != clockParked; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("never parked")
		}
	}
	tbl.List()
	if tbl.ticking.Load() != clockParked {
		t.Fatal("List woke the clock")
	}
	mustGet(t, tbl, tp)
	if tbl.ticking.Load() != clockParked {
		t.Error("Get woke the parked clock")
	}
}

// The reaper picks its victims under a shard's read lock and destroys
// them after. A packet whose time was read before the reaper's finds such
// an entry live and refreshes it: the reaper then looks at its deadline
// again, as Linux's gc does before it kills (nf_ct_should_gc), and spares
// it. Before, it destroyed a live flow's entry as timed out.
func TestReaperSparesRefreshedEntry(t *testing.T) {
	tbl, clk := newTable(t, Config{Max: 8192})
	if len(tbl.shards) < 2 {
		t.Fatal("want two shards")
	}
	// A flow whose tuples live in two shards.
	s := ap("192.0.2.9:53")
	var cl netip.AddrPort
	for p := uint16(1); ; p++ {
		cl = netip.AddrPortFrom(ip("10.0.0.2"), p)
		k0, k1 := makeKey(0, udpTuple(cl.String(), s.String())), makeKey(0, udpTuple(s.String(), cl.String()))
		if tbl.shardOf(k0.hash(tbl.seed)) != tbl.shardOf(k1.hash(tbl.seed)) {
			break
		}
	}
	sub := tbl.Subscribe(8)
	track(t, tbl, udpPacket(cl, s, 1))
	<-sub.Events()
	rk := makeKey(0, udpTuple(s.String(), cl.String()))
	sb := &tbl.shards[tbl.shardOf(rk.hash(tbl.seed))]

	clk.Advance(30*time.Second - time.Millisecond) // 1 ms before the deadline
	sb.mu.Lock()                                   // the reply packet reads 'now', then waits for its shard
	done := make(chan Result)
	go func() { done <- track(t, tbl, udpPacket(s, cl, 1)) }()
	time.Sleep(100 * time.Millisecond)
	clk.Advance(2 * time.Millisecond) // the reaper's 'now' is 1 ms past the deadline
	tbl.slab.mu.Lock()                // hold the reaper between its scan and its deleteID
	expired := make(chan int)
	go func() { expired <- tbl.Expire(0) }()
	time.Sleep(100 * time.Millisecond) // the scan of the original's shard picked the entry
	sb.mu.Unlock()
	res := <-done // the packet found the entry live and refreshed it
	tbl.slab.mu.Unlock()
	<-expired
	if res.Class != ClassEstablished {
		t.Fatalf("reply packet class %v", res.Class)
	}
	if _, _, ok := tbl.Get(0, udpTuple(cl.String(), s.String())); !ok {
		<-sub.Events() // the reply's Update
		ev := <-sub.Events()
		t.Errorf("an entry refreshed by a packet 1 ms ago (30 s to live) was destroyed: %v %v", ev.Type, ev.Reason)
	}
}

// Every entry created gets exactly one Destroy, under concurrent
// Track/Delete/Expire/Flush.
func TestDestroyExactlyOnce(t *testing.T) {
	tbl, clk := newTable(t, Config{Max: 256})
	sub := tbl.Subscribe(1 << 20)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p Packet
			for i := range 5000 {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(g), 0, 1}), uint16(1000+i%400))
				p.Decode(udpPacket(c, ap("192.0.2.9:53"), 1))
				res, err := tbl.Track(0, &p, nil)
				if err == nil && i%7 == 0 {
					tbl.DeleteID(0, res.Orig(), res.ID)
				}
				if i%1000 == 0 {
					tbl.Flush()
				}
			}
		}()
	}
	stop := make(chan struct{})
	var hk sync.WaitGroup
	hk.Add(1)
	go func() {
		defer hk.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.Advance(5 * time.Second)
			tbl.Expire(50)
		}
	}()
	wg.Wait()
	close(stop)
	hk.Wait()
	tbl.Flush()
	news, destroys := map[uint64]int{}, map[uint64]int{}
	for len(sub.Events()) > 0 {
		ev := <-sub.Events()
		switch ev.Type {
		case EventNew:
			news[ev.Entry.ID]++
		case EventDestroy:
			destroys[ev.Entry.ID]++
		}
	}
	if sub.Lost() != 0 {
		t.Fatalf("lost %d", sub.Lost())
	}
	for id, n := range news {
		if n != 1 || destroys[id] != 1 {
			t.Errorf("entry %d: %d new, %d destroy", id, n, destroys[id])
		}
	}
	for id := range destroys {
		if news[id] == 0 {
			t.Errorf("entry %d destroyed, never created", id)
		}
	}
	st := tbl.Stats()
	if got := st.Expired + st.Deleted + st.EarlyDrop; got != st.Inserted {
		t.Errorf("inserted %d, removed %d (%+v)", st.Inserted, got, st)
	}
}

// Close races Track, Subscribe, List and Flush on other goroutines, and
// the expiry goroutine: nothing panics, and nothing is left running.
func TestCloseRaces(t *testing.T) {
	for round := range 20 {
		tbl, err := New(Config{Max: 64, ExpireInterval: time.Millisecond, ExpireBatch: 8, Timeouts: Timeouts{UDP: time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sub := tbl.Subscribe(4)
				var p Packet
				for i := range 3000 {
					c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(g), byte(round), 1}), uint16(1+i%100))
					p.Decode(udpPacket(c, ap("192.0.2.9:53"), 1))
					tbl.Track(0, &p, nil)
					if i%100 == 0 {
						sub.Close()
						sub = tbl.Subscribe(4)
						tbl.List()
						tbl.Flush()
					}
					select {
					case <-sub.Events():
					default:
					}
				}
				sub.Close()
			}()
		}
		time.Sleep(time.Millisecond * time.Duration(round%5))
		tbl.Close()
		wg.Wait()
	}
}

// ICMP errors are RELATED to the entry they quote: a router's error about
// a ping whose id the NAT remapped finds the remapped entry, in the reply
// direction; an error quoting GRE finds the GRE entry; and a related
// packet neither refreshes its entry's timeout nor counts on it.
func TestRelatedErrors(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	gw := ip("203.0.113.1")
	nat := &snat{gw: gw}
	c, s := ip("10.1.2.3"), ip("198.51.100.200")
	// two pings with the same id: the second is mapped to id 8.
	r1, _ := tbl.Track(0, decode(t, icmpPacket(c, s, 8, 0, 7, nil)), nat)
	r2, err := tbl.Track(0, decode(t, icmpPacket(ip("10.1.2.4"), s, 8, 0, 7, nil)), nat)
	if err != nil || r2.Reply().ICMPID() != 8 {
		t.Fatalf("%+v %v", r2, err)
	}
	// error from a router about the translated second ping
	q := icmpPacket(gw, s, 8, 0, 8, nil)
	res := track(t, tbl, icmpPacket(ip("192.0.2.254"), gw, 11, 0, 0, q[:28]))
	if res.Class != ClassRelated || res.ID != r2.ID || res.Dir != Reply {
		t.Fatalf("%+v", res)
	}
	// GRE quoted
	g := track(t, tbl, ipPacket(c, s, 47, make([]byte, 8)))
	gq := ipPacket(c, s, 47, make([]byte, 8))
	res = track(t, tbl, icmpPacket(ip("192.0.2.254"), c, 3, 1, 0, gq[:28]))
	if res.Class != ClassRelated || res.ID != g.ID || res.Dir != Reply {
		t.Fatalf("gre %+v", res)
	}
	// Related does not refresh or count
	before := mustGet(t, tbl, r1.Orig())
	clk.Advance(10 * time.Second)
	q1 := icmpPacket(gw, s, 8, 0, 7, nil)
	track(t, tbl, icmpPacket(ip("192.0.2.254"), gw, 11, 0, 0, q1[:28]))
	after := mustGet(t, tbl, r1.Orig())
	if after.Timeout != before.Timeout-10*time.Second || after.Packets != before.Packets {
		t.Fatalf("before %v after %v", before, after)
	}
}
