package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/usernat/usernat/conntrack"
)

// withOptions is an IPv4 packet from src to dst with the options opts
// (padded to a multiple of 4 bytes with end of options) and the
// transport header l4 of proto, every checksum right.
func withOptions(src, dst netip.Addr, opts []byte, proto conntrack.Proto, l4 []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	pkt := make([]byte, 20+len(opts)+len(l4))
	pkt[0], pkt[8], pkt[9] = 0x40|byte((20+len(opts))/4), 64, byte(proto)
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	copy(pkt[20:], opts)
	copy(pkt[20+len(opts):], l4)
	fillChecksums(pkt)
	return pkt
}

func TestForwardOptions(t *testing.T) {
	in, addr := netip.MustParseAddr("172.17.0.1"), netip.MustParseAddr("192.168.2.116")
	other := netip.MustParseAddr("198.51.100.1")
	// 01:02:03.456 UT: 3723456 ms since midnight, 0x0038d0c0.
	now := time.Date(2026, 11, 28, 1, 2, 3, 456e6, time.UTC)
	own := func(a netip.Addr) bool { return a == addr || a == in }
	for _, tc := range []struct {
		name      string
		opts, out []byte
	}{
		{"record route, room",
			[]byte{7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0},
			[]byte{7, 11, 8, 192, 168, 2, 116, 0, 0, 0, 0}},
		{"record route after another hop",
			[]byte{1, 7, 11, 8, 198, 51, 100, 1, 0, 0, 0, 0},
			[]byte{1, 7, 11, 12, 198, 51, 100, 1, 192, 168, 2, 116}},
		{"record route full",
			[]byte{7, 7, 8, 198, 51, 100, 1},
			[]byte{7, 7, 8, 198, 51, 100, 1}},
		{"record route, pointer Linux refuses",
			[]byte{7, 7, 3, 0, 0, 0, 0},
			[]byte{7, 7, 3, 0, 0, 0, 0}},
		{"timestamps only",
			[]byte{68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			[]byte{68, 12, 9, 0, 0, 0x38, 0xd0, 0xc0, 0, 0, 0, 0}},
		{"timestamps only, full: overflow counted",
			[]byte{68, 8, 9, 0x20, 0, 0, 0, 1},
			[]byte{68, 8, 9, 0x30, 0, 0, 0, 1}},
		{"overflow at its end",
			[]byte{68, 8, 9, 0xf0, 0, 0, 0, 1},
			[]byte{68, 8, 9, 0xf0, 0, 0, 0, 1}},
		{"address and timestamp: the address the packet came in at",
			[]byte{68, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0},
			[]byte{68, 12, 13, 1, 172, 17, 0, 1, 0, 0x38, 0xd0, 0xc0}},
		{"address and timestamp, full",
			[]byte{68, 12, 13, 0x11, 198, 51, 100, 1, 0, 0, 0, 1},
			[]byte{68, 12, 13, 0x21, 198, 51, 100, 1, 0, 0, 0, 1}},
		{"prespecified, the gateway's turn",
			[]byte{68, 20, 5, 3, 192, 168, 2, 116, 0, 0, 0, 0, 198, 51, 100, 1, 0, 0, 0, 0},
			[]byte{68, 20, 13, 3, 192, 168, 2, 116, 0, 0x38, 0xd0, 0xc0, 198, 51, 100, 1, 0, 0, 0, 0}},
		{"prespecified, another's turn",
			[]byte{68, 12, 5, 3, 198, 51, 100, 1, 0, 0, 0, 0},
			[]byte{68, 12, 5, 3, 198, 51, 100, 1, 0, 0, 0, 0}},
		{"both",
			[]byte{7, 7, 4, 0, 0, 0, 0, 68, 8, 5, 0, 0, 0, 0, 0},
			[]byte{7, 7, 8, 192, 168, 2, 116, 68, 8, 9, 0, 0, 0x38, 0xd0, 0xc0}},
		{"neither",
			[]byte{148, 4, 0, 0},
			[]byte{148, 4, 0, 0}},
		{"after end of options",
			[]byte{0, 7, 7, 4, 0, 0, 0, 0},
			[]byte{0, 7, 7, 4, 0, 0, 0, 0}},
		{"malformed length",
			[]byte{7, 40, 4, 0, 0, 0, 0, 0},
			[]byte{7, 40, 4, 0, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			udp := udpHeader(5000, 53, 10)
			pkt := withOptions(cont4, other, tc.opts, conntrack.ProtoUDP, udp)
			want := withOptions(cont4, other, tc.out, conntrack.ProtoUDP, udp)
			forwardOptions(pkt, in, addr, now, own)
			if !bytes.Equal(pkt, want) {
				t.Errorf("options % x\n           want % x", pkt[20:20+len(tc.opts)], tc.out)
			}
			if err := verify(pkt); err != nil {
				t.Error(err)
			}
		})
	}
}

// A forwarded packet's record route option gets the gateway's address on
// the link the packet leaves by, as Linux's router writes it: `ping -R`
// from a container lists the uplink address, and its reply the bridge
// address, between the hops of the outside network; `ping -T tsandaddr`
// lists the gateway by the address the packet came in at. The gateway
// was missing from both.
func TestForwardRecordsRoute(t *testing.T) {
	gw, up, br := recGateway(t)
	rr := []byte{1, 7, 39, 4}
	rr = append(rr, make([]byte, 36)...)
	ping := withOptions(ctrIP, clientIP, rr, conntrack.ProtoICMP, icmpHeader(8, 0, 0x1234, []byte("rr")))
	fromBridgeIP(gw, ping)
	out := lastIP(up)
	if out == nil {
		t.Fatal("the ping was not forwarded")
	}
	if err := verify(out); err != nil {
		t.Fatal(err)
	}
	host := hostIP.As4()
	if got := out[20 : 20+12]; got[3] != 8 || !bytes.Equal(got[4:8], host[:]) {
		t.Fatalf("record route leaving the uplink % x, want pointer 8 and %v first", got, hostIP)
	}

	// The reply, with the client's hop recorded, goes the other way.
	reply := append([]byte(nil), out...)
	copy(reply[12:16], out[16:20])
	copy(reply[16:20], out[12:16])
	c := clientIP.As4()
	copy(reply[20+8:], c[:])
	reply[20+3] = 12
	reply[20+len(rr)] = 0 // echo reply
	fillChecksums(reply)
	fromUplinkIP(gw, reply)
	back := lastIP(br)
	if back == nil {
		t.Fatal("the reply was not forwarded")
	}
	if err := verify(back); err != nil {
		t.Fatal(err)
	}
	bridgeAddr := gwIP.As4()
	if got := back[20 : 20+16]; got[3] != 16 || !bytes.Equal(got[12:16], bridgeAddr[:]) {
		t.Fatalf("record route reaching the container % x, want pointer 16 and %v third", got, gwIP)
	}

	ts := []byte{68, 20, 5, 1}
	ts = append(ts, make([]byte, 16)...)
	fromBridgeIP(gw, withOptions(ctrIP, clientIP, ts, conntrack.ProtoICMP, icmpHeader(8, 0, 0x1235, []byte("ts"))))
	out = lastIP(up)
	if err := verify(out); err != nil {
		t.Fatal(err)
	}
	if got := out[20 : 20+20]; got[2] != 13 || !bytes.Equal(got[4:8], bridgeAddr[:]) {
		t.Fatalf("timestamp leaving the uplink % x, want pointer 13 and %v first", got, gwIP)
	}
}
