package hostnet

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// hostError turns an error the host's socket heard into the one the
// container would have heard through the kernel's NAT: from its sender,
// with its type, code and MTU, about the container's own datagram.
func TestHostError(t *testing.T) {
	ctr, far := netip.MustParseAddr("172.17.0.4"), netip.MustParseAddr("203.0.113.5")
	router := netip.MustParseAddr("198.51.100.2")
	udp := conntrack.Tuple{Src: ctr, Dst: far, SrcPort: 41000, DstPort: 53, Proto: conntrack.ProtoUDP}
	udpErr := &errorSender{near: udp, inner: udpInner(udp)}
	echo := conntrack.ICMPTuple(ctr, far, icmpEchoRequest, 0, 0x1234)
	echoErr := &errorSender{near: echo, inner: echoInner(echo)}

	// The host's echo, as its ICMP socket sent it (identifier 0x9999),
	// which the error quotes whole.
	hostEcho := []byte{8, 0, 0, 0, 0x99, 0x99, 0, 7, 'p', 'i', 'n', 'g'}
	binary.BigEndian.PutUint16(hostEcho[2:], nat.Checksum(hostEcho))

	for _, c := range []struct {
		name        string
		es          *errorSender
		ee          unix.SockExtendedErr
		from        netip.Addr
		quoted      []byte
		wantFrom    netip.Addr
		wantInfo    uint32
		wantNothing bool
	}{
		{name: "frag needed", es: udpErr, ee: unix.SockExtendedErr{Origin: 2, Type: 3, Code: 4, Info: 1400}, from: router, quoted: []byte("payload"), wantFrom: router, wantInfo: 1400},
		{name: "port unreachable on the host's loopback", es: udpErr, ee: unix.SockExtendedErr{Origin: 2, Type: 3, Code: 3}, from: netip.MustParseAddr("127.0.0.1"), quoted: []byte("x"), wantFrom: far},
		{name: "no sender", es: udpErr, ee: unix.SockExtendedErr{Origin: 2, Type: 11}, quoted: nil, wantFrom: far},
		{name: "parameter problem", es: udpErr, ee: unix.SockExtendedErr{Origin: 2, Type: 12, Info: 9}, from: router, quoted: []byte("x"), wantFrom: router, wantInfo: 9 << 24},
		{name: "echo host unreachable", es: echoErr, ee: unix.SockExtendedErr{Origin: 2, Type: 3, Code: 1}, from: router, quoted: hostEcho, wantFrom: router},
		{name: "redirect", es: udpErr, ee: unix.SockExtendedErr{Origin: 2, Type: 5}, from: router, quoted: []byte("x"), wantNothing: true},
		{name: "echo quote cut short", es: echoErr, ee: unix.SockExtendedErr{Origin: 2, Type: 3, Code: 1}, from: router, quoted: hostEcho[:6], wantNothing: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := hostError(nil, c.es, c.ee, c.from, c.quoted)
			if c.wantNothing {
				if msg != nil {
					t.Fatalf("an error sent: % x", msg)
				}
				return
			}
			if msg == nil {
				t.Fatal("no error sent")
			}
			if got := netip.AddrFrom4([4]byte(msg[12:16])); got != c.wantFrom {
				t.Errorf("from %s, want %s", got, c.wantFrom)
			}
			if got := netip.AddrFrom4([4]byte(msg[16:20])); got != ctr {
				t.Errorf("to %s, want the container", got)
			}
			m := msg[20:]
			if m[0] != c.ee.Type || m[1] != c.ee.Code || binary.BigEndian.Uint32(m[4:]) != c.wantInfo {
				t.Errorf("type %d code %d info %#x, want %d %d %#x", m[0], m[1], binary.BigEndian.Uint32(m[4:]), c.ee.Type, c.ee.Code, c.wantInfo)
			}
			if nat.Checksum(m) != 0 {
				t.Error("the ICMP checksum does not verify")
			}
			in := m[8:]
			if netip.AddrFrom4([4]byte(in[12:16])) != ctr || netip.AddrFrom4([4]byte(in[16:20])) != far || in[9] != byte(c.es.near.Proto) {
				t.Errorf("the quoted packet is not the container's: % x", in[:20])
			}
			l4 := in[20:]
			switch c.es.near.Proto {
			case conntrack.ProtoUDP:
				if binary.BigEndian.Uint16(l4[0:]) != udp.SrcPort || binary.BigEndian.Uint16(l4[2:]) != udp.DstPort || string(l4[8:]) != string(c.quoted) {
					t.Errorf("the quoted datagram is not the container's: % x", l4)
				}
			case conntrack.ProtoICMP:
				if binary.BigEndian.Uint16(l4[4:]) != 0x1234 || binary.BigEndian.Uint16(l4[6:]) != 7 {
					t.Errorf("the quoted echo has id %#x seq %d, want the container's id and seq 7", binary.BigEndian.Uint16(l4[4:]), binary.BigEndian.Uint16(l4[6:]))
				}
				if nat.Checksum(l4) != 0 {
					t.Error("the quoted echo's checksum does not verify")
				}
			}
		})
	}
}

// resolvConf takes the first IPv4 nameserver, skipping comments, other
// options and IPv6 servers (zoned or not), as the uplink is IPv4.
func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ conf, want string }{
		{"# generated\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n", "127.0.0.53"},
		{"nameserver ::ffff:192.0.2.1\n", "192.0.2.1"},
		{"nameserver\nnameserver not-an-address\n; comment\n", ""},
		{"", ""},
	} {
		p := filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(p, []byte(c.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := resolvConf(p)
		if c.want == "" {
			if err == nil || !errors.Is(err, errNoNameserver) {
				t.Errorf("%q: %v, %v; want no nameserver", c.conf, got, err)
			}
			continue
		}
		if err != nil || got != netip.MustParseAddr(c.want) {
			t.Errorf("%q: %v, %v; want %s", c.conf, got, err, c.want)
		}
	}
	if _, err := resolvConf(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file: no error")
	}
}
