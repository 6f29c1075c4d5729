package bridge

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// PortSecurity pins the source addresses a port may use, so that a
// container cannot pretend to be another one. A frame that breaks the rule
// is dropped and counted in Counters.DropFiltered.
//
//   - The frame's source MAC must be MAC. For ARP, so must the sender
//     hardware address.
//   - When Addrs is not empty, IPv4 packets and ARP messages must carry one
//     of its IPv4 addresses as source (or sender) address, or 0.0.0.0 (DHCP
//     and ARP probes); IPv6 packets one of its IPv6 addresses, the
//     unspecified address (duplicate address detection) or a link-local
//     address (fe80::/10, which neighbour discovery needs). VLAN-tagged
//     frames are dropped, as their payload would escape the check. Other
//     EtherTypes are checked by MAC only.
type PortSecurity struct {
	MAC   MAC
	Addrs []netip.Addr
}

// portSecurity is PortSecurity compiled for the hot path.
type portSecurity struct {
	mac     MAC
	checkIP bool
	v4      [][4]byte
	v6      [][16]byte
}

func (s *PortSecurity) compile() (*portSecurity, error) {
	if !s.MAC.isStation() {
		return nil, fmt.Errorf("bridge: port security: MAC %v is not a unicast address", s.MAC)
	}
	c := &portSecurity{mac: s.MAC, checkIP: len(s.Addrs) > 0}
	for _, a := range s.Addrs {
		a = a.Unmap()
		switch {
		case a.Is4():
			c.v4 = append(c.v4, a.As4())
		case a.Is6():
			c.v6 = append(c.v6, a.As16())
		default:
			return nil, fmt.Errorf("bridge: port security: invalid address %v", a)
		}
	}
	return c, nil
}

const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
)

// allows reports whether frame, at least an Ethernet header long, keeps to
// the policy.
func (s *portSecurity) allows(frame []byte) bool {
	if MAC(frame[6:12]) != s.mac {
		return false
	}
	p := frame[etherHeader:]
	et := binary.BigEndian.Uint16(frame[12:14])
	if !s.checkIP {
		// ARP's sender hardware address is pinned whatever Addrs says.
		return et != etherTypeARP || arpIPv4(p) && MAC(p[8:14]) == s.mac
	}
	switch et {
	case etherTypeIPv4:
		if len(p) < 20 || p[0]>>4 != 4 {
			return false
		}
		return s.allow4([4]byte(p[12:16]))
	case etherTypeARP:
		return arpIPv4(p) && MAC(p[8:14]) == s.mac && s.allow4([4]byte(p[14:18]))
	case etherTypeIPv6:
		if len(p) < 40 || p[0]>>4 != 6 {
			return false
		}
		return s.allow6([16]byte(p[8:24]))
	case etherTypeVLAN, etherTypeQinQ:
		return false
	}
	return true
}

// arpIPv4 reports whether p is a whole ARP message for IPv4 over
// Ethernet: htype Ethernet, ptype IPv4, hlen 6, plen 4.
func arpIPv4(p []byte) bool {
	return len(p) >= 28 && binary.BigEndian.Uint16(p[0:2]) == 1 &&
		binary.BigEndian.Uint16(p[2:4]) == etherTypeIPv4 && p[4] == 6 && p[5] == 4
}

func (s *portSecurity) allow4(a [4]byte) bool {
	if a == [4]byte{} {
		return true
	}
	for _, v := range s.v4 {
		if v == a {
			return true
		}
	}
	return false
}

func (s *portSecurity) allow6(a [16]byte) bool {
	if a == [16]byte{} || a[0] == 0xfe && a[1]&0xc0 == 0x80 {
		return true
	}
	for _, v := range s.v6 {
		if v == a {
			return true
		}
	}
	return false
}
