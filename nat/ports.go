package nat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/usernat/usernat/conntrack"
)

// ErrPortsExhausted: no port (or ICMP identifier) of the range gives the
// new flow a reply tuple that is free.
var ErrPortsExhausted = errors.New("nat: ports exhausted")

// PortRange is an inclusive range of ports, or of ICMP identifiers. The
// zero PortRange is "unspecified": wherever a PortRange is optional it
// means the default, which each use documents.
type PortRange struct {
	First, Last uint16
}

// IsZero reports whether r is the unspecified range.
func (r PortRange) IsZero() bool { return r == PortRange{} }

// Len returns the number of ports in r, 0 when Last is below First.
func (r PortRange) Len() int {
	if r.Last < r.First {
		return 0
	}
	return int(r.Last) - int(r.First) + 1
}

// Contains reports whether p is in r.
func (r PortRange) Contains(p uint16) bool { return p >= r.First && p <= r.Last }

// String returns "80" for a single port, "80-85" for a range.
func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// Mapping is the translation a rule asks of a new flow, the kernel's
// nf_nat_range for one manipulation or both.
type Mapping struct {
	// SrcAddr, when valid, replaces the source address of the flow: SNAT,
	// or masquerade with the uplink address.
	SrcAddr netip.Addr
	// SrcPorts are the source ports (TCP, UDP) or ICMP identifiers SNAT
	// may choose. Zero means Linux's default: keep the flow's own port
	// when its reply tuple is free, else pick one in 1024–65535 for ports
	// from 1024, in 600–1023 for ports 512–1023 and in 1–511 for ports
	// below 512, so privileged ports stay privileged; identifiers in
	// 0–65535.
	SrcPorts PortRange
	// DstAddr, when valid, replaces the destination address: DNAT.
	DstAddr netip.Addr
	// DstPorts are the destination ports DNAT may choose: the flow's port
	// when it is in the range and free, else the first free one from the
	// start of the range. Zero keeps the flow's destination port.
	DstPorts PortRange
	// Random chooses every port (or identifier) at random in its range,
	// even when the flow's own is free: iptables' --random-fully.
	Random bool
}

// maxAttempts bounds the candidates tested in one round of the search, as
// in the kernel: a full search of a crowded range would cost a new flow
// tens of thousands of lookups.
const maxAttempts = 128

// Allocator chooses the reply tuples of new flows the way Linux's NAT
// does (nf_nat_l4proto_unique_tuple): keep the flow's port when its reply
// tuple is free, else test candidates with [conntrack.Table.Taken] from a
// random offset in the range, at most 128 in a first round, then rounds of
// half as many from new random offsets, down to 8. A range of up to 128
// ports is searched in full.
//
// What changes for each kind of flow, in conntrack's terms (see
// [conntrack.Tuple]):
//
//   - TCP and UDP masquerade (SNAT): the reply tuple's DstPort, the port
//     the peer answers to.
//   - TCP and UDP DNAT: the reply tuple's SrcPort, the port of the
//     service behind the translation.
//   - ICMP and ICMPv6 queries: the identifier, SrcPort of the reply
//     tuple, whatever the translation: two containers pinging one server
//     with the same identifier through one address need two identifiers.
//   - Other protocols carry no port, so a reply tuple that is taken
//     cannot be made free: ErrPortsExhausted.
//
// Choosing and inserting are not atomic: a concurrent flow may take the
// chosen tuple before the table inserts it, and Track then returns
// conntrack.ErrReplyInUse; the caller tracks the packet again, which
// chooses anew. The zero Allocator is ready to use and safe for concurrent
// use.
type Allocator struct {
	translated, searched, exhausted atomic.Uint64
	bySrc                           sourceMaps
}

// sourceMaps remembers the source mappings of translated sources, as
// Linux's nf_nat_bysource hash does, so that a new flow from a source
// already mapped gets the same address and port (find_appropriate_src):
// one public port per container socket, for every destination. Each of a
// source's flows whose port was moved (a clash, resolved by a search) is
// recorded, since any of them may end first and the mapping lives while
// one does; a flow that kept its port needs no record, as keeping it
// again gives the same. A record is checked against the table before it
// is used.
type sourceMaps struct {
	mu      sync.Mutex
	m       map[sourceKey][]conntrack.Tuple // the reply tuples of the source's flows, newest last
	n       atomic.Int64                    // records in m (written under mu)
	sweepAt int
}

type sourceKey struct {
	zone  conntrack.Zone
	proto conntrack.Proto
	port  uint16
	src   netip.Addr
	to    netip.Addr // the address the source is mapped to
}

func srcKeyOf(zone conntrack.Zone, orig, reply conntrack.Tuple) sourceKey {
	return sourceKey{zone: zone, proto: orig.Proto, port: orig.SrcPort, src: orig.Src.Unmap(), to: reply.Dst.Unmap()}
}

// moved reports whether the reply tuple reply of a flow of protocol p
// has another source port (or ICMP identifier) than rev, the flow's own
// reverse.
func moved(p conntrack.Proto, rev, reply conntrack.Tuple) bool {
	switch p {
	case conntrack.ProtoTCP, conntrack.ProtoUDP:
		return reply.DstPort != rev.DstPort
	case conntrack.ProtoICMP, conntrack.ProtoICMPv6:
		return reply.SrcPort != rev.SrcPort
	}
	return false
}

// liveFor reports whether r is the reply tuple of a live flow of k's
// source.
func liveFor(t *conntrack.Table, k sourceKey, r conntrack.Tuple) bool {
	e, dir, live := t.Get(k.zone, r)
	return live && dir == conntrack.Reply && e.Orig.Src.Unmap() == k.src && e.Orig.SrcPort == k.port && e.Orig.Proto == k.proto
}

// current returns the reply tuple of a live flow from orig's source that
// is mapped to reply.Dst, the newest first; records of flows gone that it
// meets on the way are dropped.
func (s *sourceMaps) current(t *conntrack.Table, zone conntrack.Zone, orig, reply conntrack.Tuple) (conntrack.Tuple, bool) {
	if s.n.Load() == 0 {
		return conntrack.Tuple{}, false // nothing to look for, no lock taken
	}
	k := srcKeyOf(zone, orig, reply)
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.m[k]
	for i := len(list) - 1; i >= 0; i-- {
		if r := list[i]; liveFor(t, k, r) {
			s.m[k] = list
			return r, true
		}
		list = append(list[:i], list[i+1:]...)
		s.n.Add(-1)
	}
	delete(s.m, k)
	return conntrack.Tuple{}, false
}

// record adds reply to the mappings of orig's source. Records of flows
// gone are swept when the records have doubled since the last sweep, but
// for the one just made, whose entry the table inserts only after
// Translate returns.
func (s *sourceMaps) record(t *conntrack.Table, zone conntrack.Zone, orig, reply conntrack.Tuple) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[sourceKey][]conntrack.Tuple)
	}
	nk := srcKeyOf(zone, orig, reply)
	list := s.m[nk]
	if n := len(list); n > 0 && list[n-1] == reply {
		return // Track asking again
	}
	s.m[nk] = append(list, reply)
	if s.n.Add(1) < int64(s.sweepAt) {
		return
	}
	for k, list := range s.m {
		keep := list[:0]
		for i, r := range list {
			if k == nk && i == len(list)-1 || liveFor(t, k, r) {
				keep = append(keep, r)
			}
		}
		clear(list[len(keep):])
		s.n.Add(-int64(len(list) - len(keep)))
		if len(keep) == 0 {
			delete(s.m, k)
		} else {
			s.m[k] = keep
		}
	}
	s.sweepAt = max(1024, 2*int(s.n.Load()))
}

// AllocatorStats are an Allocator's counters.
type AllocatorStats struct {
	Translated uint64 // reply tuples chosen
	Searched   uint64 // of those, chosen by a search because the flow's own port was taken or Random was set
	Exhausted  uint64 // flows refused with ErrPortsExhausted
}

// Stats returns the counters.
func (a *Allocator) Stats() AllocatorStats {
	return AllocatorStats{
		Translated: a.translated.Load(),
		Searched:   a.searched.Load(),
		Exhausted:  a.exhausted.Load(),
	}
}

// Translator returns a conntrack.Translator that applies m to the flow it
// is asked about.
func (a *Allocator) Translator(m Mapping) conntrack.Translator { return allocTranslator{a, m} }

type allocTranslator struct {
	a *Allocator
	m Mapping
}

var _ conntrack.Translator = allocTranslator{}

func (tr allocTranslator) Translate(t *conntrack.Table, zone conntrack.Zone, orig conntrack.Tuple) (conntrack.Tuple, conntrack.Status, error) {
	return tr.a.Translate(t, zone, orig, tr.m)
}

// Translate returns the reply tuple and status of a new flow orig that
// mapping m translates, choosing a port (or identifier) whose reply tuple
// is not taken in t's zone: for SNAT, the mapping a live flow of the same
// source (address, port, protocol) has to the same address when that is
// free, as Linux's NAT chooses (one public port for a socket, whatever
// its destinations); else the flow's own port, else one searched for in
// the range. With an empty Mapping it returns the reverse
// of orig if that is free. The error wraps ErrPortsExhausted when no
// candidate was free, ErrMismatch when m's addresses are of another family
// than orig or orig is an ICMP message that has no reply.
func (a *Allocator) Translate(t *conntrack.Table, zone conntrack.Zone, orig conntrack.Tuple, m Mapping) (conntrack.Tuple, conntrack.Status, error) {
	rev, ok := orig.Reverse()
	if !ok || !orig.IsValid() {
		return conntrack.Tuple{}, 0, fmt.Errorf("%w: %v has no reply", ErrMismatch, orig)
	}
	v4 := orig.Src.Unmap().Is4()
	for _, addr := range [2]netip.Addr{m.SrcAddr, m.DstAddr} {
		if addr.IsValid() && addr.Unmap().Is4() != v4 {
			return conntrack.Tuple{}, 0, fmt.Errorf("%w: %v for %v", ErrMismatch, addr, orig)
		}
	}
	snat, dnat := m.SrcAddr.IsValid() || !m.SrcPorts.IsZero(), m.DstAddr.IsValid() || !m.DstPorts.IsZero()
	reply := rev
	if m.DstAddr.IsValid() {
		reply.Src = m.DstAddr
	}
	if m.SrcAddr.IsValid() {
		reply.Dst = m.SrcAddr
	}

	// key is the port the search varies, in [first, first+size).
	var (
		key         *uint16
		first, size int
		keep        bool // the flow's own port may stay
		randomStart = true
	)
	switch orig.Proto {
	case conntrack.ProtoICMP, conntrack.ProtoICMPv6:
		key, first, size, keep = &reply.SrcPort, 0, 65536, true
		if r := m.SrcPorts; !r.IsZero() {
			first, size, keep = int(r.First), r.Len(), r.Contains(orig.SrcPort)
		}
	case conntrack.ProtoTCP, conntrack.ProtoUDP:
		if dnat && !m.DstPorts.IsZero() {
			r := m.DstPorts
			if !r.Contains(orig.DstPort) {
				reply.SrcPort = r.First
			}
			if !snat {
				key, first, size, keep = &reply.SrcPort, int(r.First), r.Len(), true
				randomStart = m.Random // DNAT fills its range from the start
			}
		}
		if snat {
			key, keep = &reply.DstPort, true
			switch r, p := m.SrcPorts, orig.SrcPort; {
			case !r.IsZero():
				first, size, keep = int(r.First), r.Len(), r.Contains(p)
			default:
				first, size = SourcePortRange(p)
			}
		}
	}
	if size <= 0 && key != nil {
		return conntrack.Tuple{}, 0, fmt.Errorf("%w: empty port range", ErrPortsExhausted)
	}
	if snat && key != nil && !m.Random && orig.Src.Unmap() != reply.Dst.Unmap() {
		// Linux's first choice for a source it maps already: that
		// mapping, if it is in the range and free for this flow.
		if r, ok := a.bySrc.current(t, zone, orig, reply); ok {
			saved := *key
			if key == &reply.DstPort {
				*key = r.DstPort
			} else {
				*key = r.SrcPort
			}
			if p := int(*key); p >= first && p < first+size && !t.Taken(zone, reply) {
				return a.done(t, zone, orig, rev, reply, snat, dnat)
			}
			*key = saved
		}
	}
	if keep && !m.Random || key == nil {
		if !t.Taken(zone, reply) {
			return a.done(t, zone, orig, rev, reply, snat, dnat)
		}
		if key == nil {
			a.exhausted.Add(1)
			return conntrack.Tuple{}, 0, fmt.Errorf("%w: %v: reply tuple %v in use, no port to vary", ErrPortsExhausted, orig, reply)
		}
	}
	a.searched.Add(1)
	attempts := min(size, maxAttempts)
	off := 0
	if randomStart || m.Random {
		off = rand.IntN(size)
	}
	for {
		for i := range attempts {
			*key = uint16(first + (off+i)%size)
			if !t.Taken(zone, reply) {
				return a.done(t, zone, orig, rev, reply, snat, dnat)
			}
		}
		if attempts >= size || attempts < 16 {
			break
		}
		attempts /= 2
		off = rand.IntN(size)
	}
	a.exhausted.Add(1)
	return conntrack.Tuple{}, 0, fmt.Errorf("%w: %v", ErrPortsExhausted, orig)
}

// done counts a chosen reply tuple and sets the NAT status bits of what
// changed, as the kernel does: a mapping that changes nothing sets none.
func (a *Allocator) done(t *conntrack.Table, zone conntrack.Zone, orig, rev, reply conntrack.Tuple, snat, dnat bool) (conntrack.Tuple, conntrack.Status, error) {
	a.translated.Add(1)
	if snat && moved(orig.Proto, rev, reply) && orig.Src.Unmap() != reply.Dst.Unmap() {
		// Only a mapping that moved the port is kept: a flow of the
		// source that keeps its own port is what keeping it again
		// gives anyway, so most new flows pay nothing here.
		a.bySrc.record(t, zone, orig, reply)
	}
	var st conntrack.Status
	if reply.Dst != rev.Dst || reply.DstPort != rev.DstPort {
		st |= conntrack.SrcNAT
	}
	if reply.Src != rev.Src || reply.SrcPort != rev.SrcPort && orig.Proto != conntrack.ProtoICMP && orig.Proto != conntrack.ProtoICMPv6 {
		st |= conntrack.DstNAT
	}
	if reply.SrcPort != rev.SrcPort && (orig.Proto == conntrack.ProtoICMP || orig.Proto == conntrack.ProtoICMPv6) {
		if snat || !dnat {
			st |= conntrack.SrcNAT
		} else {
			st |= conntrack.DstNAT
		}
	}
	return reply, st, nil
}

// SourcePortRange is the range a NAT picks another source port from for
// a connection from port p, as Linux's does (nf_nat_l4proto_unique_tuple):
// 1024–65535 for ports from 1024, 600–1023 for ports 512–1023, 1–511
// below, so a privileged port stays privileged. It returns the first port
// and how many there are.
func SourcePortRange(p uint16) (first, size int) {
	switch {
	case p >= 1024:
		return 1024, 65536 - 1024
	case p >= 512:
		return 600, 1024 - 600
	default:
		return 1, 511
	}
}
