package conntrack

import (
	"net/netip"
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
