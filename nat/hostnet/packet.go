package hostnet

import (
	"encoding/binary"
	"net/netip"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// bridgeNone is the Offload of a complete packet.
var bridgeNone bridge.Offload

// defaultTTL is the TTL of the packets the uplink makes for a container
// when it does not know the one they came with: Linux's default.
const defaultTTL = 64

// ipv4Header writes a 20-byte IPv4 header for a packet of total bytes of
// protocol proto from src to dst with ttl, with its checksum, into b; DF
// for TCP only.
func ipv4Header(b []byte, total int, proto conntrack.Proto, ttl uint8, src, dst netip.Addr) {
	clear(b[:20])
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(total))
	if proto == conntrack.ProtoTCP {
		// TCP is cut to the container's MSS; a datagram larger than the
		// bridge's MTU (a DNS answer, a big ping) must be fragmented on
		// the way, as the host's kernel has put it together.
		b[6] = 0x40 // DF
	}
	b[8] = ttl
	b[9] = byte(proto)
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], nat.Checksum(b[:20]))
}

// udpPacket builds in buf the IPv4 UDP packet from src to dst carrying
// payload, which must already sit at buf[28:]: the uplink reads datagrams
// there, so they are not copied again.
func udpPacket(buf []byte, src, dst netip.AddrPort, n int) []byte {
	pkt := buf[:28+n]
	ipv4Header(pkt, len(pkt), conntrack.ProtoUDP, defaultTTL, src.Addr(), dst.Addr())
	u := pkt[20:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	u[6], u[7] = 0, 0
	c := ^nat.Sum(u, pseudo(pkt, conntrack.ProtoUDP, len(u)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return pkt
}

// pseudo is the ones' complement sum of the IPv4 pseudo-header of pkt's
// transport checksum over n bytes.
func pseudo(pkt []byte, proto conntrack.Proto, n int) uint16 {
	var w [4]byte
	binary.BigEndian.PutUint16(w[0:], uint16(proto))
	binary.BigEndian.PutUint16(w[2:], uint16(n))
	return nat.Sum(w[:], nat.Sum(pkt[12:20], 0))
}

// putTCPHeader writes into t the 20 bytes of a TCP header from port src
// to dst, with a checksum and urgent pointer of zero; hl is the length
// of the header with its options, which the caller writes after.
func putTCPHeader(t []byte, src, dst uint16, seq, ack uint32, flags uint8, wnd uint16, hl int) {
	binary.BigEndian.PutUint16(t[0:], src)
	binary.BigEndian.PutUint16(t[2:], dst)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte(hl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], wnd)
	clear(t[16:20])
}

// tcpSeg is a TCP segment from a container: its header, options and
// payload. Its length is at least 20 bytes (tcpMinSize).
type tcpSeg []byte

// tcpMinSize is the length of a TCP header without options.
const tcpMinSize = 20

func (t tcpSeg) srcPort() uint16 { return binary.BigEndian.Uint16(t[0:]) }
func (t tcpSeg) dstPort() uint16 { return binary.BigEndian.Uint16(t[2:]) }
func (t tcpSeg) seq() uint32     { return binary.BigEndian.Uint32(t[4:]) }
func (t tcpSeg) ack() uint32     { return binary.BigEndian.Uint32(t[8:]) }
func (t tcpSeg) flags() uint8    { return t[13] }
func (t tcpSeg) window() uint16  { return binary.BigEndian.Uint16(t[14:]) }

// dataOff is the length of the header with its options, as it says.
func (t tcpSeg) dataOff() int { return int(t[12]>>4) * 4 }

// options are the header's options; none when its length is wrong.
func (t tcpSeg) options() []byte {
	if d := t.dataOff(); d > tcpMinSize && d <= len(t) {
		return t[tcpMinSize:d]
	}
	return nil
}

// payload is what the segment carries after its header.
func (t tcpSeg) payload() []byte { return t[min(t.dataOff(), len(t)):] }

// synOptions reads the options of a SYN (or SYN-ACK): its MSS, 536 when
// it has none or says 0 (RFC 9293, 3.7.1), its window scale, -1 when it has none
// (RFC 7323), at most 14, and whether it permits SACK (RFC 2018).
// Malformed options end the walk.
func synOptions(o []byte) (mss, ws int, sack bool) {
	mss, ws = 536, -1
	for len(o) > 0 {
		switch o[0] {
		case 0: // end of options
			return mss, ws, sack
		case 1: // no-operation
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return mss, ws, sack
		}
		switch {
		case o[0] == 2 && o[1] == 4 && binary.BigEndian.Uint16(o[2:]) != 0: // 0 is none, as Linux reads it
			mss = int(binary.BigEndian.Uint16(o[2:]))
		case o[0] == 3 && o[1] == 3:
			ws = min(int(o[2]), 14)
		case o[0] == 4 && o[1] == 2:
			sack = true
		}
		o = o[o[1]:]
	}
	return mss, ws, sack
}
