package nat

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// IPv4 options a router writes into the packets it forwards (RFC 791).
const (
	optRecordRoute = 7
	optTimestamp   = 68

	tsOnly    = 0 // timestamp flags: timestamps only,
	tsAndAddr = 1 // each with the address of the router that wrote it,
	tsPrespec = 3 // or only the routers named in advance write theirs
)

// forwardOptions does to the IPv4 options of pkt, a forwarded packet,
// what Linux's router does (ip_options_compile, ip_forward_options): it
// records out, the gateway's address on the link pkt leaves by, in a
// record route option that has room, and the time of now in a timestamp
// option, with in, its address on the link pkt came in by, as the
// option's flag asks; a full timestamp option has its overflow count go
// up. So `ping -R` and `ping -T` through the gateway list it as a hop, as
// they list a kernel's NAT. own tells the gateway's addresses, for a
// timestamp whose addresses are named in advance. An option Linux would
// refuse (a pointer out of place, an overflow count at its end) is left
// as it is, and so is a second option of a kind. The IPv4 header
// checksum is computed afresh when something changed: the gateway
// verified it on input.
func forwardOptions(pkt []byte, in, out netip.Addr, now time.Time, own func(netip.Addr) bool) {
	ihl := int(pkt[0]&0x0f) * 4
	if ihl <= 20 || len(pkt) < ihl || !in.Is4() || !out.Is4() {
		return
	}
	changed, rr, ts := false, false, false
	for o := pkt[20:ihl]; len(o) > 0; {
		switch o[0] {
		case 0: // end of options
			o = nil
			continue
		case 1: // no operation
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			break
		}
		opt := o[:o[1]]
		o = o[len(opt):]
		switch {
		case opt[0] == optRecordRoute && !rr:
			rr = true
			changed = recordRoute(opt, out) || changed
		case opt[0] == optTimestamp && !ts:
			ts = true
			changed = timestamp(opt, in, now, own) || changed
		}
	}
	if changed {
		putIPv4Checksum(pkt)
	}
}

// recordRoute writes addr into the record route option opt, if it has
// room, and reports whether it did.
func recordRoute(opt []byte, addr netip.Addr) bool {
	if len(opt) < 3 {
		return false
	}
	ptr := int(opt[2])
	if ptr < 4 || ptr > len(opt) || ptr+3 > len(opt) {
		return false // full, or a pointer Linux refuses
	}
	a := addr.As4()
	copy(opt[ptr-1:], a[:])
	opt[2] += 4
	return true
}

// timestamp writes into the timestamp option opt the time of now, in
// milliseconds since midnight UT (RFC 791), with addr before it as the
// option's flag asks; or, when the option is full, counts the gateway in
// its overflow. It reports whether it changed opt.
func timestamp(opt []byte, addr netip.Addr, now time.Time, own func(netip.Addr) bool) bool {
	if len(opt) < 4 {
		return false
	}
	ptr, flag := int(opt[2]), opt[3]&0x0f
	if ptr < 5 {
		return false
	}
	if ptr > len(opt) {
		over := opt[3] >> 4
		if flag == tsPrespec || over == 15 {
			return false
		}
		opt[3] = flag | (over+1)<<4
		return true
	}
	n := 4 // the room an entry takes
	if flag != tsOnly {
		n = 8
	}
	if ptr+n-1 > len(opt) {
		return false
	}
	at := ptr - 1
	switch flag {
	case tsOnly:
	case tsAndAddr:
		a := addr.As4()
		copy(opt[at:], a[:])
		at += 4
	case tsPrespec:
		if own == nil || !own(netip.AddrFrom4([4]byte(opt[at:at+4]))) {
			return false // another router's turn
		}
		at += 4
	default:
		return false
	}
	t := now.UTC()
	ms := (t.Unix()%86400)*1000 + int64(t.Nanosecond()/1e6)
	binary.BigEndian.PutUint32(opt[at:], uint32(ms))
	opt[2] += byte(n)
	return true
}
