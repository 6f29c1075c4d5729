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

// ipv4Header writes a 20-byte IPv4 header for a packet of total bytes of
// protocol proto from src to dst, with its checksum, into b; DF for TCP
// only.
func ipv4Header(b []byte, total int, proto conntrack.Proto, src, dst netip.Addr) {
	clear(b[:20])
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(total))
	if proto == conntrack.ProtoTCP {
		// TCP is cut to the container's MSS; a datagram larger than the
		// bridge's MTU (a DNS answer, a big ping) must be fragmented on
		// the way, as the host's kernel has put it together.
		b[6] = 0x40 // DF
	}
	b[8] = 64
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
	ipv4Header(pkt, len(pkt), conntrack.ProtoUDP, src.Addr(), dst.Addr())
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
