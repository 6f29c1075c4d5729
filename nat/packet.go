package nat

import (
	"encoding/binary"
	"errors"

	"github.com/usernat/usernat/conntrack"
)

// Errors callers branch on. The errors of the packet functions wrap one of
// them with the reason.
var (
	// ErrMalformed: the packet's headers are truncated or inconsistent.
	ErrMalformed = errors.New("nat: malformed packet")
	// ErrFragment: the packet is an IP fragment; reassemble it first.
	ErrFragment = errors.New("nat: fragment")
	// ErrMismatch: the tuple given for a packet is of another protocol or
	// address family than the packet, or the packet is of a kind the
	// function does not handle (an ICMP error given to Rewrite, a query to
	// RewriteICMPError).
	ErrMismatch = errors.New("nat: tuple does not fit the packet")
)

// packetError is a static error with a reason, so the per-packet path
// returns errors without allocating.
type packetError struct {
	msg  string
	kind error
}

func (e *packetError) Error() string { return e.msg }
func (e *packetError) Unwrap() error { return e.kind }

var (
	errEmpty      = &packetError{"nat: malformed packet: empty", ErrMalformed}
	errVersion    = &packetError{"nat: malformed packet: not IPv4 or IPv6", ErrMalformed}
	errIPv4Header = &packetError{"nat: malformed packet: bad IPv4 header length", ErrMalformed}
	errIPv4Length = &packetError{"nat: malformed packet: bad IPv4 total length", ErrMalformed}
	errIPv6Length = &packetError{"nat: malformed packet: bad IPv6 payload length", ErrMalformed}
	errExtHeader  = &packetError{"nat: malformed packet: bad IPv6 extension header", ErrMalformed}
	errL4Short    = &packetError{"nat: malformed packet: truncated transport header", ErrMalformed}
	errQuote      = &packetError{"nat: malformed packet: ICMP error quoting no usable packet", ErrMalformed}
	errFragment   = &packetError{"nat: fragment: reassemble before rewriting", ErrFragment}
	errFamily     = &packetError{"nat: tuple does not fit the packet: address family", ErrMismatch}
	errProto      = &packetError{"nat: tuple does not fit the packet: protocol", ErrMismatch}
	errICMPError  = &packetError{"nat: tuple does not fit the packet: an ICMP error (use RewriteICMPError)", ErrMismatch}
	errNotError   = &packetError{"nat: tuple does not fit the packet: not an ICMP error", ErrMismatch}
)

// ipHeader locates the fields of an IP packet.
type ipHeader struct {
	v6    bool
	proto conntrack.Proto
	// l4 is the offset of the transport header; end is the end of the IP
	// packet (its total length; for a quote, what there is of it).
	l4, end int
	// frag is set for a fragment other than an atomic one; first is set
	// for a first fragment (offset 0).
	frag, first bool
	// fragHdr is the offset of the IPv6 fragment header, or 0; nextOff is
	// the offset of the next-header field that names it.
	fragHdr, nextOff int
}

// address offsets in the IPv4 and IPv6 headers.
const (
	v4Src, v4Dst = 12, 16
	v6Src, v6Dst = 8, 24
)

func (h *ipHeader) addrOffs() (src, dst, n int) {
	if h.v6 {
		return v6Src, v6Dst, 16
	}
	return v4Src, v4Dst, 4
}

// parseIP locates the headers of the IP packet b. A quote (the packet in an
// ICMP error) may be truncated after its IP header: its lengths are not
// checked against what is there.
func parseIP(b []byte, quote bool) (ipHeader, error) {
	var h ipHeader
	if len(b) == 0 {
		return h, errEmpty
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return h, errIPv4Header
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return h, errIPv4Header
		}
		h.end = len(b)
		if !quote {
			total := int(binary.BigEndian.Uint16(b[2:4]))
			if total < ihl || total > len(b) {
				return h, errIPv4Length
			}
			h.end = total
		}
		fo := binary.BigEndian.Uint16(b[6:8])
		h.frag, h.first = fo&0x3fff != 0, fo&0x1fff == 0
		h.proto, h.l4 = conntrack.Proto(b[9]), ihl
		return h, nil
	case 6:
		if len(b) < 40 {
			return h, errIPv6Length
		}
		h.v6, h.end = true, len(b)
		if !quote {
			total := 40 + int(binary.BigEndian.Uint16(b[4:6]))
			if total == 40 && b[6] != 59 || total > len(b) {
				return h, errIPv6Length // zero: a jumbogram, which no link of ours carries
			}
			h.end = total
		}
		return h, h.walkIPv6(b[:h.end])
	}
	return h, errVersion
}

// maxExtHeaders bounds the walk over IPv6 extension headers.
const maxExtHeaders = 8

// walkIPv6 follows the extension headers of b to the transport header.
func (h *ipHeader) walkIPv6(b []byte) error {
	next, nextOff, off := b[6], 6, 40
	h.first = true
	for range maxExtHeaders {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < off+8 {
				return errExtHeader
			}
			n := off + 8 + int(b[off+1])*8
			if n > len(b) {
				return errExtHeader
			}
			next, nextOff, off = b[off], off, n
		case 51: // authentication header: length in 4-byte units, minus 2
			if len(b) < off+8 {
				return errExtHeader
			}
			n := off + (int(b[off+1])+2)*4
			if n > len(b) {
				return errExtHeader
			}
			next, nextOff, off = b[off], off, n
		case 44: // fragment
			if len(b) < off+8 || h.fragHdr != 0 {
				return errExtHeader
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			h.fragHdr, h.nextOff = off, nextOff
			if fo&0xfff9 != 0 { // an offset, or more fragments
				// What follows is the fragmentable part: for a later
				// fragment, not headers at all.
				h.frag, h.first = true, fo&0xfff8 == 0
				h.proto, h.l4 = conntrack.Proto(b[off]), off+8
				return nil
			}
			next, nextOff, off = b[off], off, off+8
		default:
			h.proto, h.l4 = conntrack.Proto(next), off
			return nil
		}
	}
	return errExtHeader
}

// isICMPError reports whether an ICMP (IPv4) or ICMPv6 message of type typ
// is an error that quotes a packet.
func isICMPError(p conntrack.Proto, typ uint8) bool {
	if p == conntrack.ProtoICMP {
		switch typ {
		case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
			return true
		}
		return false
	}
	return typ >= 1 && typ <= 4 // unreachable, packet too big, time exceeded, parameter problem
}
