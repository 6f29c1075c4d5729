package rtnl

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/netns"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMessageLayout(t *testing.T) {
	m := newMessage(unix.RTM_NEWADDR, unix.NLM_F_ACK)
	m.ifAddr(unix.AF_INET, 16, 7)
	m.attr(unix.IFA_LOCAL, netip.MustParseAddr("172.17.0.4").AsSlice())
	m.attr(unix.IFA_LABEL, []byte("eth0\x00")) // 5 bytes: padded to 8
	b := m.finish(42)

	want := 16 + 8 + 8 + 12
	if len(b) != want {
		t.Fatalf("length %d, want %d", len(b), want)
	}
	ne := binary.NativeEndian
	if got := ne.Uint32(b[0:]); got != uint32(want) {
		t.Errorf("nlmsg_len %d", got)
	}
	if ne.Uint16(b[4:]) != unix.RTM_NEWADDR || ne.Uint16(b[6:]) != unix.NLM_F_ACK|unix.NLM_F_REQUEST || ne.Uint32(b[8:]) != 42 {
		t.Errorf("header % x", b[:16])
	}
	if b[16] != unix.AF_INET || b[17] != 16 || ne.Uint32(b[20:]) != 7 {
		t.Errorf("ifaddrmsg % x", b[16:24])
	}
	if ne.Uint16(b[24:]) != 8 || ne.Uint16(b[26:]) != unix.IFA_LOCAL || !bytes.Equal(b[28:32], []byte{172, 17, 0, 4}) {
		t.Errorf("IFA_LOCAL % x", b[24:32])
	}
	if ne.Uint16(b[32:]) != 9 || ne.Uint16(b[34:]) != unix.IFA_LABEL || string(b[36:41]) != "eth0\x00" || !bytes.Equal(b[41:], []byte{0, 0, 0}) {
		t.Errorf("IFA_LABEL % x", b[32:])
	}
}

// answer builds a netlink datagram of one message.
func answer(typ uint16, flags uint16, seq uint32, data []byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(data))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(unix.SizeofNlMsghdr+len(data)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	return append(b, data...)
}

func errData(errno int32) []byte {
	b := make([]byte, 4+unix.SizeofNlMsghdr)
	binary.NativeEndian.PutUint32(b, uint32(-errno))
	return b
}

func TestParseAnswer(t *testing.T) {
	link := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(link[4:], 9)
	tests := []struct {
		name     string
		b        []byte
		ack      bool
		done     bool
		err      error
		wantType uint16
	}{
		{"ack", answer(unix.NLMSG_ERROR, 0, 5, errData(0)), true, true, nil, 0},
		{"errno", answer(unix.NLMSG_ERROR, 0, 5, errData(int32(unix.EEXIST))), true, true, unix.EEXIST, 0},
		{"other sequence", answer(unix.NLMSG_ERROR, 0, 4, errData(int32(unix.EEXIST))), true, false, nil, 0},
		{"answer without ack", answer(unix.RTM_NEWLINK, 0, 5, link), false, true, nil, unix.RTM_NEWLINK},
		{"answer awaiting ack", answer(unix.RTM_NEWLINK, 0, 5, link), true, false, nil, unix.RTM_NEWLINK},
		{"truncated error", answer(unix.NLMSG_ERROR, 0, 5, []byte{1}), true, true, errors.New("truncated"), 0},
		{"garbage", []byte{1, 2, 3}, true, true, errors.New("bad"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got uint16
			done, err := parseAnswer(tc.b, 5, tc.ack, func(typ uint16, _ []byte) { got = typ })
			if done != tc.done {
				t.Errorf("done %v, want %v", done, tc.done)
			}
			switch {
			case tc.err == nil && err != nil:
				t.Errorf("error %v", err)
			case tc.err != nil && err == nil:
				t.Errorf("no error, want %v", tc.err)
			case errors.Is(tc.err, unix.EEXIST) && !errors.Is(err, unix.EEXIST):
				t.Errorf("error %v, want EEXIST", err)
			}
			if got != tc.wantType {
				t.Errorf("handed type %d, want %d", got, tc.wantType)
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"172.17.0.4/16":    "172.17.255.255",
		"192.168.2.116/24": "192.168.2.255",
		"10.1.2.3/8":       "10.255.255.255",
		"198.51.100.9/30":  "198.51.100.11",
	} {
		if got := Broadcast(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("Broadcast(%s) = %v, want %s", in, got, want)
		}
	}
}

func TestOpenMissingNamespace(t *testing.T) {
	_, err := Open("/nonexistent/ns/net")
	var oe *OpError
	if !errors.As(err, &oe) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open: %v, want an *OpError wrapping ErrNotExist", err)
	}
}

func ipOut(t *testing.T, ns *netns.NS, args ...string) string {
	t.Helper()
	out, err := ns.Run(context.Background(), "ip", args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestIntegrationConfigureLink(t *testing.T) {
	netns.RequirePrivileged(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	for _, dev := range []string{"eth0", "eth1"} {
		if err := ns.IP("link", "add", dev, "type", "veth", "peer", "name", "peer-"+dev); err != nil {
			t.Fatal(err)
		}
	}

	if err := ConfigureLink(ns.Path(), "eth0", netip.MustParsePrefix("172.17.0.4/16"), netip.MustParseAddr("172.17.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := ConfigureLink(ns.Path(), "eth1", netip.MustParsePrefix("2001:db8:17::4/64"), netip.MustParseAddr("2001:db8:17::1")); err != nil {
		t.Fatal(err)
	}

	addr := ipOut(t, ns, "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(addr, "inet 172.17.0.4/16 brd 172.17.255.255 scope global eth0") {
		t.Errorf("ip addr show eth0:\n%s", addr)
	}
	link := ipOut(t, ns, "-o", "link", "show", "eth0")
	if !strings.Contains(link, ",UP") {
		t.Errorf("eth0 not up:\n%s", link)
	}
	route := ipOut(t, ns, "route", "show", "default")
	if !strings.Contains(route, "default via 172.17.0.1 dev eth0") {
		t.Errorf("ip route show default:\n%s", route)
	}
	addr6 := ipOut(t, ns, "-o", "-6", "addr", "show", "dev", "eth1")
	if !strings.Contains(addr6, "inet6 2001:db8:17::4/64") {
		t.Errorf("ip -6 addr show eth1:\n%s", addr6)
	}
	route6 := ipOut(t, ns, "-6", "route", "show", "default")
	if !strings.Contains(route6, "default via 2001:db8:17::1 dev eth1") {
		t.Errorf("ip -6 route show default:\n%s", route6)
	}

	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.LinkIndex("nope0"); !errors.Is(err, unix.ENODEV) {
		t.Errorf("LinkIndex(nope0): %v, want ENODEV", err)
	}
	idx, err := c.LinkIndex("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddAddr(idx, netip.MustParsePrefix("172.17.0.4/16")); !errors.Is(err, unix.EEXIST) {
		t.Errorf("adding the address twice: %v, want EEXIST", err)
	}
	if err := c.AddRoute(netip.MustParsePrefix("198.51.100.0/24"), netip.Addr{}, idx); err != nil {
		t.Fatal(err)
	}
	if r := ipOut(t, ns, "route", "show", "198.51.100.0/24"); !strings.Contains(r, "198.51.100.0/24 dev eth0 scope link") {
		t.Errorf("direct route: %s", r)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.LinkIndex("eth0"); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// IFLA_STATS64 is found among a link message's attributes, after others
// and the padding the kernel puts before it.
func TestParseLinkStats(t *testing.T) {
	m := newMessage(unix.RTM_NEWLINK, 0)
	m.ifInfo(unix.AF_UNSPEC, 3, 0, 0)
	m.attr(unix.IFLA_IFNAME, []byte("tap0\x00"))
	m.attr(unix.IFLA_PAD, nil)
	var v [24 * 8]byte // a newer kernel's longer struct
	for i := range 24 {
		binary.NativeEndian.PutUint64(v[8*i:], uint64(100+i))
	}
	m.attr(unix.IFLA_STATS64, v[:])
	data := m.finish(1)[unix.SizeofNlMsghdr:]
	st, ok := parseLinkStats(data)
	want := LinkStats{100, 101, 102, 103, 104, 105, 106, 107}
	if !ok || st != want {
		t.Fatalf("parsed %+v %v, want %+v", st, ok, want)
	}
	if _, ok := parseLinkStats(data[:unix.SizeofIfInfomsg+12]); ok {
		t.Error("found counters in a message cut short")
	}
}

// The counters of a namespace's loopback count what was sent over it.
func TestIntegrationLinkStats(t *testing.T) {
	netns.RequirePrivileged(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lo, err := c.LinkIndex("lo")
	if err != nil {
		t.Fatal(err)
	}
	before, err := c.LinkStats("lo")
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	if err := c.SetLinkUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := netns.SendUDP(ns, netip.MustParseAddrPort("127.0.0.1:9"), n); err != nil {
		t.Fatal(err)
	}
	after, err := c.LinkStats("lo")
	if err != nil {
		t.Fatal(err)
	}
	if d := after.TxPackets - before.TxPackets; d < n {
		t.Errorf("%d packets sent over lo counted, want %d at least", d, n)
	}
	if _, err := c.LinkStats("nope0"); !errors.Is(err, unix.ENODEV) {
		t.Errorf("counters of no link: %v, want ENODEV", err)
	}
}
