package bridge

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func ipv4Frame(src MAC, srcIP netip.Addr) []byte {
	f := ether(macX, src, etherTypeIPv4, 20, 0x45)
	copy(f[etherHeader+12:], srcIP.AsSlice())
	return f
}

func ipv6Frame(src MAC, srcIP netip.Addr) []byte {
	f := ether(macX, src, etherTypeIPv6, 40, 0x60)
	copy(f[etherHeader+8:], srcIP.AsSlice())
	return f
}

func arpFrame(src, sha MAC, spa netip.Addr) []byte {
	f := ether(Broadcast, src, etherTypeARP, 28, 0)
	p := f[etherHeader:]
	binary.BigEndian.PutUint16(p[0:], 1)
	binary.BigEndian.PutUint16(p[2:], etherTypeIPv4)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	copy(p[8:], sha[:])
	copy(p[14:], spa.AsSlice())
	return f
}

func TestPortSecurity(t *testing.T) {
	own4 := netip.MustParseAddr("192.0.2.10")
	own6 := netip.MustParseAddr("2001:db8::a")
	other4 := netip.MustParseAddr("198.51.100.20")
	other6 := netip.MustParseAddr("2001:db8:1::b")
	macOnly := &PortSecurity{MAC: macA}
	withIP := &PortSecurity{MAC: macA, Addrs: []netip.Addr{own4, own6}}
	vlan := ether(macX, macA, etherTypeVLAN, 30, 0)

	tests := []struct {
		name   string
		policy *PortSecurity
		frame  []byte
		allow  bool
	}{
		{"own MAC", macOnly, ether(macX, macA, etherTypeTest, 10, 0), true},
		{"other MAC", macOnly, ether(macX, macB, etherTypeTest, 10, 0), false},
		{"MAC only: any IP", macOnly, ipv4Frame(macA, other4), true},
		{"MAC only: VLAN", macOnly, vlan, true},
		{"IPv4 own", withIP, ipv4Frame(macA, own4), true},
		{"IPv4 other", withIP, ipv4Frame(macA, other4), false},
		{"IPv4 unspecified (DHCP)", withIP, ipv4Frame(macA, netip.IPv4Unspecified()), true},
		{"IPv4 own, other MAC", withIP, ipv4Frame(macB, own4), false},
		{"IPv4 truncated", withIP, ether(macX, macA, etherTypeIPv4, 19, 0x45), false},
		{"IPv4 wrong version", withIP, ether(macX, macA, etherTypeIPv4, 20, 0x65), false},
		{"ARP own", withIP, arpFrame(macA, macA, own4), true},
		{"ARP probe", withIP, arpFrame(macA, macA, netip.IPv4Unspecified()), true},
		{"ARP other IP", withIP, arpFrame(macA, macA, other4), false},
		{"ARP other sender MAC", withIP, arpFrame(macA, macB, own4), false},
		{"ARP truncated", withIP, ether(Broadcast, macA, etherTypeARP, 27, 0), false},
		{"IPv6 own", withIP, ipv6Frame(macA, own6), true},
		{"IPv6 other", withIP, ipv6Frame(macA, other6), false},
		{"IPv6 link-local", withIP, ipv6Frame(macA, netip.MustParseAddr("fe80::2:5eff:fe10:a")), true},
		{"IPv6 unspecified (DAD)", withIP, ipv6Frame(macA, netip.IPv6Unspecified()), true},
		{"IPv6 truncated", withIP, ether(macX, macA, etherTypeIPv6, 39, 0x60), false},
		{"VLAN with IP check", withIP, vlan, false},
		{"other EtherType", withIP, ether(macX, macA, etherTypeTest, 10, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.policy.compile()
			if err != nil {
				t.Fatal(err)
			}
			if got := s.allows(tt.frame); got != tt.allow {
				t.Errorf("allows = %v, want %v", got, tt.allow)
			}
		})
	}
}

func TestPortSecurityForwarding(t *testing.T) {
	tb := newTestBridge(t, Config{}, 1)
	own := netip.MustParseAddr("192.0.2.10")
	secured, _ := tb.add(PortConfig{Security: &PortSecurity{MAC: macB, Addrs: []netip.Addr{own}}}, PipeConfig{})

	spoofed := [][]byte{
		ipv4Frame(macA, own), // another MAC
		ipv4Frame(macB, netip.MustParseAddr("192.0.2.11")), // another IP
	}
	for _, f := range spoofed {
		tb.send(1, f)
	}
	good := ipv4Frame(macB, own)
	good[etherHeader+1] = 99 // tag, in the TOS byte
	tb.send(1, good)
	if f := tb.recv(0); f[etherHeader+1] != 99 {
		t.Fatalf("first frame through is %x, want the good one", f)
	}
	c := secured.Counters()
	if c.RxFrames != 3 || c.DropFiltered != 2 {
		t.Errorf("counters = %+v, want 3 received, 2 filtered", c)
	}
	// Spoofed frames teach the bridge nothing.
	if findFDB(tb.b.FDB(), macA) != nil {
		t.Error("spoofed source MAC learned")
	}

	// Turned off, anything goes.
	if err := secured.SetSecurity(nil); err != nil {
		t.Fatal(err)
	}
	tb.send(1, ether(Broadcast, macC, etherTypeTest, 10, 5))
	tb.expect(0, 5)

	if err := secured.SetSecurity(&PortSecurity{}); err == nil {
		t.Error("SetSecurity with zero MAC succeeded")
	}
	if err := secured.SetSecurity(&PortSecurity{MAC: macB, Addrs: []netip.Addr{{}}}); err == nil {
		t.Error("SetSecurity with invalid address succeeded")
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }

// With no Addrs (the MAC pinned alone), an ARP message's sender hardware
// address must be the MAC too, as the policy says whatever Addrs is: a
// port could else announce another station's MAC for any address.
func TestPortSecurityMACOnlyARPSender(t *testing.T) {
	s, err := (&PortSecurity{MAC: macA}).compile()
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("192.0.2.10")
	if s.allows(arpFrame(macA, macB, ip)) {
		t.Error("MAC-only policy allows an ARP message whose sender hardware address is another MAC")
	}
	if !s.allows(arpFrame(macA, macA, ip)) {
		t.Error("MAC-only policy refuses an ARP message from its own MAC")
	}
}
