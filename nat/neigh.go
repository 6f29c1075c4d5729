package nat

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usernat/usernat/bridge"
)

// Neighbour table limits. Every table here has a cap and an expiry.
const (
	neighMax        = 4096                   // resolved and pending entries together
	neighReachable  = 60 * time.Second       // a resolved entry is used without asking this long after its last confirmation
	neighRetry      = time.Second            // between ARP requests for one address
	neighGiveUp     = 3 * time.Second        // a pending entry and its queue are dropped after this; a stale one stops being used
	neighGrace      = 5 * time.Second        // a full table drops no entry a packet went to more recently
	neighRefuse     = 100 * time.Millisecond // a full table that found no entry to drop says no this long without looking
	neighQueueLen   = 8                      // packets held per unresolved address
	neighQueueBytes = 1 << 20                // and at most this much held in all
)

// neigh is one entry of the neighbour (ARP) table.
type neigh struct {
	mac      bridge.MAC
	resolved bool
	seen     int64        // when last confirmed (resolved) or first asked for (pending)
	asked    atomic.Int64 // when the last request went out
	probing  atomic.Int64 // resolved: when it was first used stale (0: not since its confirmation)
	queue    [][]byte
	// used is when a packet last went to it (to the second; 0: never),
	// which a full table keeps it for.
	used atomic.Int64
}

// neighTable maps the IPv4 addresses on one link to MAC addresses and holds
// the packets that wait for a resolution. Lookups of resolved neighbours
// take only the read lock.
type neighTable struct {
	mu       sync.RWMutex
	m        map[netip.Addr]*neigh
	queued   int      // bytes held in all queues, and in failed
	failed   [][]byte // packets of entries that expired pending, for expire to report
	refused  int64    // when a full table last found no entry to drop,
	refusing bool     // if it has
	victims  []victim // found by the last pass of a full table, to drop first
	cands    []victim // the pass's candidates, kept for the next pass (at most neighMax): victims is a part of it
}

func newNeighTable() *neighTable { return &neighTable{m: make(map[netip.Addr]*neigh)} }

// lookup returns the MAC of a resolved neighbour. One not confirmed for
// neighReachable is stale: still used, as Linux uses it while it probes
// (NUD_STALE, then NUD_PROBE), and probe says to ask it again (a request
// to its MAC, once per neighRetry); unconfirmed neighGiveUp after its
// first use stale, it is not found, and the caller asks the whole link
// again. A busy flow so never waits, nor loses packets, for a neighbour
// that is there.
func (t *neighTable) lookup(a netip.Addr, now int64) (mac bridge.MAC, ok, probe bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := t.m[a]
	if n == nil || !n.resolved {
		return bridge.MAC{}, false, false
	}
	if now-n.seen > int64(neighReachable) {
		// Probed from its first use since it went stale, however long
		// it lay unused (Linux's NUD_STALE lasts until then).
		since := n.probing.Load()
		if since == 0 && n.probing.CompareAndSwap(0, now) {
			since = now
		}
		if now-since > int64(neighGiveUp) {
			return bridge.MAC{}, false, false
		}
		asked := n.asked.Load()
		probe = now-asked >= int64(neighRetry) && n.asked.CompareAndSwap(asked, now)
	}
	if now-n.used.Load() >= int64(time.Second) { // a store a second, not one a packet
		n.used.Store(now)
	}
	return n.mac, true, probe
}

// learn records that a is at mac and returns the packets that waited for
// it, which the caller now sends. create says whether to add an entry the
// table does not have (an ARP reply to our request, or a request for us).
func (t *neighTable) learn(a netip.Addr, mac bridge.MAC, now int64, create bool) [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.m[a]
	if n == nil {
		if !create || !t.roomLocked(now) {
			return nil
		}
		n = &neigh{}
		t.m[a] = n
	}
	n.mac, n.resolved, n.seen = mac, true, now
	n.asked.Store(now - int64(neighRetry)) // stale, it is probed at once
	n.probing.Store(0)
	q := n.queue
	n.queue = nil
	for _, p := range q {
		t.queued -= len(p)
	}
	return q
}

// hold queues a copy of pkt for a, an address not resolved yet, and
// reports whether an ARP request should go out now.
func (t *neighTable) hold(a netip.Addr, pkt []byte, now int64) (ask bool, dropped bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.m[a]
	if n == nil {
		if !t.roomLocked(now) {
			return false, true
		}
		n = &neigh{seen: now}
		n.asked.Store(now - int64(neighRetry))
		t.m[a] = n
	} else if n.resolved {
		// Stale and unanswered (lookup's probes): asked again, of the
		// whole link, as a fresh resolution would be.
		n.resolved, n.seen = false, now
		n.asked.Store(now - int64(neighRetry))
	}
	if len(n.queue) < neighQueueLen && t.queued+len(pkt) <= neighQueueBytes {
		n.queue = append(n.queue, append([]byte(nil), pkt...))
		t.queued += len(pkt)
	} else {
		dropped = true
	}
	if now-n.asked.Load() >= int64(neighRetry) {
		n.asked.Store(now)
		ask = true
	}
	return ask, dropped
}

// roomLocked makes room for one entry, dropping expired ones, else the
// entry no packet went to for the longest time (never, first; then the
// one confirmed longest ago), if none went to it within neighGrace. Spoofed
// senders a container floods the table with in ARP requests are never
// used, and go before any neighbour in use, which the flood cannot push
// out; one started later is resolved at once. (Linux's forced gc, at
// gc_thresh3, likewise drops entries nobody holds.) Refused, it says no
// again without looking for neighRefuse, rather than scan the full table
// under the write lock on every packet. The caller holds t.mu.
func (t *neighTable) roomLocked(now int64) bool {
	if len(t.m) < neighMax {
		return true
	}
	if t.refusing && now-t.refused < int64(neighRefuse) {
		return false
	}
	// The victims the last pass found, in order, while they are still
	// as they were then (not used since, nor made anew): a flood of new
	// addresses (a scan of the link) costs a pass per neighEvictBatch of
	// them, not one each.
	for len(t.victims) > 0 {
		v := t.victims[0]
		t.victims = t.victims[1:]
		if n := t.m[v.a]; n != nil && n.used.Load() == v.used && n.seen == v.seen {
			if n.expiredAt(now) {
				t.failLocked(v.a, n) // reported, as a pass reports it
			} else {
				t.dropLocked(v.a)
			}
			return true
		}
	}
	// One pass: expired entries go; among the others, the victims are
	// found, and the first dropped only if nothing expired. The victims
	// are all taken, so their array is the pass's again.
	cands := t.cands[:0]
	expired := false
	for a, n := range t.m {
		if n.expiredAt(now) {
			t.failLocked(a, n)
			expired = true
			continue
		}
		u := n.used.Load()
		if u != 0 && now-u < int64(neighGrace) {
			continue // in use
		}
		cands = append(cands, victim{a, u, n.seen})
	}
	t.cands = cands
	if expired {
		return true
	}
	if len(cands) == 0 {
		t.refused, t.refusing = now, true
		return false
	}
	slices.SortFunc(cands, func(x, y victim) int {
		if x.used != y.used {
			return cmp.Compare(x.used, y.used)
		}
		return cmp.Compare(x.seen, y.seen)
	})
	t.dropLocked(cands[0].a)
	// Only never-used victims are kept: every entry made from now on is
	// never used too, and goes before any that was.
	keep := 1
	for keep < min(len(cands), neighEvictBatch) && cands[keep].used == 0 {
		keep++
	}
	t.victims = cands[1:keep]
	return true
}

// victim is an entry a pass of a full table found it may drop, with its
// last use and confirmation then.
type victim struct {
	a          netip.Addr
	used, seen int64
}

// neighEvictBatch is how many victims one pass of a full table finds.
const neighEvictBatch = 256

// dropLocked removes the entry of a, with its queue.
func (t *neighTable) dropLocked(a netip.Addr) {
	for _, p := range t.m[a].queue {
		t.queued -= len(p)
	}
	delete(t.m, a)
}

// expire drops entries nobody confirmed for a long time and pending
// entries that never resolved, with their queues. It returns the packets
// that waited in vain (at most neighQueueBytes), whose senders the caller
// tells the address is unreachable, as Linux's arp_error_report does.
func (t *neighTable) expire(now int64) [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	for a, n := range t.m {
		if n.expiredAt(now) {
			t.failLocked(a, n)
		}
	}
	failed := t.failed
	t.failed = nil
	for _, p := range failed {
		t.queued -= len(p)
	}
	return failed
}

// failLocked removes the entry a, n, expired, and keeps what it held for
// expire to report, wherever it expired (a full table making room too);
// the packets count in queued until then, within neighQueueBytes.
func (t *neighTable) failLocked(a netip.Addr, n *neigh) {
	t.failed = append(t.failed, n.queue...)
	delete(t.m, a)
}

// expiredAt reports whether the entry is past keeping at now: confirmed
// too long ago, or pending too long.
func (n *neigh) expiredAt(now int64) bool {
	return n.resolved && now-n.seen > 4*int64(neighReachable) || !n.resolved && now-n.seen > int64(neighGiveUp)
}

// Neighbour is one entry of a link's neighbour table, for listing.
type Neighbour struct {
	Addr     netip.Addr
	MAC      bridge.MAC
	Resolved bool
}

func (t *neighTable) list() []Neighbour {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Neighbour, 0, len(t.m))
	for a, n := range t.m {
		out = append(out, Neighbour{Addr: a, MAC: n.mac, Resolved: n.resolved})
	}
	return out
}
