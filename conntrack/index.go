package conntrack

import (
	"sync"
	"sync/atomic"
)

// shard is one part of the index: an open-addressing hash table with
// linear probing that maps keys to entry references. Each slot is 8 bytes:
// the low 32 bits of the key's hash above a reference (entry number << 1 |
// direction), so most mismatches are rejected without touching the entry.
// An all-zero slot is empty. Deletion shifts later slots back, so there
// are no tombstones; the table doubles at 3/4 full and halves below 1/8.
type shard struct {
	mu    sync.RWMutex
	slots []uint64
	n     int
	found atomic.Uint64
	_     [64]byte // keep neighbouring shards' locks off this cache line
}

const minSlots = 8

// find returns the reference stored for k. The caller holds s.mu.
func (s *shard) find(sl *slab, k *key, h uint32) (uint32, bool) {
	if s.n == 0 {
		return 0, false
	}
	mask := uint32(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == 0 {
			return 0, false
		}
		if uint32(v>>32) == h {
			ref := uint32(v)
			if sl.at(ref).tuple[ref&1] == *k {
				return ref, true
			}
		}
	}
}

// insert stores ref for a key of hash h. The caller holds s.mu for writing
// and has checked that the key is absent.
func (s *shard) insert(ref, h uint32) {
	if (s.n+1)*4 > len(s.slots)*3 {
		s.resize(max(minSlots, len(s.slots)*2))
	}
	s.put(uint64(h)<<32 | uint64(ref))
	s.n++
}

func (s *shard) put(v uint64) {
	mask := uint32(len(s.slots) - 1)
	i := uint32(v>>32) & mask
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = v
}

// remove deletes the slot holding ref. The caller holds s.mu for writing.
func (s *shard) remove(ref, h uint32) {
	mask := uint32(len(s.slots) - 1)
	i := h & mask
	for uint32(s.slots[i]) != ref {
		if s.slots[i] == 0 {
			panic("conntrack: removing a reference the index does not hold")
		}
		i = (i + 1) & mask
	}
	// Shift back every later slot of the run that would otherwise no
	// longer be reachable from its home position.
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		home := uint32(s.slots[j]>>32) & mask
		if (j-home)&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = 0
	s.n--
	if len(s.slots) > minSlots && s.n*8 < len(s.slots) {
		s.resize(len(s.slots) / 2)
	}
}

func (s *shard) resize(n int) {
	old := s.slots
	s.slots = make([]uint64, n)
	for _, v := range old {
		if v != 0 {
			s.put(v)
		}
	}
}
