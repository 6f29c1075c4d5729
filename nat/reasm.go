package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usernat/usernat/conntrack"
)

// Errors of reassembly and fragmentation.
var (
	// ErrNotFragment: Reassembler.Add was given a packet that is not a
	// fragment.
	ErrNotFragment = errors.New("nat: not a fragment")
	// ErrOverlap: a fragment overlaps another of its datagram, which is
	// discarded whole with every fragment of it still to come (RFC 5722).
	ErrOverlap = errors.New("nat: overlapping fragment")
	// ErrReassemblyFull: the reassembler holds as many datagrams or bytes
	// as it may; the fragment was dropped.
	ErrReassemblyFull = errors.New("nat: reassembly limit reached")
	// ErrDontFragment: the packet is larger than the MTU and may not be
	// fragmented (IPv4 DF, or any IPv6 packet): answer with FragNeeded.
	ErrDontFragment = errors.New("nat: packet too big and may not be fragmented")
)

var (
	errFragLength = &packetError{"nat: malformed packet: fragment length not a multiple of 8", ErrMalformed}
	errFragSize   = &packetError{"nat: malformed packet: fragment beyond 65535 bytes", ErrMalformed}
	errFragEnd    = &packetError{"nat: malformed packet: fragments disagree on the datagram's end", ErrMalformed}
	errFragCount  = &packetError{"nat: malformed packet: too many fragments in a datagram", ErrMalformed}
)

// ReassemblerConfig configures a Reassembler. The zero value is the
// default.
type ReassemblerConfig struct {
	// MaxDatagrams is how many datagrams may be in progress at once; 0
	// means 1024.
	MaxDatagrams int
	// MaxBytes bounds the memory held by fragments waiting for their
	// datagram (their payload plus a fixed overhead each); 0 means 4 MiB,
	// Linux's ipfrag_high_thresh.
	MaxBytes int
	// Timeout is how long a datagram may take to complete, counted from
	// its first fragment; 0 means 30 s, Linux's ipfrag_time.
	Timeout time.Duration
	// Clock tells the time; nil means the system clock.
	Clock conntrack.Clock
}

// Per-fragment overhead charged against MaxBytes, and the most fragments
// one datagram may have: 65535 bytes in the smallest IPv4 fragments a
// 68-byte MTU allows need 1366.
const (
	fragOverhead = 64
	maxFrags     = 2048
)

// Reassembler reassembles IPv4 and IPv6 fragments into datagrams, as a
// gateway must before tracking them: later fragments carry no ports.
//
// Memory and time are bounded: at most MaxDatagrams datagrams and MaxBytes
// bytes are held, and a datagram not complete Timeout after its first
// fragment is dropped. A fragment that overlaps another of its datagram,
// other than an exact duplicate, drops the whole datagram, and the
// fragments of it still to come are dropped until its timeout (RFC 5722,
// applied to IPv4 too, as Linux does).
//
// A Reassembler is safe for concurrent use.
type Reassembler struct {
	cfg   ReassemblerConfig
	clock conntrack.Clock

	mu         sync.Mutex
	datagrams  map[fragKey]*datagram
	head, tail *datagram // by deadline, oldest first
	bytes      int

	reassembled, timeouts, overlaps, duplicates, malformed, full atomic.Uint64
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// NewReassembler returns an empty Reassembler.
func NewReassembler(cfg ReassemblerConfig) (*Reassembler, error) {
	if cfg.MaxDatagrams < 0 || cfg.MaxBytes < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("nat: negative reassembly limit in %+v", cfg)
	}
	if cfg.MaxDatagrams == 0 {
		cfg.MaxDatagrams = 1024
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 4 << 20
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	r := &Reassembler{cfg: cfg, clock: cfg.Clock, datagrams: make(map[fragKey]*datagram)}
	if r.clock == nil {
		r.clock = wallClock{}
	}
	return r, nil
}

// fragKey identifies a datagram: addresses and identification, and for
// IPv4 the protocol (RFC 791; IPv6 leaves it out, RFC 8200).
type fragKey struct {
	src, dst [16]byte
	id       uint32
	proto    conntrack.Proto
	v6       bool
}

type datagram struct {
	key        fragKey
	deadline   time.Time
	prev, next *datagram
	// dead is set once an overlap was seen: the datagram's fragments are
	// dropped until the deadline.
	dead  bool
	frags []fragment // sorted by offset, never overlapping
	// end is the length of the fragmentable part, known from the last
	// fragment, or -1; have is how many bytes of it the fragments hold.
	end, have int
	// header is the unfragmentable part of the first fragment, without
	// the IPv6 fragment header; nextOff is where in it the next-header
	// field naming the fragment header is, and nextProto the value it
	// takes.
	header    []byte
	nextOff   int
	nextProto uint8
	charged   int
	// maxLen is the IP length of the largest fragment; maxDF whether it
	// had DF.
	maxLen int
	maxDF  bool
}

type fragment struct {
	off  int
	data []byte
}

// ReassemblyStats are a Reassembler's counters.
type ReassemblyStats struct {
	InProgress  int    // datagrams waiting for fragments
	Bytes       int    // memory they are charged
	Reassembled uint64 // datagrams completed
	Timeouts    uint64 // datagrams dropped because their time ran out
	Overlaps    uint64 // datagrams dropped because fragments overlapped
	Duplicates  uint64 // fragments ignored as exact duplicates
	Malformed   uint64 // fragments dropped as malformed
	Full        uint64 // fragments dropped because a limit was reached
}

// Stats returns the counters.
func (r *Reassembler) Stats() ReassemblyStats {
	r.mu.Lock()
	n, b := len(r.datagrams), r.bytes
	r.mu.Unlock()
	return ReassemblyStats{
		InProgress: n, Bytes: b,
		Reassembled: r.reassembled.Load(),
		Timeouts:    r.timeouts.Load(),
		Overlaps:    r.overlaps.Load(),
		Duplicates:  r.duplicates.Load(),
		Malformed:   r.malformed.Load(),
		Full:        r.full.Load(),
	}
}

// Add takes the IPv4 or IPv6 fragment frag. When frag completes its
// datagram, Add returns the reassembled packet, appended to buf[:0]: the
// caller owns it (it may share buf's array, and nothing else). Until then
// Add returns nil and a nil error. Add copies what it keeps of frag, so
// the caller may reuse frag at once.
//
// The reassembled packet is the first fragment's header, with the
// fragment fields cleared (IPv4: MF and offset, DF kept; IPv6: the
// fragment header removed) and the lengths and IPv4 header checksum set.
//
// A dropped fragment returns an error: ErrNotFragment, ErrMalformed
// (bad lengths, a datagram over 65535 bytes), ErrOverlap, or
// ErrReassemblyFull.
func (r *Reassembler) Add(frag []byte, buf []byte) ([]byte, error) {
	out, _, err := r.add(frag, buf)
	return out, err
}

// add is Add, and tells the IP length of the datagram's largest fragment
// (Linux's frag_max_size) with the reassembled packet.
func (r *Reassembler) add(frag []byte, buf []byte) ([]byte, int, error) {
	h, err := parseIP(frag, false)
	if err != nil {
		r.malformed.Add(1)
		return nil, 0, err
	}
	if !h.frag {
		return nil, 0, ErrNotFragment
	}
	var (
		k       = fragKey{v6: h.v6}
		off, hl int
		more    bool
	)
	so, do, n := h.addrOffs()
	copy(k.src[:], frag[so:so+n])
	copy(k.dst[:], frag[do:do+n])
	if h.v6 {
		fh := frag[h.fragHdr:]
		fo := binary.BigEndian.Uint16(fh[2:4])
		off, more, hl = int(fo&0xfff8), fo&1 != 0, h.fragHdr
		k.id = binary.BigEndian.Uint32(fh[4:8])
	} else {
		fo := binary.BigEndian.Uint16(frag[6:8])
		off, more, hl = int(fo&0x1fff)*8, fo&0x2000 != 0, h.l4
		k.id, k.proto = uint32(binary.BigEndian.Uint16(frag[4:6])), h.proto
	}
	data := frag[h.l4:h.end]
	switch {
	case more && (len(data) == 0 || len(data)%8 != 0):
		r.malformed.Add(1)
		return nil, 0, errFragLength
	case h.v6 && hl-40+off+len(data) > 65535, !h.v6 && hl+off+len(data) > 65535:
		r.malformed.Add(1)
		return nil, 0, errFragSize
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock.Now()
	r.expireLocked(now)
	d := r.datagrams[k]
	if d == nil {
		if len(r.datagrams) >= r.cfg.MaxDatagrams {
			r.full.Add(1)
			return nil, 0, ErrReassemblyFull
		}
		d = &datagram{key: k, deadline: now.Add(r.cfg.Timeout), end: -1}
		r.datagrams[k] = d
		r.pushLocked(d)
	}
	if d.dead {
		return nil, 0, ErrOverlap
	}

	end := off + len(data)
	last := len(d.frags) - 1
	switch {
	case !more && d.end >= 0 && d.end != end,
		!more && last >= 0 && d.frags[last].off+len(d.frags[last].data) > end,
		more && d.end >= 0 && end > d.end:
		r.malformed.Add(1)
		r.killLocked(d)
		return nil, 0, errFragEnd
	}
	i, _ := slices.BinarySearchFunc(d.frags, off, func(f fragment, off int) int { return f.off - off })
	if dup := i < len(d.frags) && d.frags[i].off == off && len(d.frags[i].data) == len(data); dup {
		// RFC 5722 errata 3089: an exact duplicate may be ignored.
		r.duplicates.Add(1)
		return nil, 0, nil
	}
	if i > 0 && d.frags[i-1].off+len(d.frags[i-1].data) > off || i < len(d.frags) && end > d.frags[i].off {
		r.overlaps.Add(1)
		r.killLocked(d)
		return nil, 0, ErrOverlap
	}
	if len(d.frags) >= maxFrags {
		r.malformed.Add(1)
		r.killLocked(d)
		return nil, 0, errFragCount
	}
	cost := len(data) + fragOverhead
	if off == 0 {
		cost += hl
	}
	if r.bytes+cost > r.cfg.MaxBytes {
		r.full.Add(1)
		if len(d.frags) == 0 {
			r.removeLocked(d)
		}
		return nil, 0, ErrReassemblyFull
	}
	r.bytes += cost
	d.charged += cost
	if h.end > d.maxLen {
		d.maxLen, d.maxDF = h.end, !h.v6 && frag[6]&0x40 != 0
	}
	d.frags = slices.Insert(d.frags, i, fragment{off, slices.Clone(data)})
	d.have += len(data)
	if !more {
		d.end = end
	}
	if off == 0 {
		d.header = slices.Clone(frag[:hl])
		if h.v6 {
			d.nextOff, d.nextProto = h.nextOff, frag[h.fragHdr]
		}
	}
	if d.end < 0 || d.have != d.end || d.header == nil {
		return nil, 0, nil
	}
	if n := len(d.header) + d.end; !d.key.v6 && n > 65535 || d.key.v6 && n-40 > 65535 {
		// Each fragment fitted with its own header; not with the first's.
		r.malformed.Add(1)
		r.removeLocked(d)
		return nil, 0, errFragSize
	}
	out := d.build(buf[:0])
	maxLen := d.maxLen
	r.removeLocked(d)
	r.reassembled.Add(1)
	return out, maxLen, nil
}

// build appends the reassembled datagram d to b.
func (d *datagram) build(b []byte) []byte {
	n := len(d.header) + d.end
	b = slices.Grow(b, n)
	b = append(b, d.header...)
	for _, f := range d.frags {
		b = append(b, f.data...)
	}
	if d.key.v6 {
		b[d.nextOff] = d.nextProto
		binary.BigEndian.PutUint16(b[4:6], uint16(n-40))
		return b
	}
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	b[6] &= 0x40 // keep DF; clear MF and the offset
	if !d.maxDF {
		b[6] = 0 // as Linux: DF only if the largest fragment had it
	}
	b[7] = 0
	putIPv4Checksum(b)
	return b
}

// Expire drops the datagrams whose time ran out. Add expires as it goes;
// a gateway calls Expire from time to time so that the memory of datagrams
// that will never complete is freed even when no fragments arrive.
func (r *Reassembler) Expire() {
	r.mu.Lock()
	r.expireLocked(r.clock.Now())
	r.mu.Unlock()
}

func (r *Reassembler) expireLocked(now time.Time) {
	for d := r.head; d != nil && !now.Before(d.deadline); d = r.head {
		if !d.dead {
			r.timeouts.Add(1)
		}
		r.removeLocked(d)
	}
}

// killLocked drops d's fragments and keeps it, dead, until its deadline.
func (r *Reassembler) killLocked(d *datagram) {
	r.bytes -= d.charged
	d.charged, d.frags, d.header, d.dead = 0, nil, nil, true
}

func (r *Reassembler) pushLocked(d *datagram) {
	d.prev = r.tail
	if r.tail != nil {
		r.tail.next = d
	} else {
		r.head = d
	}
	r.tail = d
}

func (r *Reassembler) removeLocked(d *datagram) {
	r.bytes -= d.charged
	d.charged = 0
	delete(r.datagrams, d.key)
	if d.prev != nil {
		d.prev.next = d.next
	} else {
		r.head = d.next
	}
	if d.next != nil {
		d.next.prev = d.prev
	} else {
		r.tail = d.prev
	}
	d.prev, d.next = nil, nil
}

// Fragment splits the IPv4 packet pkt into fragments of at most mtu bytes
// and calls emit with each, in order, as a router does (RFC 791): later
// fragments carry only the options marked to be copied, and a packet that
// is itself a fragment yields fragments of the original datagram. A packet
// that fits is emitted as it is. Each fragment is built in buf, grown when
// it has less than mtu bytes of capacity, so emit must not keep it.
//
// The error is ErrDontFragment for a packet with DF set that does not fit,
// and for any IPv6 packet that does not fit (routers do not fragment
// IPv6); ErrMalformed for a bad header; a plain error for an MTU below 68.
func Fragment(pkt []byte, mtu int, buf []byte, emit func(frag []byte)) error {
	return cut(pkt, mtu, buf, false, emit)
}

// cut is Fragment; with keepDF, a packet with DF is cut too, and
// each of its fragments keeps DF: a reassembled datagram going on in
// fragments no larger than its sender's (Linux's IPSKB_FRAG_PMTU).
func cut(pkt []byte, mtu int, buf []byte, keepDF bool, emit func(frag []byte)) error {
	h, err := parseIP(pkt, false)
	if err != nil {
		return err
	}
	if h.end <= mtu {
		emit(pkt[:h.end])
		return nil
	}
	df := pkt[6]&0x40 != 0
	if h.v6 || df && !keepDF {
		return ErrDontFragment
	}
	if mtu < 68 {
		return fmt.Errorf("nat: fragment: MTU %d below 68, the least every IPv4 link carries", mtu)
	}
	if cap(buf) < mtu {
		buf = make([]byte, mtu)
	}
	buf = buf[:mtu]
	ihl := h.l4
	// The header of later fragments: only the copied options.
	var later [60]byte
	copy(later[:20], pkt[:20])
	ln := 20
	for o := pkt[20:ihl]; len(o) > 0; {
		if o[0] == 0 {
			break
		}
		if o[0] == 1 {
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			break
		}
		if o[0]&0x80 != 0 {
			ln += copy(later[ln:], o[:o[1]])
		}
		o = o[o[1]:]
	}
	for ln%4 != 0 {
		later[ln] = 0
		ln++
	}
	later[0] = 0x40 | byte(ln/4)

	fo := binary.BigEndian.Uint16(pkt[6:8])
	base, moreAfter := int(fo&0x1fff)*8, fo&0x2000 != 0
	data := pkt[ihl:h.end]
	hdr := pkt[:ihl]
	for pos := 0; pos < len(data); {
		size := min(len(data)-pos, (mtu-len(hdr))&^7)
		last := pos+size == len(data)
		n := copy(buf, hdr)
		n += copy(buf[n:], data[pos:pos+size])
		binary.BigEndian.PutUint16(buf[2:4], uint16(n))
		f := uint16((base + pos) / 8)
		if !last || moreAfter {
			f |= 0x2000
		}
		if df {
			f |= 0x4000
		}
		binary.BigEndian.PutUint16(buf[6:8], f)
		putIPv4Checksum(buf)
		emit(buf[:n])
		pos += size
		hdr = later[:ln]
	}
	return nil
}
