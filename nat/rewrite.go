package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"

	"github.com/usernat/usernat/conntrack"
)

// Rewrite rewrites the IPv4 or IPv6 packet pkt in place so that it carries
// tuple to: its source and destination addresses become to.Src and to.Dst,
// its TCP or UDP ports to.SrcPort and to.DstPort, or, for an ICMP query,
// its identifier to.SrcPort (the ICMP type is left alone). The IPv4 header
// checksum and the TCP, UDP, ICMP and ICMPv6 checksums are updated
// incrementally (RFC 1624), so a packet whose checksums were right still
// has right checksums, and one whose checksums were wrong stays wrong by
// the same amount. An IPv4 UDP checksum of zero (none) stays zero. Other
// protocols get their addresses changed only, and the checksums of
// UDP-Lite and DCCP, which cover the addresses, updated.
//
// A packet going in direction d of a conntrack entry must carry, after
// translation, the reverse of the entry's tuple in the other direction:
//
//	res, _ := table.Track(zone, &p, nat)
//	to, _ := res.Tuple(1 - res.Dir).Reverse()
//	err := nat.Rewrite(pkt, to)
//
// For the masquerade of container 172.17.0.4:40000 to server
// 192.0.2.9:443 through uplink address 192.168.2.116, the entry's tuples
// are orig 172.17.0.4:40000 → 192.0.2.9:443 and reply 192.0.2.9:443 →
// 192.168.2.116:40001. The container's packets (original direction) are
// rewritten to the reverse of the reply tuple, 192.168.2.116:40001 →
// 192.0.2.9:443; the server's answers (reply direction) to the reverse of
// the original tuple, 192.0.2.9:443 → 172.17.0.4:40000. An untranslated
// flow rewrites nothing, and Rewrite leaves the packet's bytes as they were.
//
// Rewrite does not allocate and keeps no reference to pkt. Fragments
// (ErrFragment) and ICMP errors (ErrMismatch: see RewriteICMPError) are
// refused; so are truncated packets (ErrMalformed) and a tuple of another
// family or protocol (ErrMismatch). On error pkt is unchanged.
func Rewrite(pkt []byte, to conntrack.Tuple) error { return rewrite(pkt, to, false) }

// RewritePartial is Rewrite for a TCP or UDP packet whose transport
// checksum is still to be computed (checksum offload: bridge.Offload with
// OffloadNeedsCsum): its checksum field holds the sum of the pseudo-header
// only, not complemented, so it follows the changed addresses, and not the
// ports, which the checksum yet to come covers as data. The kernel's NAT
// updates such packets the same way.
func RewritePartial(pkt []byte, to conntrack.Tuple) error { return rewrite(pkt, to, true) }

func rewrite(pkt []byte, to conntrack.Tuple, partial bool) error {
	h, err := parseIP(pkt, false)
	if err != nil {
		return err
	}
	if h.frag {
		return errFragment
	}
	if err := h.fits(to); err != nil {
		return err
	}
	l4 := pkt[h.l4:h.end]
	switch h.proto {
	case conntrack.ProtoTCP:
		if len(l4) < 20 {
			return errL4Short
		}
	case conntrack.ProtoUDP:
		if len(l4) < 8 {
			return errL4Short
		}
	case conntrack.ProtoICMP, conntrack.ProtoICMPv6:
		if len(l4) < 8 {
			return errL4Short
		}
		if isICMPError(h.proto, l4[0]) {
			return errICMPError
		}
	}

	var addr, port delta
	setAddrs(pkt, &h, to.Src, to.Dst, &addr)
	if !h.v6 {
		putCksum(pkt, 10, addr.apply(cksumAt(pkt, 10)))
	}
	if partial && (h.proto == conntrack.ProtoTCP || h.proto == conntrack.ProtoUDP) {
		ck := 16
		if h.proto == conntrack.ProtoUDP {
			ck = 6
		}
		// The field is the uncomplemented sum S; the update that turns a
		// checksum ^S into ^S' turns S into S'.
		putCksum(l4, ck, ^addr.apply(^cksumAt(l4, ck)))
		set16(l4, 0, to.SrcPort, &port)
		set16(l4, 2, to.DstPort, &port)
		return nil
	}
	rewriteL4(l4, h.proto, h.v6, to.SrcPort, to.DstPort, addr, &port, false)
	return nil
}

// fits checks that tuple to can be written into a packet with header h.
func (h *ipHeader) fits(to conntrack.Tuple) error {
	if !to.IsValid() || to.Src.Unmap().Is4() == h.v6 {
		return errFamily
	}
	if to.Proto != h.proto {
		return errProto
	}
	return nil
}

// setAddrs writes src and dst into the IP header of pkt and adds the
// change to d.
func setAddrs(pkt []byte, h *ipHeader, src, dst netip.Addr, d *delta) {
	so, do, _ := h.addrOffs()
	setAddr(pkt[so:], src, d)
	setAddr(pkt[do:], dst, d)
}

// setAddr writes a into b (an address field of a's family) and adds the
// change to d.
func setAddr(b []byte, a netip.Addr, d *delta) {
	if a.Unmap().Is4() {
		n := a.Unmap().As4()
		if [4]byte(b[:4]) != n {
			d.addBytes(b[:4], n[:])
			copy(b, n[:])
		}
		return
	}
	n := a.As16()
	if [16]byte(b[:16]) != n {
		d.addBytes(b[:16], n[:])
		copy(b, n[:])
	}
}

// rewriteL4 sets the ports (or ICMP identifier, from sport) of the
// transport header l4 and updates its checksum by the change of its ports
// and, where the checksum covers a pseudo-header, addr. l4 may end early
// (a quote is cut short): fields beyond it are left alone; quoted is set
// for the transport header of a quote.
// Every change to l4, checksum included, is added to outer,
// the delta of an enclosing ICMP error's checksum.
func rewriteL4(l4 []byte, proto conntrack.Proto, v6 bool, sport, dport uint16, addr delta, outer *delta, quoted bool) {
	have := len(l4)
	var d delta
	pseudo, changed, ports := true, false, true
	ck := 0
	switch proto {
	case conntrack.ProtoTCP:
		ck = 16
	case conntrack.ProtoUDP:
		ck = 6
	case conntrack.ProtoICMP, conntrack.ProtoICMPv6:
		ck, pseudo, ports = 2, proto == conntrack.ProtoICMPv6, false
		if have >= 6 {
			changed = set16(l4, 4, sport, &d)
		}
	case protoUDPLite, protoDCCP:
		// Their checksums cover a pseudo-header, as UDP's does (Linux's
		// udplite_manip_pkt, dccp_manip_pkt); conntrack tracks them by
		// address pair, so their ports stay.
		ck, ports = 6, false
	default:
		return
	}
	if ports && have >= 4 {
		changed = set16(l4, 0, sport, &d)
		changed = set16(l4, 2, dport, &d) || changed
	}
	outer.s += d.s
	if pseudo {
		d.s += addr.s
		changed = changed || addr.s != 0
	}
	if have < ck+2 || !changed {
		return
	}
	old := cksumAt(l4, ck)
	if proto == conntrack.ProtoUDP && old == 0 && !v6 {
		return // no checksum
	}
	n := d.apply(old)
	switch {
	case (proto == conntrack.ProtoUDP || proto == protoUDPLite) && n == 0:
		n = 0xffff // RFC 768, RFC 3828: a computed zero is sent as all ones
	case n == 0 && !pseudo && !quoted && allZero(l4, ck):
		// A message of zeros (an ICMP echo reply with identifier,
		// sequence and data 0) sums to zero, not to the other zero the
		// update gives: only 0xffff verifies. (A quote may be cut
		// short, so whether its message is all zeros is unknown.)
		n = 0xffff
	}
	putCksum(l4, ck, n)
	outer.merge(old, n)
}

// Protocols conntrack tracks by address pair whose checksums cover a
// pseudo-header (RFC 4340, RFC 3828).
const (
	protoDCCP    conntrack.Proto = 33
	protoUDPLite conntrack.Proto = 136
)

// allZero reports whether b is all zeros, the checksum field at ck aside.
func allZero(b []byte, ck int) bool {
	for i, c := range b {
		if c != 0 && (i < ck || i >= ck+2) {
			return false
		}
	}
	return true
}

// set16 writes v at b[off:], adds the change to d and reports whether
// there was one.
func set16(b []byte, off int, v uint16, d *delta) bool {
	old := binary.BigEndian.Uint16(b[off:])
	if old == v {
		return false
	}
	d.add16(old, v)
	binary.BigEndian.PutUint16(b[off:], v)
	return true
}

func cksumAt(b []byte, off int) uint16     { return binary.BigEndian.Uint16(b[off:]) }
func putCksum(b []byte, off int, v uint16) { binary.BigEndian.PutUint16(b[off:], v) }

// RewriteICMPError rewrites in place the ICMP or ICMPv6 error pkt
// (destination unreachable, packet too big or fragmentation needed, time
// exceeded, parameter problem, ...) so that the packet it quotes carries
// tuple to, and the error goes where that packet came from:
//
//   - the quoted addresses and ports (or ICMP identifier) become those of
//     to, with the quoted IPv4 header checksum updated, and the quoted
//     TCP, UDP or ICMP checksum too where the quote includes it;
//   - the outer destination becomes to.Src, the quoted packet's sender;
//   - the outer source becomes to.Dst if it was the quoted packet's
//     destination (the error came from the flow's far end, whose address
//     the translation hides); an error from a router on the path keeps
//     the router's address;
//   - the outer IPv4 header checksum and the ICMP checksum are updated.
//
// The quoted packet travelled in the direction opposite to the error's, so
// for an error classified ClassRelated in direction d of an entry, to is
// the entry's tuple in the other direction:
//
//	res, _ := table.Track(zone, &p, nil) // p.Kind == KindICMPError
//	err := nat.RewriteICMPError(pkt, res.Tuple(1-res.Dir))
//
// For the masquerade example of Rewrite, a router's "port unreachable" to
// 192.168.2.116 quoting 192.168.2.116:40001 → 192.0.2.9:443 is an error in
// the reply direction; it becomes an error to 172.17.0.4 quoting
// 172.17.0.4:40000 → 192.0.2.9:443, the packet the container sent.
//
// RewriteICMPError does not allocate and keeps no reference to pkt. On
// error pkt is unchanged.
func RewriteICMPError(pkt []byte, to conntrack.Tuple) error {
	h, err := parseIP(pkt, false)
	if err != nil {
		return err
	}
	if h.frag {
		return errFragment
	}
	if (h.proto != conntrack.ProtoICMP || h.v6) && (h.proto != conntrack.ProtoICMPv6 || !h.v6) {
		return errNotError
	}
	icmp := pkt[h.l4:h.end]
	if len(icmp) < 8 {
		return errL4Short
	}
	if !isICMPError(h.proto, icmp[0]) {
		return errNotError
	}
	quote := icmp[8:]
	q, err := parseIP(quote, true)
	if err != nil || q.v6 != h.v6 || q.frag && !q.first {
		return errQuote
	}
	if err := q.fits(to); err != nil {
		return err
	}
	have := len(quote) - q.l4
	switch q.proto {
	case conntrack.ProtoTCP, conntrack.ProtoUDP:
		if have < 4 {
			return errQuote
		}
	case conntrack.ProtoICMP, conntrack.ProtoICMPv6:
		if have < 8 || isICMPError(q.proto, quote[q.l4]) {
			return errQuote
		}
	}

	qso, qdo, n := q.addrOffs()
	so, do, _ := h.addrOffs()
	fromFarEnd := bytes.Equal(pkt[so:so+n], quote[qdo:qdo+n])

	// The quote, and what its changes do to the ICMP checksum.
	var icmpDelta, qaddr delta
	setAddr(quote[qso:], to.Src, &qaddr)
	setAddr(quote[qdo:], to.Dst, &qaddr)
	icmpDelta.s += qaddr.s
	if !q.v6 {
		old := cksumAt(quote, 10)
		n := qaddr.apply(old)
		putCksum(quote, 10, n)
		icmpDelta.merge(old, n)
	}
	rewriteL4(quote[q.l4:], q.proto, q.v6, to.SrcPort, to.DstPort, qaddr, &icmpDelta, true)

	// The outer header.
	var outer delta
	if fromFarEnd {
		setAddr(pkt[so:], to.Dst, &outer)
	}
	setAddr(pkt[do:], to.Src, &outer)
	if h.v6 {
		icmpDelta.s += outer.s // the ICMPv6 pseudo-header
	} else {
		putCksum(pkt, 10, outer.apply(cksumAt(pkt, 10)))
	}
	putCksum(icmp, 2, icmpDelta.apply(cksumAt(icmp, 2)))
	return nil
}

// DecTTL decrements the TTL of the IPv4 packet pkt (updating its header
// checksum incrementally) or the hop limit of the IPv6 packet pkt, as a
// router does before forwarding. It returns false, and changes nothing,
// when the packet may not be forwarded: its TTL or hop limit is 0 or 1 (the
// router answers with time exceeded), or pkt is too short to be an IP
// packet.
func DecTTL(pkt []byte) (ok bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		if pkt[8] <= 1 {
			return false
		}
		old := binary.BigEndian.Uint16(pkt[8:10])
		pkt[8]--
		putCksum(pkt, 10, UpdateChecksum16(cksumAt(pkt, 10), old, binary.BigEndian.Uint16(pkt[8:10])))
		return true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		if pkt[7] <= 1 {
			return false
		}
		pkt[7]--
		return true
	}
	return false
}
