package bridge

import "encoding/binary"

// offload is what a frame carries besides its bytes when it comes from an
// offloading TAP: the virtio-net header fields the bridge passes on.
type offload struct {
	flags      uint8  // vnetNeedsCsum, vnetDataValid
	csumStart  uint16 // from the start of the Ethernet frame
	csumOffset uint16 // from csumStart
}

// virtio_net_hdr, as TAP devices with IFF_VNET_HDR read and write it.
const (
	vnetHdrLen     = 10
	vnetNeedsCsum  = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetDataValid  = 2 // VIRTIO_NET_HDR_F_DATA_VALID
	vnetGSONone    = 0
	tunFCsum       = 0x01 // TUN_F_CSUM for TUNSETOFFLOAD
	csumFieldBytes = 2
)

// offloadPort is a Port that can pass checksum work along: frames it reads
// may carry a checksum still to compute, and it accepts such frames. TAP
// implements it when opened with TAPConfig.Offload.
type offloadPort interface {
	Port
	offloading() bool
	readFramesOffload(bufs [][]byte, sizes []int, meta []offload) (int, error)
	writeFramesOffload(bufs [][]byte, meta []offload) (int, error)
}

// valid reports whether a pending checksum lies inside a frame of n bytes.
func (o offload) valid(n int) bool {
	return o.flags&vnetNeedsCsum == 0 || int(o.csumStart)+int(o.csumOffset)+csumFieldBytes <= n
}

// completeChecksum computes a pending checksum in software, as the
// kernel's skb_checksum_help: the field holds the pseudo-header sum, and
// the ones' complement of the sum from csumStart to the end goes there.
// Zero is sent as 0xffff, which verifies the same and keeps UDP's "no
// checksum" meaning out of reach.
func completeChecksum(frame []byte, o *offload) bool {
	if o.flags&vnetNeedsCsum == 0 {
		return false
	}
	c := ^sum16(frame[o.csumStart:])
	if c == 0 {
		c = 0xffff
	}
	at := int(o.csumStart) + int(o.csumOffset)
	binary.BigEndian.PutUint16(frame[at:], c)
	o.flags = vnetDataValid
	return true
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
