package conntrack

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
)

// Proto is an IP protocol number, as carried in the IPv4 protocol field or
// the last IPv6 next-header field.
type Proto uint8

// The protocols the table tracks with their own rules. Every other protocol
// is tracked as a generic flow between two addresses.
const (
	ProtoICMP   Proto = 1
	ProtoTCP    Proto = 6
	ProtoUDP    Proto = 17
	ProtoICMPv6 Proto = 58
)

// String returns the name conntrack -L prints for the protocol: "tcp",
// "udp", "icmp", "icmpv6", the names conntrack-tools gives "gre", "sctp",
// "dccp" and "udplite" (tracked generically here), or "unknown".
func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	case protoGRE:
		return "gre"
	case protoSCTP:
		return "sctp"
	case protoDCCP:
		return "dccp"
	case protoUDPLite:
		return "udplite"
	}
	return "unknown"
}

// Protocols tracked by address pair only here (GRE with timeouts of its
// own) that conntrack-tools still names, and whose layer-4 fields it prints
// (zero, as the tuple holds none).
const (
	protoDCCP    Proto = 33
	protoGRE     Proto = 47
	protoSCTP    Proto = 132
	protoUDPLite Proto = 136
)

// hasPorts reports whether tuples of p carry ports (or, for ICMP, an id and
// a type and code) beside the addresses.
func (p Proto) hasPorts() bool {
	return p == ProtoTCP || p == ProtoUDP || p == ProtoICMP || p == ProtoICMPv6
}

func (p Proto) isICMP() bool { return p == ProtoICMP || p == ProtoICMPv6 }

// Zone separates flows of isolated networks that may use the same
// addresses: the zone is part of every lookup key, so equal tuples in two
// zones are two flows. Zone 0 is the default zone.
type Zone uint16

// Dir is the direction of a packet relative to its flow.
type Dir uint8

const (
	// Original is the direction of the packet that created the entry.
	Original Dir = 0
	// Reply is the opposite direction.
	Reply Dir = 1
)

func (d Dir) String() string {
	if d == Reply {
		return "reply"
	}
	return "original"
}

// Tuple identifies one direction of a flow.
//
// For TCP and UDP, SrcPort and DstPort are the ports. For ICMP and ICMPv6
// queries (echo and the other request/reply pairs) SrcPort holds the query
// identifier and DstPort holds the message type in its high byte and the code
// in its low byte, the way the kernel keeps them; use [ICMPTuple] and the
// ICMP accessors rather than setting them by hand. A NAT that maps echo ids
// "like ports" changes SrcPort of the reply tuple. For other protocols both
// ports are zero.
//
// The zero Tuple is invalid. Address zones (fe80::1%eth0) are ignored.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            Proto
}

// ICMPTuple returns the tuple of an ICMP (IPv4) or ICMPv6 (IPv6) query
// from src to dst with the given type, code and identifier.
func ICMPTuple(src, dst netip.Addr, typ, code uint8, id uint16) Tuple {
	p := ProtoICMP
	if src.Is6() && !src.Is4In6() {
		p = ProtoICMPv6
	}
	return Tuple{Src: src, Dst: dst, SrcPort: id, DstPort: uint16(typ)<<8 | uint16(code), Proto: p}
}

// ICMPID returns the query identifier of an ICMP tuple.
func (t Tuple) ICMPID() uint16 { return t.SrcPort }

// ICMPType returns the message type of an ICMP tuple.
func (t Tuple) ICMPType() uint8 { return uint8(t.DstPort >> 8) }

// ICMPCode returns the message code of an ICMP tuple.
func (t Tuple) ICMPCode() uint8 { return uint8(t.DstPort) }

// IsValid reports whether t has two valid addresses of one family.
func (t Tuple) IsValid() bool {
	return t.Src.IsValid() && t.Dst.IsValid() && t.Src.Unmap().Is4() == t.Dst.Unmap().Is4()
}

// Reverse returns the tuple of the opposite direction: addresses (and ports)
// swapped; for an ICMP query, the same identifier and the type of the
// matching reply. ok is false for an ICMP type that has no reply.
func (t Tuple) Reverse() (r Tuple, ok bool) {
	r = Tuple{Src: t.Dst, Dst: t.Src, Proto: t.Proto}
	switch {
	case t.Proto.isICMP():
		rt, ok := icmpReplyType(t.Proto, t.ICMPType())
		if !ok {
			return Tuple{}, false
		}
		r.SrcPort = t.SrcPort
		r.DstPort = uint16(rt)<<8 | uint16(t.ICMPCode())
	case t.Proto.hasPorts():
		r.SrcPort, r.DstPort = t.DstPort, t.SrcPort
	}
	return r, true
}

// icmpPairs maps each ICMP query type to its reply type and back.
var (
	icmpPairs = [...][2]uint8{
		{8, 0},   // echo
		{13, 14}, // timestamp
		{15, 16}, // information
		{17, 18}, // address mask
	}
	icmp6Pairs = [...][2]uint8{
		{128, 129}, // echo
		{139, 140}, // node information
	}
)

func icmpReplyType(p Proto, typ uint8) (uint8, bool) {
	pairs := icmpPairs[:]
	if p == ProtoICMPv6 {
		pairs = icmp6Pairs[:]
	}
	for _, q := range pairs {
		switch typ {
		case q[0]:
			return q[1], true
		case q[1]:
			return q[0], true
		}
	}
	return 0, false
}

// icmpIsRequest reports whether typ opens an ICMP flow (a query, not a
// reply).
func icmpIsRequest(p Proto, typ uint8) bool {
	pairs := icmpPairs[:]
	if p == ProtoICMPv6 {
		pairs = icmp6Pairs[:]
	}
	for _, q := range pairs {
		if typ == q[0] {
			return true
		}
	}
	return false
}

// String formats t the way conntrack -L prints one tuple, without a trailing
// space: "src=A dst=B sport=P dport=Q", "src=A dst=B type=8 code=0 id=7", or
// "src=A dst=B".
func (t Tuple) String() string {
	return string(t.appendTo(nil))
}

func (t Tuple) appendTo(b []byte) []byte {
	b = append(b, "src="...)
	b = t.Src.Unmap().AppendTo(b)
	b = append(b, " dst="...)
	b = t.Dst.Unmap().AppendTo(b)
	switch {
	case t.Proto.isICMP():
		b = append(b, " type="...)
		b = strconv.AppendUint(b, uint64(t.ICMPType()), 10)
		b = append(b, " code="...)
		b = strconv.AppendUint(b, uint64(t.ICMPCode()), 10)
		b = append(b, " id="...)
		b = strconv.AppendUint(b, uint64(t.ICMPID()), 10)
	case t.Proto.hasPorts(), t.Proto == protoSCTP, t.Proto == protoDCCP, t.Proto == protoUDPLite:
		b = append(b, " sport="...)
		b = strconv.AppendUint(b, uint64(t.SrcPort), 10)
		b = append(b, " dport="...)
		b = strconv.AppendUint(b, uint64(t.DstPort), 10)
	case t.Proto == protoGRE:
		b = append(b, " srckey=0x0 dstkey=0x0"...)
	}
	return b
}

// key is the table's compact, comparable form of a zone and a tuple: 40
// bytes with no pointers, so the index can be scanned without the garbage
// collector's help and compared with one memory comparison.
type key struct {
	src, dst     [16]byte
	sport, dport uint16
	zone         Zone
	proto        Proto
	v4           bool
}

func makeKey(zone Zone, t Tuple) key {
	s, d := t.Src.Unmap(), t.Dst.Unmap()
	k := key{
		src: s.As16(), dst: d.As16(),
		zone: zone, proto: t.Proto, v4: s.Is4(),
	}
	if t.Proto.hasPorts() {
		k.sport, k.dport = t.SrcPort, t.DstPort
	}
	return k
}

func (k *key) tuple() Tuple {
	t := Tuple{SrcPort: k.sport, DstPort: k.dport, Proto: k.proto}
	if k.v4 {
		t.Src = netip.AddrFrom4([4]byte(k.src[12:]))
		t.Dst = netip.AddrFrom4([4]byte(k.dst[12:]))
	} else {
		t.Src = netip.AddrFrom16(k.src)
		t.Dst = netip.AddrFrom16(k.dst)
	}
	return t
}

// The multipliers of wyhash: odd, with balanced bits.
const (
	hp0 = 0xa0761d6478bd642f
	hp1 = 0xe7037ed1a0b428db
	hp2 = 0x8ebc6af09c88c6e3
	hp3 = 0x589965cc75374cc3
)

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash is a keyed hash of k (a wyhash-style multiply-mix over its five
// words). The seed is random per table, so a peer cannot choose tuples that
// collide in every table.
func (k *key) hash(seed uint64) uint64 {
	le := binary.LittleEndian
	w4 := uint64(k.sport) | uint64(k.dport)<<16 | uint64(k.zone)<<32 | uint64(k.proto)<<48
	if k.v4 {
		w4 |= 1 << 56
	}
	h := mix(le.Uint64(k.src[:8])^hp0^seed, le.Uint64(k.src[8:])^hp1)
	h = mix(h^le.Uint64(k.dst[:8])^hp2, le.Uint64(k.dst[8:])^seed)
	return mix(h^w4^hp3, hp1^40)
}

func (k key) String() string {
	return fmt.Sprintf("zone=%d %s/%s", k.zone, k.proto, k.tuple())
}
