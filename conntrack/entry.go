package conntrack

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// entry is one tracked flow. Entries live in the slab, which holds no
// pointers, so a table of a million entries costs the garbage collector
// nothing to scan.
//
// The tuples and id are written when the entry is allocated or freed,
// under the slab lock and the write locks of both its shards; everyone
// else reads them holding one of those. The rest is atomic, or guarded by
// mu. Every byte counts: a million entries is the size of a busy gateway.
type entry struct {
	tuple    [2]key
	id       uint64 // 0 while the slot is free
	packets  [2]atomic.Uint64
	bytes    [2]atomic.Uint64
	deadline atomic.Int64 // clock time at which the entry expires
	status   atomic.Uint32
	// mark is the entry's mark; while the slot is free, the number of the
	// next free slot (plus one).
	mark atomic.Uint32
	mu   sync.Mutex
	// tcp is the TCP tracker. A UDP entry keeps in its place the time
	// after which a replied flow counts as a stream (see streamAt).
	tcp tcpConn
}

// setStreamAt and streamAt keep a UDP entry's stream time in the TCP
// tracker's sequence fields, which a UDP entry does not use. It is written
// before the entry is visible and never changes.
func (e *entry) setStreamAt(t int64) {
	e.tcp.lastSeq, e.tcp.lastAck = uint32(t), uint32(uint64(t)>>32)
}

func (e *entry) streamAt() int64 {
	return int64(uint64(e.tcp.lastAck)<<32 | uint64(e.tcp.lastSeq))
}

func (e *entry) account(dir Dir, n int) {
	e.packets[dir].Add(1)
	e.bytes[dir].Add(uint64(n))
}

// setStatus sets bits and reports whether any was not set before.
func (e *entry) setStatus(bits Status) bool {
	for {
		old := e.status.Load()
		if Status(old)&bits == bits {
			return false
		}
		if e.status.CompareAndSwap(old, old|uint32(bits)) {
			return true
		}
	}
}

func (e *entry) tcpState() TCPState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tcp.state
}

// Entry is a snapshot of one entry of the table.
type Entry struct {
	// ID identifies the entry: unique among all entries of the table, ever.
	ID          uint64
	Zone        Zone
	Orig, Reply Tuple
	Status      Status
	// TCPState is the state of a TCP connection.
	TCPState TCPState
	// Timeout is the time left before the entry expires.
	Timeout time.Duration
	// Packets and Bytes count each direction, indexed by Dir. Bytes count
	// IP packets, headers included.
	Packets, Bytes [2]uint64
	Mark           uint32
}

// snapshot copies e. The caller holds a lock of a shard of e.
func (t *Table) snapshot(e *entry, now int64) Entry {
	s := Entry{
		ID:      e.id,
		Zone:    e.tuple[Original].zone,
		Orig:    e.tuple[Original].tuple(),
		Reply:   e.tuple[Reply].tuple(),
		Status:  Status(e.status.Load()),
		Timeout: max(time.Duration(e.deadline.Load()-now), 0),
		Mark:    e.mark.Load(),
	}
	for d := range 2 {
		s.Packets[d] = e.packets[d].Load()
		s.Bytes[d] = e.bytes[d].Load()
	}
	if s.Orig.Proto == ProtoTCP {
		s.TCPState = e.tcpState()
	}
	return s
}

// slab holds the entries in chunks that are allocated as the table grows
// and released, from the end, as it shrinks. Entries never move, so an
// index slot refers to one by number.
type slab struct {
	bits   uint // log2 of the entries per chunk
	mu     sync.Mutex
	dir    atomic.Pointer[[]*chunk] // replaced, never changed in place
	chunks []*chunk                 // what dir points to; under mu
	used   int
	max    int
	n      atomic.Int64
}

// maxChunkBits makes chunks of at most 1024 entries (about 220 KiB).
const maxChunkBits = 10

type chunk struct {
	e     []entry
	free  uint32 // first free slot + 1; 0 when full
	nfree int
}

func (s *slab) init(max int) {
	s.max = max
	// A small table gets chunks no larger than itself.
	s.bits = min(uint(bits.Len(uint(max-1))), maxChunkBits)
	s.dir.Store(&s.chunks)
}

func (s *slab) chunkSize() int { return 1 << s.bits }

// at returns the entry an index slot's reference names.
func (s *slab) at(ref uint32) *entry {
	i := ref>>1 - 1
	return &(*s.dir.Load())[i>>s.bits].e[i&(1<<s.bits-1)]
}

// atLocked is at for a reference that may be stale: nil when its chunk is
// gone. The caller holds s.mu.
func (s *slab) atLocked(ref uint32) *entry {
	i := ref>>1 - 1
	if ref>>1 == 0 || int(i>>s.bits) >= len(s.chunks) {
		return nil
	}
	return &s.chunks[i>>s.bits].e[i&(1<<s.bits-1)]
}

func (s *slab) len() int { return int(s.n.Load()) }

// alloc takes a free entry, gives it its keys and id, marks it live, and
// returns its number (from 1;
// the index keeps 0 for "empty"). ok is false when the table is full.
func (s *slab) alloc(k, rk *key, id uint64) (idx uint32, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used >= s.max {
		return 0, false
	}
	// The lowest chunk with room, so that entries gather at the start and
	// the chunks at the end empty and can be released.
	ci := -1
	for i, c := range s.chunks {
		if c.nfree > 0 {
			ci = i
			break
		}
	}
	if ci < 0 {
		n := s.chunkSize()
		c := &chunk{e: make([]entry, n), free: 1, nfree: n}
		for j := range n - 1 {
			c.e[j].mark.Store(uint32(j + 2))
		}
		chunks := append(s.chunks[:len(s.chunks):len(s.chunks)], c)
		s.chunks = chunks
		s.dir.Store(&chunks)
		ci = len(chunks) - 1
	}
	c := s.chunks[ci]
	j := c.free - 1
	e := &c.e[j]
	c.free, c.nfree = e.mark.Load(), c.nfree-1
	e.mark.Store(0)
	e.tuple, e.id = [2]key{*k, *rk}, id
	s.used++
	s.n.Add(1)
	return uint32(ci<<s.bits) + j + 1, true
}

// free returns entry idx to the slab. The caller holds the write locks of
// both its shards.
func (s *slab) free(idx uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := idx - 1
	c := s.chunks[i>>s.bits]
	e := &c.e[i&(1<<s.bits-1)]
	*e = entry{}
	e.mark.Store(c.free)
	c.free = i&(1<<s.bits-1) + 1
	c.nfree++
	s.used--
	s.n.Add(-1)
	// Release empty chunks at the end, keeping one spare so a table that
	// hovers at a chunk boundary does not allocate on every flow.
	n := len(s.chunks)
	for n > 1 && s.chunks[n-1].nfree == s.chunkSize() && s.chunks[n-2].nfree == s.chunkSize() {
		n--
	}
	if n < len(s.chunks) {
		chunks := append([]*chunk(nil), s.chunks[:n]...)
		s.chunks = chunks
		s.dir.Store(&chunks)
	}
}

// refDir is the direction an index slot's reference is for.
func refDir(ref uint32) Dir { return Dir(ref & 1) }
