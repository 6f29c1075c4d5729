package nat_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// udp4 builds an IPv4 UDP datagram with a right checksum.
func udp4(src, dst netip.AddrPort, payload string) []byte {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], nat.Checksum(b[:20]))
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	pseudo := append(append(append([]byte{}, b[12:20]...), 0, 17), b[24:26]...)
	binary.BigEndian.PutUint16(b[26:], ^nat.Sum(b[20:], nat.Sum(pseudo, 0)))
	return b
}

// Example follows a published UDP port: the rule, the new flow's entry,
// the packet rewritten to the container, and its answer rewritten back.
func Example() {
	table, err := conntrack.New(conntrack.Config{})
	if err != nil {
		panic(err)
	}
	defer table.Close()
	var (
		rules nat.Rules
		alloc nat.Allocator
	)
	publish, err := nat.ParsePublish("8053:172.17.0.4:53/udp")
	if err != nil {
		panic(err)
	}
	if _, err := rules.AddPublish(publish); err != nil {
		panic(err)
	}
	if _, err := rules.AddMasquerade(nat.Masquerade{Subnet: netip.MustParsePrefix("172.17.0.0/16")}); err != nil {
		panic(err)
	}

	client := netip.MustParseAddrPort("192.168.2.104:52140")
	pkt := udp4(client, netip.MustParseAddrPort("192.168.2.116:8053"), "query")

	var p conntrack.Packet
	if err := p.Decode(pkt); err != nil {
		panic(err)
	}
	m, _, _ := rules.MatchPublish(p.Tuple, true) // 192.168.2.116 is the gateway's
	res, err := table.Track(0, &p, alloc.Translator(m))
	if err != nil {
		panic(err)
	}
	to, _ := res.Tuple(1 - res.Dir).Reverse()
	nat.DecTTL(pkt)
	if err := nat.Rewrite(pkt, to); err != nil {
		panic(err)
	}
	p.Decode(pkt)
	fmt.Println("to the container:", p.Tuple)

	// The container answers; the reply direction is rewritten back.
	answer := udp4(netip.MustParseAddrPort("172.17.0.4:53"), client, "answer")
	p.Decode(answer)
	res, _ = table.Track(0, &p, nil)
	to, _ = res.Tuple(1 - res.Dir).Reverse()
	nat.Rewrite(answer, to)
	p.Decode(answer)
	fmt.Println("to the client:   ", p.Tuple)
	fmt.Println()
	// iptables pads its last column with spaces, which an example's
	// output cannot show: they are trimmed here.
	var list strings.Builder
	rules.WriteList(&list)
	for line := range strings.Lines(list.String()) {
		fmt.Println(strings.TrimRight(line, " \n"))
	}
	// Output:
	// to the container: src=192.168.2.104 dst=172.17.0.4 sport=52140 dport=53
	// to the client:    src=192.168.2.116 dst=192.168.2.104 sport=8053 dport=52140
	//
	// Chain PREROUTING (policy ACCEPT)
	// target     prot opt source               destination
	// DOCKER     all  --  0.0.0.0/0            0.0.0.0/0            ADDRTYPE match dst-type LOCAL
	//
	// Chain INPUT (policy ACCEPT)
	// target     prot opt source               destination
	//
	// Chain OUTPUT (policy ACCEPT)
	// target     prot opt source               destination
	//
	// Chain POSTROUTING (policy ACCEPT)
	// target     prot opt source               destination
	// MASQUERADE  all  --  172.17.0.0/16        0.0.0.0/0
	// MASQUERADE  udp  --  172.17.0.4           172.17.0.4           udp dpt:53
	//
	// Chain DOCKER (1 references)
	// target     prot opt source               destination
	// DNAT       udp  --  0.0.0.0/0            0.0.0.0/0            udp dpt:8053 to:172.17.0.4:53
}

// ExampleParsePublish shows the -p syntax.
func ExampleParsePublish() {
	for _, s := range []string{
		"8080:172.17.0.4:80",
		"192.168.2.116:5000-5005:172.17.0.5:6000-6005/udp",
		"[2001:db8::1]:8443:[fd00::4]:443",
		"8080:172.17.0.4",
	} {
		p, err := nat.ParsePublish(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(p)
	}
	// Output:
	// 8080:172.17.0.4:80/tcp
	// 192.168.2.116:5000-5005:172.17.0.5:6000-6005/udp
	// [2001:db8::1]:8443:[fd00::4]:443/tcp
	// nat: bad rule: publish "8080:172.17.0.4": want [HOSTADDR:]HOSTPORT[-END]:CONTAINERADDR:CONTAINERPORT[-END][/tcp|/udp]
}

// ExamplePublish_Normal shows a rule built by hand as the rules keep it.
func ExamplePublish_Normal() {
	p := nat.Publish{
		Proto:         conntrack.ProtoUDP,
		HostAddr:      netip.IPv4Unspecified(),
		HostPorts:     nat.PortRange{First: 5353, Last: 5354},
		ContainerAddr: netip.MustParseAddr("::ffff:172.17.0.4"),
	}
	fmt.Println(p.Validate() != nil, p.Normal(), p.Normal().Validate())
	// Output:
	// true 5353-5354:172.17.0.4:5353-5354/udp <nil>
}
