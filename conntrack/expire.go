package conntrack

import (
	"sync"
	"sync/atomic"
	"time"
)

// reaper is the position of the incremental expiry in the index.
type reaper struct {
	mu    sync.Mutex
	shard int
	pos   int
	wakes atomic.Uint64 // the reaper goroutine's wake-ups, for the tests
}

// Expire examines up to budget index slots, from where the last call
// stopped, and destroys the expired entries it finds (ReasonTimeout). A
// budget of 0 or less examines the whole table. It returns how many
// entries it destroyed. The background reaper calls it with
// Config.ExpireBatch every Config.ExpireInterval; call it yourself when
// that is off, or to reap at once in a test.
func (t *Table) Expire(budget int) int {
	t.reap.mu.Lock()
	defer t.reap.mu.Unlock()
	now := t.clockNow()
	expired := func(e *entry) bool { return e.deadline.Load() <= now }
	removed := 0
	if budget <= 0 {
		// Rescan each shard from its start until it holds nothing expired:
		// removals shift slots back, past a moving cursor.
		for i := range t.shards {
			for n := 1; n > 0; {
				n = 0
				victims, _, _ := t.scan(i, 0, -1, expired)
				for _, v := range victims {
					if t.deleteID(v.ref, v.id, ReasonTimeout) {
						n++
					}
				}
				removed += n
			}
		}
		return removed
	}
	for sweeps := 0; budget > 0 && sweeps < len(t.shards); {
		victims, next, seen := t.scan(t.reap.shard, t.reap.pos, budget, expired)
		for _, v := range victims {
			if t.deleteID(v.ref, v.id, ReasonTimeout) {
				removed++
			}
		}
		budget -= max(seen, 1)
		if next < 0 { // the end of this shard
			t.reap.shard, t.reap.pos = (t.reap.shard+1)%len(t.shards), 0
			sweeps++
		} else {
			t.reap.pos = next
		}
	}
	return removed
}

// scan examines up to max slots (all when max < 0) of shard i from slot
// from, and returns the original-direction entries for which pick holds
// (at most 1024), where to continue (-1 at the end of the shard), and how
// many slots it examined.
func (t *Table) scan(i, from, max int, pick func(*entry) bool) (out []victim, next, seen int) {
	s := &t.shards[i]
	s.mu.RLock()
	defer s.mu.RUnlock()
	j := from
	for ; j < len(s.slots) && (max < 0 || seen < max) && len(out) < 1024; j, seen = j+1, seen+1 {
		ref := uint32(s.slots[j])
		if ref == 0 || refDir(ref) != Original {
			continue
		}
		if e := t.slab.at(ref); pick(e) {
			out = append(out, victim{ref, e.id})
		}
	}
	if j >= len(s.slots) {
		j = -1
	}
	return out, j, seen
}

func (t *Table) reaper() {
	defer close(t.done)
	tickEvery := t.cfg.ExpireInterval
	park := false // whether the coarse clock may stop while the table is quiet
	if t.coarse {
		tickEvery = min(coarseTick, tickEvery)
		park = tickEvery < t.cfg.ExpireInterval
	}
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	var since, quiet time.Duration
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		case <-t.kick:
			// A packet after a quiet spell: keep the clock again.
			t.reap.wakes.Add(1)
			tick.Reset(tickEvery)
			quiet = 0
			continue
		}
		t.reap.wakes.Add(1)
		if t.ticking.Load() == clockParked {
			// Ticking every ExpireInterval, and not at all once the
			// table is empty: only a packet (which kicks) fills it.
			t.Expire(t.cfg.ExpireBatch)
			if t.Len() == 0 {
				tick.Stop()
			}
			continue
		}
		if t.coarse {
			t.coarseNow.Store(t.readClock())
		}
		if park {
			if t.ticking.CompareAndSwap(clockActive, clockQuiet) {
				quiet = 0
			} else if quiet += tickEvery; quiet >= parkAfter && t.ticking.CompareAndSwap(clockQuiet, clockParked) {
				tick.Reset(t.cfg.ExpireInterval)
				since = 0
			}
		}
		if since += tickEvery; since >= t.cfg.ExpireInterval {
			since = 0
			t.Expire(t.cfg.ExpireBatch)
		}
	}
}
