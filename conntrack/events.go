package conntrack

import (
	"sync"
	"sync/atomic"
)

// EventType says what happened to an entry.
type EventType uint8

const (
	// EventNew: a packet created the entry.
	EventNew EventType = iota + 1
	// EventUpdate: the entry's TCP state changed, or it saw its first
	// reply, or it became assured.
	EventUpdate
	// EventDestroy: the entry left the table; Event.Reason says why.
	EventDestroy
)

func (t EventType) String() string {
	switch t {
	case EventNew:
		return "NEW"
	case EventUpdate:
		return "UPDATE"
	case EventDestroy:
		return "DESTROY"
	}
	return "NONE"
}

// Reason says why an entry was destroyed.
type Reason uint8

const (
	ReasonNone    Reason = iota
	ReasonTimeout        // its idle timeout passed
	ReasonEvicted        // early drop made room for a new flow
	ReasonFlushed        // Flush
	ReasonDeleted        // Delete
	ReasonClosed         // the flow ended itself: a RST before any reply, or a SYN reopening it
)

func (r Reason) String() string {
	switch r {
	case ReasonTimeout:
		return "timeout"
	case ReasonEvicted:
		return "evicted"
	case ReasonFlushed:
		return "flushed"
	case ReasonDeleted:
		return "deleted"
	case ReasonClosed:
		return "closed"
	}
	return "none"
}

// Event is a change to an entry. Entry is a snapshot taken when the
// change happened.
type Event struct {
	Type   EventType
	Reason Reason
	Entry  Entry
}

// Subscription receives the table's events in order, per entry: New
// before any Update, Destroy last. Delivery never blocks the packet path:
// an event that finds the subscription's buffer full is dropped and
// counted in Lost.
type Subscription struct {
	c      chan Event
	types  uint8 // the events it takes, a bit (1<<Type) each
	lost   atomic.Uint64
	subs   *subscribers
	closed bool // under subs.mu
}

// DefaultEventBuffer is the buffer of a subscription made with size 0.
const DefaultEventBuffer = 4096

// allTypes are the bits of every EventType (Subscription.types).
const allTypes = 1<<EventNew | 1<<EventUpdate | 1<<EventDestroy

// SubscribeTo is Subscribe for the events of the given types only (every
// type when none is given; a type that is none of EventNew, EventUpdate
// and EventDestroy adds nothing). The table builds no event for a
// subscriber that does not take it: a reader of destroy events alone (to
// release what an entry held) saves a snapshot, and a wake-up of its own,
// per state change of every connection.
func (t *Table) SubscribeTo(size int, types ...EventType) *Subscription {
	if len(types) == 0 {
		return t.subscribe(size, allTypes)
	}
	mask := uint8(0)
	for _, typ := range types {
		mask |= 1 << typ & allTypes // 0 for a type past the byte
	}
	return t.subscribe(size, mask)
}

// Subscribe returns a subscription with a buffer of size events (0 means
// DefaultEventBuffer). Close it when done.
func (t *Table) Subscribe(size int) *Subscription { return t.subscribe(size, allTypes) }

func (t *Table) subscribe(size int, types uint8) *Subscription {
	if size <= 0 {
		size = DefaultEventBuffer
	}
	s := &Subscription{c: make(chan Event, size), types: types, subs: &t.subs}
	t.subs.mu.Lock()
	defer t.subs.mu.Unlock()
	if t.subs.closed {
		s.closed = true
		close(s.c)
		return s
	}
	t.subs.list = append(t.subs.list, s)
	t.subs.noteTypes()
	return s
}

// Events returns the channel of events. It is closed by Close, and when
// the table closes.
func (s *Subscription) Events() <-chan Event { return s.c }

// Lost returns how many events were dropped for want of buffer space.
func (s *Subscription) Lost() uint64 { return s.lost.Load() }

// Close ends the subscription and closes its channel. It is idempotent.
func (s *Subscription) Close() error {
	s.subs.mu.Lock()
	defer s.subs.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.c)
	for i, o := range s.subs.list {
		if o == s {
			s.subs.list = append(s.subs.list[:i], s.subs.list[i+1:]...)
			break
		}
	}
	s.subs.noteTypes()
	return nil
}

type subscribers struct {
	mu     sync.RWMutex
	list   []*Subscription
	closed bool
	types  atomic.Uint32 // the types some subscriber takes, read without the lock
	lost   atomic.Uint64
}

// noteTypes notes the types the subscribers take. Under mu.
func (s *subscribers) noteTypes() {
	types := uint8(0)
	for _, sub := range s.list {
		types |= sub.types
	}
	s.types.Store(uint32(types))
}

// active reports whether anyone takes events of type typ, so the packet
// path builds no event for nobody.
func (s *subscribers) active(typ EventType) bool { return s.types.Load()&(1<<typ) != 0 }

func (s *subscribers) emit(ev Event) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, sub := range s.list {
		if sub.types&(1<<ev.Type) == 0 {
			continue
		}
		select {
		case sub.c <- ev:
		default:
			sub.lost.Add(1)
			s.lost.Add(1)
		}
	}
}

func (s *subscribers) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, sub := range s.list {
		sub.closed = true
		close(sub.c)
	}
	s.list = nil
	s.types.Store(0)
}
