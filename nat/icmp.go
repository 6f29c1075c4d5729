package nat

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/usernat/usernat/conntrack"
)

// ErrNoICMP: the rules of RFC 1122 (3.2.2) and RFC 4443 (2.4) forbid an
// ICMP error about the packet: it is itself an ICMP error, a fragment
// other than the first, or from or (except for IPv6 packet too big) to a
// multicast or broadcast address, or from an unspecified address.
var ErrNoICMP = errors.New("nat: no ICMP error may be sent about this packet")

// ICMP errors quote as much of the offending packet as fits in these
// sizes: RFC 1812 4.3.2.3 for IPv4, the minimum MTU for IPv6 (RFC 4443).
const (
	maxICMPv4Error = 576
	maxICMPv6Error = 1280
)

// FragNeeded builds, in buf, the ICMP error that tells the sender of pkt
// that it is larger than mtu: "fragmentation needed and DF set" (type 3
// code 4, with the next-hop MTU) for IPv4, "packet too big" (type 2) for
// IPv6, sent from address from (the gateway's) to pkt's source. This is
// what makes path MTU discovery work through the gateway. The result is
// appended to buf[:0].
func FragNeeded(buf, pkt []byte, from netip.Addr, mtu int) ([]byte, error) {
	mtu = max(0, mtu)
	return icmpError(buf, pkt, from, 3, 4, uint32(min(mtu, 0xffff)), 2, 0, uint32(mtu))
}

// TimeExceeded builds, in buf, the ICMP "time exceeded in transit" error
// (IPv4 type 11, IPv6 type 3, code 0) for pkt, whose TTL or hop limit ran
// out at the gateway (DecTTL returned false), from address from to pkt's
// source. The result is appended to buf[:0].
func TimeExceeded(buf, pkt []byte, from netip.Addr) ([]byte, error) {
	return icmpError(buf, pkt, from, 11, 0, 0, 3, 0, 0)
}

// Unreachable builds, in buf, an ICMP "destination unreachable" error for
// pkt with code code (IPv4: 1 host, 3 port, 13 administratively
// prohibited, ...; IPv6: 1 administratively prohibited, 3 address, 4
// port, ...), from address from to pkt's source. The result is appended to
// buf[:0].
func Unreachable(buf, pkt []byte, from netip.Addr, code uint8) ([]byte, error) {
	return icmpError(buf, pkt, from, 3, code, 0, 1, code, 0)
}

// ICMPError builds, in buf, the IPv4 ICMP error of type typ and code
// code about pkt, an IPv4 packet, with info in the four bytes after the
// checksum (the next-hop MTU of "fragmentation needed", a parameter
// problem's pointer in its first byte), from address from to pkt's source:
// an error the gateway passes on for a network that sent it. As the
// others, it makes none about an ICMP error, a fragment other than the
// first, or a packet from or to a broadcast or multicast address. The
// result is appended to buf[:0].
func ICMPError(buf, pkt []byte, from netip.Addr, typ, code uint8, info uint32) ([]byte, error) {
	if !from.Unmap().Is4() {
		return nil, errFamily
	}
	return icmpError(buf, pkt, from, typ, code, info, 0, 0, 0)
}

func icmpError(buf, pkt []byte, from netip.Addr, typ4, code4 uint8, info4 uint32, typ6, code6 uint8, info6 uint32) ([]byte, error) {
	h, err := parseIP(pkt, false)
	if err != nil {
		return nil, err
	}
	if !from.IsValid() || from.Unmap().Is4() == h.v6 {
		return nil, errFamily
	}
	if h.frag && !h.first {
		return nil, ErrNoICMP
	}
	l4 := pkt[h.l4:h.end]
	if h.proto == conntrack.ProtoICMP && !h.v6 || h.proto == conntrack.ProtoICMPv6 && h.v6 {
		// A first fragment carries the type too; one that cannot be
		// read is taken for an error, as Linux's __icmp_send does.
		if len(l4) == 0 || !h.v6 && isICMPError(h.proto, l4[0]) || h.v6 && l4[0] < 128 {
			return nil, ErrNoICMP
		}
	}
	so, do, n := h.addrOffs()
	src, _ := netip.AddrFromSlice(pkt[so : so+n])
	dst, _ := netip.AddrFromSlice(pkt[do : do+n])
	tooBig := h.v6 && typ6 == 2
	if src.IsUnspecified() || src.IsMulticast() || src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		!tooBig && (dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		return nil, ErrNoICMP
	}

	hl, limit, typ, code, info, proto := 20, maxICMPv4Error, typ4, code4, info4, conntrack.ProtoICMP
	if h.v6 {
		hl, limit, typ, code, info, proto = 40, maxICMPv6Error, typ6, code6, info6, conntrack.ProtoICMPv6
	}
	quote := pkt[:min(h.end, limit-hl-8)]
	total := hl + 8 + len(quote)
	var b []byte
	if cap(buf) >= total {
		b = buf[:total]
		clear(b[:hl+8])
	} else {
		b = make([]byte, total)
	}
	if h.v6 {
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:6], uint16(total-40))
		b[6], b[7] = byte(proto), 64
		f := from.As16()
		copy(b[8:24], f[:])
		copy(b[24:40], pkt[so:so+n])
	} else {
		b[0], b[1] = 0x45, 0xc0 // precedence: internetwork control, as Linux sends
		binary.BigEndian.PutUint16(b[2:4], uint16(total))
		b[8], b[9] = 64, byte(proto)
		f := from.Unmap().As4()
		copy(b[12:16], f[:])
		copy(b[16:20], pkt[so:so+n])
		binary.BigEndian.PutUint16(b[10:12], Checksum(b[:20]))
	}
	icmp := b[hl:]
	icmp[0], icmp[1] = typ, code
	binary.BigEndian.PutUint32(icmp[4:8], info)
	copy(icmp[8:], quote)
	var initial uint16
	if h.v6 {
		initial = pseudoHeaderSum(b[8:24], b[24:40], proto, len(icmp))
	}
	binary.BigEndian.PutUint16(icmp[2:4], ^Sum(icmp, initial))
	return b, nil
}

// pseudoHeaderSum is the sum of the pseudo-header of a transport
// checksum (RFC 768, RFC 8200 8.1).
func pseudoHeaderSum(src, dst []byte, proto conntrack.Proto, length int) uint16 {
	s := Sum(src, 0)
	s = Sum(dst, s)
	var w [8]byte
	binary.BigEndian.PutUint32(w[0:4], uint32(length))
	w[7] = byte(proto)
	return Sum(w[:], s)
}

// EchoReply turns the ICMP echo request or ICMPv6 echo request pkt, sent
// to the gateway, into the echo reply in place: addresses swapped, type
// changed, TTL or hop limit set to 64, checksums updated; identifier,
// sequence number and data stay. It does not allocate. The error is
// ErrMismatch for a packet that is not an echo request, ErrFragment for a
// fragment, ErrMalformed for a truncated one; on error pkt is unchanged.
func EchoReply(pkt []byte) error {
	h, err := parseIP(pkt, false)
	if err != nil {
		return err
	}
	if h.frag {
		return errFragment
	}
	l4 := pkt[h.l4:h.end]
	req, rep := uint8(8), uint8(0)
	if h.v6 {
		req, rep = 128, 129
	}
	if h.proto != conntrack.ProtoICMP && h.proto != conntrack.ProtoICMPv6 || (h.proto == conntrack.ProtoICMPv6) != h.v6 {
		return errProto
	}
	if len(l4) < 8 {
		return errL4Short
	}
	if l4[0] != req {
		return errNotEcho
	}
	so, do, n := h.addrOffs()
	var tmp [16]byte
	copy(tmp[:n], pkt[so:so+n])
	copy(pkt[so:so+n], pkt[do:do+n])
	copy(pkt[do:do+n], tmp[:n])
	var d delta
	set16(l4, 0, uint16(rep)<<8|uint16(l4[1]), &d)
	ck := d.apply(cksumAt(l4, 2))
	if ck == 0 && !h.v6 && allZero(l4, 2) {
		ck = 0xffff // see rewriteL4
	}
	putCksum(l4, 2, ck)
	if h.v6 {
		pkt[7] = 64
		return nil
	}
	var ip delta
	set16(pkt, 8, 64<<8|uint16(pkt[9]), &ip)
	putCksum(pkt, 10, ip.apply(cksumAt(pkt, 10)))
	return nil
}

var errNotEcho = &packetError{"nat: tuple does not fit the packet: not an echo request", ErrMismatch}
