package bridge

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrFDBFull is returned by AddStatic when the FDB is at its cap and holds
// only static entries.
var ErrFDBFull = errors.New("bridge: FDB full")

// FDBEntry is one line of the forwarding database, as FDB lists it.
type FDBEntry struct {
	MAC  MAC
	Port string // name of the port the MAC is behind
	// Static entries were added with AddStatic: they never age, never move
	// and are never evicted.
	Static bool
	// Age is how long ago a frame from MAC was last seen; zero for static
	// entries.
	Age time.Duration
}

// String formats the entry as `bridge fdb show` prints it, without the
// bridge's name, which the entry does not know: for example
// "02:42:ac:11:00:04 dev veth1". Bridge.WriteFDB adds " master NAME".
func (e FDBEntry) String() string { return e.format("") }

func (e FDBEntry) format(bridge string) string {
	var b strings.Builder
	b.WriteString(e.MAC.String())
	b.WriteString(" dev ")
	b.WriteString(e.Port)
	if bridge != "" {
		b.WriteString(" master ")
		b.WriteString(bridge)
	}
	if e.Static {
		b.WriteString(" static")
	}
	return b.String()
}

// fdbEntry is a learned or static MAC. The map and list links are guarded
// by fdb.mu; port and seen are atomics so that refreshing a known MAC, even
// moving it to another port, needs only the read lock.
type fdbEntry struct {
	mac    MAC
	static bool
	port   atomic.Pointer[Attachment]
	seen   atomic.Int64 // clock nanoseconds since the bridge's epoch

	// queued is seen's value when the entry last took its place in the
	// eviction queue, a heap ordered by it; an entry seen since then is
	// put back in its place instead of evicted (see evictLocked).
	queued int64
	idx    int // index in fdb.q
}

// fdb is the MAC table. Lock order: Bridge.mu before fdb.mu.
type fdb struct {
	ageing int64 // nanoseconds; <= 0 means entries never age
	max    int

	mu sync.RWMutex
	m  map[MAC]*fdbEntry
	q  fdbQueue // the dynamic entries, least recently queued first

	full atomic.Uint64 // MACs not learned because the table held only static entries
}

func newFDB(ageing time.Duration, max int) *fdb {
	return &fdb{ageing: int64(ageing), max: max, m: make(map[MAC]*fdbEntry)}
}

func (f *fdb) expired(e *fdbEntry, now int64) bool {
	return !e.static && f.ageing > 0 && now-e.seen.Load() > f.ageing
}

// lookup returns the port behind mac, or nil when mac is unknown or aged.
func (f *fdb) lookup(mac MAC, now int64) *Attachment {
	f.mu.RLock()
	e := f.m[mac]
	f.mu.RUnlock()
	if e == nil || f.expired(e, now) {
		return nil
	}
	return e.port.Load()
}

// learn records that mac was seen on port at now. It returns true when the
// MAC moved from another port, for logging.
func (f *fdb) learn(mac MAC, port *Attachment, now int64) (moved bool) {
	f.mu.RLock()
	e := f.m[mac]
	f.mu.RUnlock()
	if e != nil {
		if e.static {
			return false
		}
		// Only store when something changed, to keep the cache line shared
		// between the ports' goroutines.
		if e.seen.Load() != now {
			e.seen.Store(now)
		}
		if old := e.port.Load(); old != port {
			// A move, rare: under the read lock, so a port being
			// detached (closing set, then flushPort under the write
			// lock) either sees its entry flushed after, or is seen
			// closing here and gets none.
			f.mu.RLock()
			defer f.mu.RUnlock()
			if port.closing.Load() {
				return false
			}
			e.port.Store(port)
			return old != nil
		}
		return false
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if port.closing.Load() {
		// Detached since input looked: flushPort, which runs under
		// f.mu once closing is set, has flushed it or will.
		return false
	}
	if e := f.m[mac]; e != nil { // learned by another port meanwhile
		if !e.static {
			e.seen.Store(now)
			e.port.Store(port)
		}
		return false
	}
	f.reapLocked(now, 4)
	if len(f.m) >= f.max && !f.evictLocked(now) {
		f.full.Add(1)
		return false
	}
	e = &fdbEntry{mac: mac}
	e.port.Store(port)
	e.seen.Store(now)
	f.m[mac] = e
	f.pushLocked(e, now)
	return false
}

// addStatic adds or replaces a static entry.
func (f *fdb) addStatic(mac MAC, port *Attachment, now int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if port.closing.Load() {
		// Detached since AddStatic looked: flushPort, which runs under
		// f.mu once closing is set, has flushed it or will; an entry
		// added after it would outlive the port.
		return fmt.Errorf("bridge: add static %v: port %s detached", mac, port.name)
	}
	if e := f.m[mac]; e != nil {
		if !e.static {
			f.unlinkLocked(e)
		}
		delete(f.m, mac)
	} else if len(f.m) >= f.max && !f.evictLocked(now) {
		return fmt.Errorf("%w: %d entries", ErrFDBFull, len(f.m))
	}
	e := &fdbEntry{mac: mac, static: true}
	e.port.Store(port)
	e.seen.Store(now)
	f.m[mac] = e
	return nil
}

func (f *fdb) remove(mac MAC) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m[mac]
	if e == nil {
		return false
	}
	f.deleteLocked(e)
	return true
}

// flushPort removes every entry, static ones too, behind port: it is
// leaving the bridge.
func (f *fdb) flushPort(port *Attachment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.m {
		if e.port.Load() == port {
			f.deleteLocked(e)
		}
	}
}

// list returns the live entries sorted by port then MAC, and drops the
// aged ones it meets.
func (f *fdb) list(now int64) []FDBEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FDBEntry, 0, len(f.m))
	for _, e := range f.m {
		if f.expired(e, now) {
			f.deleteLocked(e)
			continue
		}
		fe := FDBEntry{MAC: e.mac, Static: e.static}
		if p := e.port.Load(); p != nil {
			fe.Port = p.Name()
		}
		if !e.static {
			fe.Age = time.Duration(now - e.seen.Load())
		}
		out = append(out, fe)
	}
	slices.SortFunc(out, func(a, b FDBEntry) int {
		if c := strings.Compare(a.Port, b.Port); c != 0 {
			return c
		}
		return slices.Compare(a.MAC[:], b.MAC[:])
	})
	return out
}

// reapLocked removes up to n aged entries from the head of the eviction
// queue, so that memory follows the live set without a timer goroutine.
// Lookups ignore aged entries anyway.
func (f *fdb) reapLocked(now int64, n int) {
	for ; n > 0 && len(f.q) > 0 && f.expired(f.q[0], now); n-- {
		f.deleteLocked(f.q[0])
	}
}

// evictLocked frees one slot by removing the least recently seen dynamic
// entry, and reports false when there is none. The queue is a heap ordered
// by the time each entry was queued; an entry seen since it was queued is
// put back at the time it was last seen instead of evicted. The first
// entry not seen since it was queued was then seen no later than any
// other entry was queued, so no later than any was seen: it is the least
// recently seen. So refreshing a MAC costs an atomic store, never the
// write lock, and each eviction costs O(log n) per entry put back.
func (f *fdb) evictLocked(now int64) bool {
	// Bounded: entries refreshed meanwhile (under no lock) cannot keep it
	// going.
	for range len(f.q) {
		e := f.q[0]
		if seen := e.seen.Load(); seen > e.queued && !f.expired(e, now) {
			e.queued = seen
			heap.Fix(&f.q, 0)
			continue
		}
		f.deleteLocked(e)
		return true
	}
	if len(f.q) == 0 {
		return false
	}
	f.deleteLocked(f.q[0])
	return true
}

func (f *fdb) deleteLocked(e *fdbEntry) {
	if !e.static {
		f.unlinkLocked(e)
	}
	delete(f.m, e.mac)
}

func (f *fdb) pushLocked(e *fdbEntry, queued int64) {
	e.queued = queued
	heap.Push(&f.q, e)
}

func (f *fdb) unlinkLocked(e *fdbEntry) {
	heap.Remove(&f.q, e.idx)
}

// fdbQueue is a min-heap of dynamic entries by queued (container/heap).
type fdbQueue []*fdbEntry

func (q fdbQueue) Len() int           { return len(q) }
func (q fdbQueue) Less(i, j int) bool { return q[i].queued < q[j].queued }
func (q fdbQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].idx, q[j].idx = i, j
}
func (q *fdbQueue) Push(x any) {
	e := x.(*fdbEntry)
	e.idx = len(*q)
	*q = append(*q, e)
}
func (q *fdbQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.idx = -1
	return e
}

// writeFDB writes entries one a line in `bridge fdb show` form.
func writeFDB(w io.Writer, bridge string, entries []FDBEntry) error {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.format(bridge))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
