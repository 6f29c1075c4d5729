package bridge

import (
	"encoding/binary"
	"errors"
)

// Offload is what a frame carries besides its bytes when it comes from or
// goes to a port that passes work along, such as a TAP device opened with
// TAPConfig.Offload: the fields of the virtio-net header. The zero value
// describes a complete frame.
//
// With OffloadNeedsCsum, the transport checksum at CsumStart+CsumOffset
// is still to be computed over the bytes from CsumStart to the end: the
// field holds only the pseudo-header's sum, not complemented. With GSO
// set, the frame is one large TCP segment, its headers followed by more
// payload than the MTU allows, to be cut into segments of GSOSize payload
// bytes each (TCP segmentation offload); such a frame always needs its
// checksum.
type Offload struct {
	Flags      uint8  // OffloadNeedsCsum, OffloadDataValid
	GSO        uint8  // GSONone, GSOTCPv4, GSOTCPv6, possibly with GSOECN
	HdrLen     uint16 // length of the headers, as the sender gave it
	GSOSize    uint16 // payload bytes per segment, with GSO
	CsumStart  uint16 // offset of the transport header in the frame
	CsumOffset uint16 // offset of the checksum field from CsumStart
}

// Offload flags and GSO types, as virtio-net numbers them.
const (
	OffloadNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	OffloadDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID

	GSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN: the segments may carry CWR
)

// virtio_net_hdr, as TAP devices with IFF_VNET_HDR read and write it, and
// the TUNSETOFFLOAD bits that let the kernel send such frames.
const (
	vnetHdrLen     = 10
	tunFCsum       = 0x01 // TUN_F_CSUM
	tunFTSO4       = 0x02 // TUN_F_TSO4
	tunFTSO6       = 0x04 // TUN_F_TSO6
	tunFTSOECN     = 0x08 // TUN_F_TSO_ECN
	csumFieldBytes = 2
)

// OffloadPort is a Port that can pass checksum and segmentation work
// along: frames it reads may carry a checksum still to compute or be
// larger than the MTU (GSO), and it accepts such frames. A TAP opened
// with TAPConfig.Offload is one when Offloading reports true; the bridge
// hands it frames as they came and computes checksums or cuts segments
// only for ports that are not. The gateway's router port is one too.
type OffloadPort interface {
	Port
	// Offloading reports whether the port passes work along; when
	// false, the bridge uses ReadFrames and WriteFrames.
	Offloading() bool
	// ReadFramesOffload is ReadFrames with each frame's Offload in meta.
	ReadFramesOffload(bufs [][]byte, sizes []int, meta []Offload) (int, error)
	// WriteFramesOffload is WriteFrames with each frame's Offload in meta.
	WriteFramesOffload(bufs [][]byte, meta []Offload) (int, error)
}

// FrameServer is an OffloadPort that reads in a loop of its own, which
// readers prefer to calling ReadFramesOffload again and again: a new call
// cannot know that the last one found the device empty, so it reads once
// more, to find nothing, where a loop of its own waits for the device's
// news then. A system call less per wake-up.
type FrameServer interface {
	OffloadPort
	// ServeFramesOffload reads frames into bufs as ReadFramesOffload
	// does and hands each batch to fn, with its count; fn may put other
	// buffers of the same size in bufs. It returns nil when fn returns
	// false, else the error that ended the reading, as
	// ReadFramesOffload's. fn runs while the port is being read, which
	// its Close may wait for: fn must not wait for the one closing it.
	ServeFramesOffload(bufs [][]byte, sizes []int, meta []Offload, fn func(n int) bool) error
}

// ServeFrames reads frames from port into bufs until a read fails or fn
// says stop (it returns false), and hands each batch to fn, with its
// count; fn may put other buffers of the same size in bufs. With off, the
// port's offloading self (Offloading true), each frame's Offload is in
// meta, and a FrameServer serves them in its own loop. It returns nil when
// fn said stop, else the error of the read that failed.
func ServeFrames(port Port, off OffloadPort, bufs [][]byte, sizes []int, meta []Offload, fn func(n int) bool) error {
	if s, ok := off.(FrameServer); ok {
		return s.ServeFramesOffload(bufs, sizes, meta, fn)
	}
	for {
		var n int
		var err error
		if off != nil {
			n, err = off.ReadFramesOffload(bufs, sizes, meta)
		} else {
			n, err = port.ReadFrames(bufs, sizes)
		}
		if n > 0 && !fn(n) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// MaxGSOFrame is the largest frame a GSO segment makes: a 64 KiB IP
// packet behind an Ethernet header and a VLAN tag.
const MaxGSOFrame = 65535 + etherHeader + vlanTag

// Valid reports whether o fits a frame of n bytes: a pending checksum
// lies inside it, and a GSO frame names a segment size and a transport
// header within it.
func (o Offload) Valid(n int) bool {
	if o.Flags&OffloadNeedsCsum != 0 && int(o.CsumStart)+int(o.CsumOffset)+csumFieldBytes > n {
		return false
	}
	switch o.GSO &^ GSOECN {
	case GSONone:
		return o.GSO == GSONone
	case GSOTCPv4, GSOTCPv6:
		return o.Flags&OffloadNeedsCsum != 0 && o.GSOSize > 0 && o.CsumOffset == 16 &&
			int(o.CsumStart)+20 <= n && n <= MaxGSOFrame
	}
	return false
}

// HeaderLen is the length, from the frame's start, of the headers a TCP
// GSO frame (valid for o) repeats in each segment: up to the end of its
// TCP header, whose length it reads at CsumStart. (o.HdrLen is the
// sender's hint, which not every kernel fills in.)
func (o Offload) HeaderLen(frame []byte) int {
	l4 := int(o.CsumStart)
	return l4 + int(frame[l4+12]>>4)*4
}

// SegmentLen is the length of the largest frame the TCP GSO frame (valid
// for o) is cut into: its headers and one segment of payload, GSOSize
// bytes or all there is when that is less (a sender may flag a frame
// for GSO whose payload would fit one segment of a larger GSOSize).
func (o Offload) SegmentLen(frame []byte) int {
	hdr := o.HeaderLen(frame)
	return hdr + min(int(o.GSOSize), max(len(frame)-hdr, 0))
}

// CompleteChecksum computes the pending checksum of frame, as o describes
// it, in software, the way the kernel's skb_checksum_help does: the field
// holds the pseudo-header sum, and the ones' complement of the sum from
// CsumStart to the end goes there; o then says the data is valid. It
// reports whether there was a checksum to compute.
// Zero is sent as 0xffff, which verifies the same and keeps UDP's "no
// checksum" meaning out of reach. A GSO frame is left as it is: its
// segments get their checksums as they are cut.
func CompleteChecksum(frame []byte, o *Offload) bool {
	if o.Flags&OffloadNeedsCsum == 0 || o.GSO != GSONone {
		return false
	}
	c := ^sum16(frame[o.CsumStart:])
	if c == 0 {
		c = 0xffff
	}
	at := int(o.CsumStart) + int(o.CsumOffset)
	binary.BigEndian.PutUint16(frame[at:], c)
	o.Flags = OffloadDataValid
	return true
}

// Errors of Segment.
var (
	ErrNotGSO     = errors.New("bridge: frame is not a GSO frame")
	ErrBadGSO     = errors.New("bridge: GSO frame with inconsistent headers")
	ErrSegmentBuf = errors.New("bridge: segment buffer too small")
)

// TCP flags Segment adjusts.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// Segment cuts the GSO frame, whose IP header starts at l3 (14 for an
// untagged Ethernet frame), into frames of at most o.GSOSize payload
// bytes, as the kernel's TCP segmentation does: each gets a copy of the
// headers with its own IP length (and IPv4 identifier and header
// checksum), sequence number and a complete TCP checksum; FIN and PSH stay
// on the last segment only, CWR on the first. emit is called with each
// segment, in order, built in buf, which must hold the headers and
// o.GSOSize bytes; the segment is valid until emit returns. frame is not
// modified. Segment does not allocate.
func Segment(frame []byte, l3 int, o Offload, buf []byte, emit func(seg []byte)) error {
	var s segmenter
	if err := s.init(frame, l3, o); err != nil {
		return err
	}
	if len(buf) < s.hdr+min(s.mss, len(frame)-s.hdr) {
		return ErrSegmentBuf
	}
	for {
		n, more := s.next(buf)
		emit(buf[:n])
		if !more {
			return nil
		}
	}
}

// segmenter cuts one GSO frame into segments, one call of next at a time.
type segmenter struct {
	frame       []byte
	l3, l4, hdr int
	mss         int
	v4          bool
	pseudo      uint64 // addresses and protocol; the length is per segment
	seq         uint32
	flags       uint8
	id          uint16
	off, i      int // payload bytes done, segments made
	done        bool
}

func (s *segmenter) init(frame []byte, l3 int, o Offload) error {
	kind := o.GSO &^ GSOECN
	if kind != GSOTCPv4 && kind != GSOTCPv6 {
		return ErrNotGSO
	}
	if !o.Valid(len(frame)) || l3 < 0 || l3 > len(frame) {
		return ErrBadGSO
	}
	ip := frame[l3:]
	l4 := int(o.CsumStart)
	var pseudo uint64
	if kind == GSOTCPv4 {
		// An IHL under 5 is no IPv4 header, refused as Linux's
		// inet_gso_segment refuses it; under 3, the fields rewritten in
		// each segment would even lie in its TCP header.
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0x0f < 5 || ip[9] != 6 || l3+int(ip[0]&0x0f)*4 != l4 {
			return ErrBadGSO
		}
		pseudo = uint64(binary.BigEndian.Uint32(ip[12:])) + uint64(binary.BigEndian.Uint32(ip[16:])) + 6
	} else {
		if len(ip) < 40 || ip[0]>>4 != 6 || l4 < l3+40 {
			return ErrBadGSO
		}
		for i := 8; i < 40; i += 4 {
			pseudo += uint64(binary.BigEndian.Uint32(ip[i:]))
		}
		pseudo += 6
	}
	thl := int(frame[l4+12]>>4) * 4
	hdr := l4 + thl
	if thl < 20 || hdr > len(frame) {
		return ErrBadGSO
	}
	// The largest segment's IP packet must fit its length field.
	if ip := hdr - l3 + min(int(o.GSOSize), len(frame)-hdr); kind == GSOTCPv4 && ip > 65535 || kind == GSOTCPv6 && ip-40 > 65535 {
		return ErrBadGSO
	}
	*s = segmenter{
		frame: frame, l3: l3, l4: l4, hdr: hdr, mss: int(o.GSOSize),
		v4: kind == GSOTCPv4, pseudo: pseudo,
		seq:   binary.BigEndian.Uint32(frame[l4+4:]),
		flags: frame[l4+13],
		id:    binary.BigEndian.Uint16(ip[4:]),
	}
	return nil
}

// next builds the next segment in buf, which holds at least the headers
// and one segment's payload, and returns its length and whether more
// follow.
func (s *segmenter) next(buf []byte) (int, bool) {
	payload := s.frame[s.hdr:]
	n := min(s.mss, len(payload)-s.off)
	seg := buf[:s.hdr+n]
	copy(seg, s.frame[:s.hdr])
	copy(seg[s.hdr:], payload[s.off:s.off+n])
	ip := seg[s.l3:]
	if s.v4 {
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		binary.BigEndian.PutUint16(ip[4:], s.id+uint16(s.i))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^sum16(ip[:s.l4-s.l3]))
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
	}
	tcp := seg[s.l4:]
	binary.BigEndian.PutUint32(tcp[4:], s.seq+uint32(s.off))
	f := s.flags
	if s.off+n < len(payload) {
		f &^= tcpFIN | tcpPSH
	}
	if s.i > 0 {
		f &^= tcpCWR
	}
	tcp[13] = f
	tcp[16], tcp[17] = 0, 0
	sum := s.pseudo + uint64(len(tcp)) + uint64(sum16(tcp))
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(tcp[16:], ^uint16(sum))
	s.off += n
	s.i++
	s.done = s.off >= len(payload)
	return len(seg), !s.done
}

// left is the number of segments next has not made yet: a frame with no
// payload is one segment until next makes it.
func (s *segmenter) left() int {
	if s.done || s.mss <= 0 {
		return 0
	}
	rest := max(len(s.frame)-s.hdr-s.off, 0)
	return max((rest+s.mss-1)/s.mss, 1)
}

// sum16 is the Internet checksum's ones' complement sum of b, folded to 16
// bits and not complemented. It adds 32-bit words into 64 bits, which is
// the same sum since 2^16 ≡ 1 modulo 2^16-1, and cannot overflow for a
// frame.
func sum16(b []byte) uint16 {
	var s uint64
	for len(b) >= 16 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:])) +
			uint64(binary.BigEndian.Uint32(b[8:])) + uint64(binary.BigEndian.Uint32(b[12:]))
		b = b[16:]
	}
	for len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// maxVLANTags is how many stacked tags l3Offset looks past, as Linux's
// VLAN_MAX_DEPTH.
const maxVLANTags = 8

// l3Offset is where the network header of an Ethernet frame starts: after
// the header and the 802.1Q or 802.1ad tags it carries, stacked or not,
// as Linux's skb_network_protocol finds it for segmentation. An 802.1ad
// VLAN device over an offloading TAP sends GSO frames behind an 802.1ad
// tag.
func l3Offset(frame []byte) int {
	off := etherHeader
	for range maxVLANTags {
		if len(frame) < off+vlanTag {
			break
		}
		if et := binary.BigEndian.Uint16(frame[off-2:]); et != etherTypeVLAN && et != etherTypeQinQ {
			break
		}
		off += vlanTag
	}
	return off
}
