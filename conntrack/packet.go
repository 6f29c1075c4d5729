package conntrack

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Kind says what the tracker makes of a decoded packet.
type Kind uint8

const (
	// KindInvalid is a packet that could not be decoded; it is not tracked.
	KindInvalid Kind = iota
	// KindFlow is a packet of a flow: Packet.Tuple is set.
	KindFlow
	// KindICMPError is an ICMP or ICMPv6 error: Packet.Quoted is the tuple
	// of the packet it quotes, as that packet was sent.
	KindICMPError
	// KindFragment is an IP fragment. Fragments carry no complete transport
	// header, so they are reassembled before tracking, as the kernel does.
	KindFragment
)

func (k Kind) String() string {
	switch k {
	case KindFlow:
		return "flow"
	case KindICMPError:
		return "icmp-error"
	case KindFragment:
		return "fragment"
	}
	return "invalid"
}

// TCP header flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// TCPHeader holds what the TCP state machine reads from a segment.
type TCPHeader struct {
	Seq, Ack uint32
	// DataLen is the number of payload bytes.
	DataLen int
	Window  uint16
	Flags   uint8
	// WScale is the window scale option of a SYN, or -1 when it has none.
	WScale int8
	// SACKPerm is set when a SYN carries the SACK-permitted option.
	SACKPerm bool
	// SACKMax is the highest right edge of the SACK blocks, valid when
	// HasSACK is set.
	SACKMax uint32
	HasSACK bool
}

// Packet is a decoded IPv4 or IPv6 packet. Decode fills a Packet the caller
// owns, so decoding does not allocate; a Packet keeps no reference to the
// bytes it was decoded from.
type Packet struct {
	Kind Kind
	// Tuple is the flow tuple of a KindFlow packet.
	Tuple Tuple
	// Quoted is the tuple of the packet a KindICMPError packet quotes.
	Quoted Tuple
	// Len is the length of the IP packet (header and payload), the number
	// the byte counters add.
	Len int
	// L4Off is the offset of the transport header.
	L4Off int
	// TCP is set for TCP packets.
	TCP TCPHeader
}

// ErrMalformed is wrapped by every error of Decode.
var ErrMalformed = errors.New("conntrack: malformed packet")

type decodeError string

func (e decodeError) Error() string        { return "conntrack: malformed packet: " + string(e) }
func (e decodeError) Is(target error) bool { return target == ErrMalformed }

const (
	errEmpty      = decodeError("empty")
	errVersion    = decodeError("not IPv4 or IPv6")
	errIPv4Header = decodeError("bad IPv4 header length")
	errIPv4Length = decodeError("bad IPv4 total length")
	errIPv6Length = decodeError("bad IPv6 payload length")
	errExtHeader  = decodeError("bad IPv6 extension header")
	errTCPHeader  = decodeError("truncated TCP header")
	errTCPOffset  = decodeError("bad TCP data offset")
	errTCPFlags   = decodeError("invalid TCP flag combination")
	errUDPHeader  = decodeError("bad UDP length")
	errICMPHeader = decodeError("truncated ICMP header")
	errICMPType   = decodeError("ICMP type that is neither a query nor an error")
	errICMPQuote  = decodeError("ICMP error quoting no usable packet")
	errMapped     = decodeError("IPv4-mapped address in an IPv6 header")
)

// maxExtHeaders bounds the walk over IPv6 extension headers.
const maxExtHeaders = 8

// Decode parses b, an IPv4 or IPv6 packet starting at its IP header, into p.
// It checks the structure of the headers (lengths, offsets, TCP flag
// combinations), not checksums: the caller verifies those, as the kernel
// does before conntrack sees a packet. On error p.Kind is KindInvalid and the
// error wraps ErrMalformed.
func (p *Packet) Decode(b []byte) error {
	*p = Packet{}
	err := p.decode(b)
	if err != nil {
		p.Kind = KindInvalid
	}
	return err
}

func (p *Packet) decode(b []byte) error {
	if len(b) == 0 {
		return errEmpty
	}
	var (
		proto    Proto
		src, dst netip.Addr
		l4       []byte
		frag     bool
	)
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return errIPv4Header
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if ihl < 20 || len(b) < ihl {
			return errIPv4Header
		}
		if total < ihl || total > len(b) {
			return errIPv4Length
		}
		frag = binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 // MF or an offset
		proto = Proto(b[9])
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.Len, p.L4Off = total, ihl
		l4 = b[ihl:total]
	case 6:
		if len(b) < 40 {
			return errIPv6Length
		}
		total := 40 + int(binary.BigEndian.Uint16(b[4:6]))
		if total == 40 && b[6] != 59 || total > len(b) {
			// A zero payload length means a jumbogram, which no link of
			// ours carries.
			return errIPv6Length
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		if src.Is4In6() || dst.Is4In6() {
			// RFC 4291 keeps these off the wire; accepting them would
			// let an IPv6 packet pose as an IPv4 flow.
			return errMapped
		}
		next, off, isFrag, _, err := walkIPv6(b[:total], b[6])
		if err != nil {
			return err
		}
		proto, frag = Proto(next), isFrag
		p.Len, p.L4Off = total, off
		l4 = b[off:total]
	default:
		return errVersion
	}
	if frag {
		p.Kind = KindFragment
		p.Tuple = Tuple{Src: src, Dst: dst, Proto: proto}
		return nil
	}
	return p.decodeL4(proto, src, dst, l4)
}

// walkIPv6 follows the extension headers of the IPv6 packet b, whose first
// next-header value is next, to the transport header. An atomic fragment
// (offset 0, no more fragments) is not a fragment; later is set for a
// fragment with an offset, which holds no transport header.
func walkIPv6(b []byte, next uint8) (proto uint8, off int, frag, later bool, err error) {
	off = 40
	seenFrag := false
	for range maxExtHeaders {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < off+8 {
				return 0, 0, false, false, errExtHeader
			}
			n := off + 8 + int(b[off+1])*8
			if n > len(b) {
				return 0, 0, false, false, errExtHeader
			}
			next, off = b[off], n
		case 51: // authentication header: length in 4-byte units, minus 2
			if len(b) < off+8 {
				return 0, 0, false, false, errExtHeader
			}
			n := off + (int(b[off+1])+2)*4
			if n > len(b) {
				return 0, 0, false, false, errExtHeader
			}
			next, off = b[off], n
		case 44: // fragment
			if len(b) < off+8 || seenFrag {
				// A second fragment header is malformed (RFC 8200 4.1),
				// as nat's rewriter also holds.
				return 0, 0, false, false, errExtHeader
			}
			seenFrag = true
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			if fo&0xfff9 != 0 { // an offset, or more fragments
				return b[off], off + 8, true, fo&0xfff8 != 0, nil
			}
			next, off = b[off], off+8
		default:
			return next, off, false, false, nil
		}
	}
	return 0, 0, false, false, errExtHeader
}

func (p *Packet) decodeL4(proto Proto, src, dst netip.Addr, l4 []byte) error {
	p.Tuple = Tuple{Src: src, Dst: dst, Proto: proto}
	switch proto {
	case ProtoTCP:
		if err := p.TCP.decode(l4); err != nil {
			return err
		}
		p.Tuple.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.Tuple.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case ProtoUDP:
		if len(l4) < 8 {
			return errUDPHeader
		}
		if n := int(binary.BigEndian.Uint16(l4[4:6])); n < 8 || n > len(l4) {
			return errUDPHeader
		}
		p.Tuple.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.Tuple.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case ProtoICMP, ProtoICMPv6:
		if (proto == ProtoICMP) != src.Is4() {
			return errVersion
		}
		if len(l4) < 8 {
			return errICMPHeader
		}
		typ, code := l4[0], l4[1]
		if isICMPError(proto, typ) {
			q, err := decodeQuoted(proto, l4[8:])
			if err != nil {
				return err
			}
			p.Kind, p.Quoted, p.Tuple = KindICMPError, q, Tuple{Src: src, Dst: dst, Proto: proto}
			return nil
		}
		if _, ok := icmpReplyType(proto, typ); !ok {
			return errICMPType
		}
		p.Tuple = ICMPTuple(src, dst, typ, code, binary.BigEndian.Uint16(l4[4:6]))
	}
	p.Kind = KindFlow
	return nil
}

func isICMPError(p Proto, typ uint8) bool {
	if p == ProtoICMP {
		switch typ {
		case 3, 4, 5, 11, 12: // unreachable, source quench, redirect, time exceeded, parameter problem
			return true
		}
		return false
	}
	return typ >= 1 && typ <= 4 // unreachable, packet too big, time exceeded, parameter problem
}

// decodeQuoted parses the packet an ICMP error quotes: an IP header and at
// least the first eight bytes of its transport header. The quote may be
// truncated, so its lengths are not checked against what is there.
func decodeQuoted(outer Proto, b []byte) (Tuple, error) {
	var (
		proto    Proto
		src, dst netip.Addr
		l4       []byte
	)
	switch {
	case outer == ProtoICMP && len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return Tuple{}, errICMPQuote
		}
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return Tuple{}, errICMPQuote // a later fragment has no ports
		}
		proto = Proto(b[9])
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:]
	case outer == ProtoICMPv6 && len(b) >= 40 && b[0]>>4 == 6:
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		// A quoted first fragment holds the transport header, as in
		// IPv4: only a later one (an offset) has no ports.
		next, off, _, later, err := walkIPv6(b, b[6])
		if err != nil || later || src.Is4In6() || dst.Is4In6() {
			return Tuple{}, errICMPQuote
		}
		proto, l4 = Proto(next), b[off:]
	default:
		return Tuple{}, errICMPQuote
	}
	t := Tuple{Src: src, Dst: dst, Proto: proto}
	if !proto.hasPorts() {
		return t, nil
	}
	if len(l4) < 8 {
		return Tuple{}, errICMPQuote
	}
	if proto.isICMP() {
		if (proto == ProtoICMP) != src.Is4() {
			return Tuple{}, errICMPQuote // the other family's ICMP, as decodeL4 refuses
		}
		if isICMPError(proto, l4[0]) {
			return Tuple{}, errICMPQuote // an error about an error is never sent
		}
		if _, ok := icmpReplyType(proto, l4[0]); !ok {
			return Tuple{}, errICMPQuote
		}
		return ICMPTuple(src, dst, l4[0], l4[1], binary.BigEndian.Uint16(l4[4:6])), nil
	}
	t.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	t.DstPort = binary.BigEndian.Uint16(l4[2:4])
	return t, nil
}

func (h *TCPHeader) decode(b []byte) error {
	if len(b) < 20 {
		return errTCPHeader
	}
	doff := int(b[12]>>4) * 4
	if doff < 20 || doff > len(b) {
		return errTCPOffset
	}
	*h = TCPHeader{
		Seq:     binary.BigEndian.Uint32(b[4:8]),
		Ack:     binary.BigEndian.Uint32(b[8:12]),
		Flags:   b[13],
		Window:  binary.BigEndian.Uint16(b[14:16]),
		DataLen: len(b) - doff,
		WScale:  -1,
	}
	if !validTCPFlags(h.Flags) {
		return errTCPFlags
	}
	h.options(b[20:doff])
	return nil
}

// validTCPFlags accepts the flag combinations a TCP stack sends, ignoring
// PSH, ECE and CWR; anything else (SYN with FIN, no flags at all, ...) is
// malformed, as in the kernel's tcp_error.
func validTCPFlags(f uint8) bool {
	switch f &^ (TCPPsh | TCPEce | TCPCwr) {
	case TCPSyn, TCPSyn | TCPUrg, TCPSyn | TCPAck,
		TCPRst, TCPRst | TCPAck,
		TCPFin | TCPAck, TCPFin | TCPAck | TCPUrg,
		TCPAck, TCPAck | TCPUrg:
		return true
	}
	return false
}

// options reads the window scale and SACK-permitted options of a SYN and
// the SACK blocks of any segment. Malformed options end the walk.
func (h *TCPHeader) options(o []byte) {
	for len(o) > 0 {
		switch o[0] {
		case 0: // end of options
			return
		case 1: // no-op
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return
		}
		n := int(o[1])
		switch {
		case o[0] == 3 && n == 3 && h.Flags&TCPSyn != 0:
			s := o[2]
			if s > 14 { // RFC 7323: larger shifts are treated as 14
				s = 14
			}
			h.WScale = int8(s)
		case o[0] == 4 && n == 2 && h.Flags&TCPSyn != 0:
			h.SACKPerm = true
		case o[0] == 5 && n >= 10 && (n-2)%8 == 0:
			for i := 2; i+8 <= n; i += 8 {
				right := binary.BigEndian.Uint32(o[i+4 : i+8])
				if !h.HasSACK || seqAfter(right, h.SACKMax) {
					h.SACKMax, h.HasSACK = right, true
				}
			}
		}
		o = o[n:]
	}
}

// seqAfter reports whether sequence number a comes after b (RFC 1982).
func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

// seqBefore reports whether sequence number a comes before b.
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }
