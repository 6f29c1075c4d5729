package conntrack_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/usernat/usernat/conntrack"
)

// udp4 builds an IPv4 UDP datagram with no payload.
func udp4(src, dst netip.AddrPort) []byte {
	b := make([]byte, 28)
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], 28)
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], 8)
	return b
}

// masquerade translates the source of every flow to 192.0.2.1, keeping the
// source port when it is free.
type masquerade struct{}

func (masquerade) Translate(t *conntrack.Table, zone conntrack.Zone, orig conntrack.Tuple) (conntrack.Tuple, conntrack.Status, error) {
	reply, _ := orig.Reverse()
	reply.Dst = netip.MustParseAddr("192.0.2.1")
	for port := orig.SrcPort; port != 0; port++ {
		reply.DstPort = port
		if !t.Taken(zone, reply) {
			return reply, conntrack.SrcNAT, nil
		}
	}
	return conntrack.Tuple{}, 0, fmt.Errorf("no free port")
}

type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time { return c.t }

func Example() {
	clock := &fixedClock{time.Now()}
	table, err := conntrack.New(conntrack.Config{Clock: clock})
	if err != nil {
		panic(err)
	}
	defer table.Close()

	container := netip.MustParseAddrPort("10.0.1.2:50001")
	server := netip.MustParseAddrPort("192.0.2.2:9999")

	// A container's first datagram creates the entry; masquerade chooses
	// its reply tuple.
	var p conntrack.Packet
	if err := p.Decode(udp4(container, server)); err != nil {
		panic(err)
	}
	res, err := table.Track(0, &p, masquerade{})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Class, res.Created, res.Reply())

	// The server's answer arrives at the translated address and is found
	// by the reply tuple.
	p.Decode(udp4(server, netip.MustParseAddrPort("192.0.2.1:50001")))
	res, _ = table.Track(0, &p, nil)
	fmt.Println(res.Class, res.Dir, res.Orig())

	clock.t = clock.t.Add(7 * time.Second)
	table.WriteList(os.Stdout, true)
	// Output:
	// NEW true src=192.0.2.2 dst=192.0.2.1 sport=9999 dport=50001
	// ESTABLISHED reply src=10.0.1.2 dst=192.0.2.2 sport=50001 dport=9999
	// udp      17 23 src=10.0.1.2 dst=192.0.2.2 sport=50001 dport=9999 packets=1 bytes=28 src=192.0.2.2 dst=192.0.2.1 sport=9999 dport=50001 packets=1 bytes=28 mark=0 use=1
}
