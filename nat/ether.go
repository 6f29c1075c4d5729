package nat

import (
	"encoding/binary"
	"net/netip"

	"github.com/usernat/usernat/bridge"
)

// Ethernet and ARP framing: the gateway speaks them on each of its links.
const (
	etherHeader  = 14
	etherTypeIP4 = 0x0800
	etherTypeARP = 0x0806
	etherTypeIP6 = 0x86dd
	arpLen       = 28 // an Ethernet/IPv4 ARP body
	arpRequest   = 1
	arpReply     = 2
	minFrame     = 60 // without FCS
)

// putEther writes an Ethernet header for typ from src to dst into b.
func putEther(b []byte, dst, src bridge.MAC, typ uint16) {
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], typ)
}

// arpPacket is a parsed Ethernet/IPv4 ARP body.
type arpPacket struct {
	op                 uint16
	senderMAC          bridge.MAC
	senderIP, targetIP netip.Addr
	targetMAC          bridge.MAC
}

// parseARP parses an ARP body for Ethernet and IPv4; ok is false for
// anything else.
func parseARP(b []byte) (a arpPacket, ok bool) {
	if len(b) < arpLen ||
		binary.BigEndian.Uint16(b[0:2]) != 1 || // hardware: Ethernet
		binary.BigEndian.Uint16(b[2:4]) != etherTypeIP4 ||
		b[4] != 6 || b[5] != 4 {
		return arpPacket{}, false
	}
	a.op = binary.BigEndian.Uint16(b[6:8])
	copy(a.senderMAC[:], b[8:14])
	a.senderIP = netip.AddrFrom4([4]byte(b[14:18]))
	copy(a.targetMAC[:], b[18:24])
	a.targetIP = netip.AddrFrom4([4]byte(b[24:28]))
	return a, a.op == arpRequest || a.op == arpReply
}

// appendARPFrame appends a whole Ethernet frame carrying an ARP packet,
// padded to the Ethernet minimum.
func appendARPFrame(b []byte, dst bridge.MAC, a arpPacket) []byte {
	start := len(b)
	b = append(b, make([]byte, minFrame)...)
	f := b[start:]
	putEther(f, dst, a.senderMAC, etherTypeARP)
	p := f[etherHeader:]
	binary.BigEndian.PutUint16(p[0:2], 1)
	binary.BigEndian.PutUint16(p[2:4], etherTypeIP4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:8], a.op)
	copy(p[8:14], a.senderMAC[:])
	s, t := a.senderIP.As4(), a.targetIP.As4()
	copy(p[14:18], s[:])
	copy(p[18:24], a.targetMAC[:])
	copy(p[24:28], t[:])
	return b
}
