package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
)

func TestNeighbourTable(t *testing.T) {
	nt := newNeighTable()
	a := netip.MustParseAddr("192.168.2.104")
	mac := bridge.MustParseMAC("0a:1b:2c:3d:4e:5f")
	var now int64
	if _, ok := nt.lookup(a, now); ok {
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
	if m, ok := nt.lookup(a, now); !ok || m != mac {
		t.Fatal("learnt address not found")
	}
	// A resolved entry goes stale, then away.
	if _, ok := nt.lookup(a, now+int64(neighReachable)+1); ok {
		t.Fatal("stale entry still used")
	}
	nt.expire(now + 4*int64(neighReachable) + 1)
	if len(nt.list()) != 0 {
		t.Fatal("stale entry not expired")
	}
	// An address that never answers is given up with its queue.
	b := netip.MustParseAddr("192.168.2.105")
	nt.hold(b, []byte{1}, now)
	if n := nt.expire(now + int64(neighGiveUp) + 1); n != 1 || len(nt.list()) != 0 {
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

// A full table makes room for a new neighbour by dropping the one
// confirmed longest ago, if that was more than neighGrace ago, as Linux's
// forced gc drops entries not updated for 5 s: a container that filled
// the table by spoofing senders in ARP requests kept one started later
// from being resolved until the entries expired (4 minutes); entries
// confirmed within the grace are kept, so a flood cannot push out those
// in use.
func TestNeighFullEvictsOldest(t *testing.T) {
	nt := newNeighTable()
	attacker := bridge.MustParseMAC("02:42:ac:11:66:66")
	for i := range neighMax {
		nt.learn(netip.AddrFrom4([4]byte{172, 17, byte(100 + i/250), byte(1 + i%250)}), attacker, int64(i), true)
	}
	newIP, newMAC := netip.MustParseAddr("172.17.0.9"), bridge.MustParseMAC("02:42:ac:11:00:09")
	soon := int64(time.Second)
	nt.learn(newIP, newMAC, soon, true)
	if _, ok := nt.lookup(newIP, soon); ok {
		t.Error("a full table of entries confirmed a second ago made room: a flood could push out entries in use")
	}
	late := int64(neighGrace + time.Second)
	nt.learn(newIP, newMAC, late, true)
	if mac, ok := nt.lookup(newIP, late); !ok || mac != newMAC {
		t.Fatalf("a neighbour after %d others %v later: %v %v, want resolved", neighMax, time.Duration(late), mac, ok)
	}
	if n := len(nt.list()); n != neighMax {
		t.Errorf("%d entries, want the cap, %d", n, neighMax)
	}
	if _, ok := nt.m[netip.AddrFrom4([4]byte{172, 17, 100, 1})]; ok {
		t.Error("the oldest entry is still there")
	}
}
