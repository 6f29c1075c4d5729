package hostnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

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
	// A flow to the DNS address, whose socket sends to the resolver.
	dnsAddr, resolver := netip.MustParseAddr("172.17.0.3"), netip.MustParseAddr("192.0.2.53")
	dns := conntrack.Tuple{Src: ctr, Dst: dnsAddr, SrcPort: 41001, DstPort: 53, Proto: conntrack.ProtoUDP}
	dnsErr := &errorSender{near: dns, far: resolver, inner: udpInner(dns)}

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
		// The resolver's own error comes from the address the container
		// knows it by, as the kernel's NAT shows a DNAT'd flow's far end;
		// a router's on the way keeps the router's.
		{name: "port unreachable from the DNS resolver", es: dnsErr, ee: unix.SockExtendedErr{Origin: 2, Type: 3, Code: 3}, from: resolver, quoted: []byte("query"), wantFrom: dnsAddr},
		{name: "router on the way to the DNS resolver", es: dnsErr, ee: unix.SockExtendedErr{Origin: 2, Type: 11}, from: router, quoted: []byte("query"), wantFrom: router},
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
			if netip.AddrFrom4([4]byte(in[12:16])) != ctr || netip.AddrFrom4([4]byte(in[16:20])) != c.es.near.Dst || in[9] != byte(c.es.near.Proto) {
				t.Errorf("the quoted packet is not the container's: % x", in[:20])
			}
			l4 := in[20:]
			switch c.es.near.Proto {
			case conntrack.ProtoUDP:
				if binary.BigEndian.Uint16(l4[0:]) != c.es.near.SrcPort || binary.BigEndian.Uint16(l4[2:]) != c.es.near.DstPort || string(l4[8:]) != string(c.quoted) {
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

// resolvConf takes the IPv4 nameservers in order, at most three (glibc's
// MAXNS), port 53, skipping comments, other options and IPv6 servers
// (zoned or not), as the uplink is IPv4.
func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ conf, want string }{
		{"# generated\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n", "[127.0.0.53:53 192.0.2.53:53]"},
		{"nameserver ::ffff:192.0.2.1\n", "[192.0.2.1:53]"},
		{"nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\nnameserver 192.0.2.4\n", "[192.0.2.1:53 192.0.2.2:53 192.0.2.3:53]"},
		{"nameserver\nnameserver not-an-address\n; comment\n", ""},
		{"", ""},
	} {
		p := filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(p, []byte(c.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := resolvConf(p)
		if c.want == "" {
			if err == nil || !errors.Is(err, ErrNoNameserver) {
				t.Errorf("%q: %v, %v; want no nameserver", c.conf, got, err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("%q: %v, %v; want %s", c.conf, got, err, c.want)
		}
	}
	if _, err := resolvConf(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file: no error")
	}
}

// twoNameservers watches a resolv.conf of the test's naming a, then b.
func twoNameservers(t *testing.T) (w *resolvWatch, a, b netip.AddrPort) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 192.0.2.1\nnameserver 192.0.2.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b = netip.MustParseAddrPort("192.0.2.1:53"), netip.MustParseAddrPort("192.0.2.2:53")
	return newResolvWatch(p, a), a, b
}

// The resolver in use moves to the next nameserver when it fails, and
// from the last back to the first; a failure of one no longer in use (a
// second flow telling of it) moves nothing; with one nameserver it stays.
func TestResolvWatchFail(t *testing.T) {
	w, a, b := twoNameservers(t)
	if got := w.get(); got != a {
		t.Fatalf("at first %v, want %v", got, a)
	}
	if got := w.fail(a); got != b || w.get() != b {
		t.Errorf("after the first failed: %v, %v; want %v", got, w.get(), b)
	}
	if got := w.fail(a); got != b {
		t.Errorf("the first failing again, no longer in use: %v, want %v still", got, b)
	}
	if got := w.fail(b); got != a {
		t.Errorf("after the last failed: %v, want the first again, %v", got, a)
	}
	one := newResolvWatch(filepath.Join(t.TempDir(), "missing"), a)
	if got := one.fail(a); got != a {
		t.Errorf("one nameserver, failed: %v, want it still, %v", got, a)
	}
}

// A failed-over resolver stands in for the first for failBack only: then
// the first is tried again, as glibc's lookups try it at each query, so a
// blip does not keep every container on the second for good.
func TestResolvWatchFailBack(t *testing.T) {
	w, a, b := twoNameservers(t)
	w.fail(a)
	if got := w.get(); got != b {
		t.Fatalf("after the first failed: %v, want %v", got, b)
	}
	w.mu.Lock()
	w.failedAt = w.failedAt.Add(-failBack)
	w.mu.Unlock()
	if got := w.get(); got != a {
		t.Errorf("failBack after the first failed: %v, want the first again, %v", got, a)
	}
}

// A DNS flow's query left unanswered for dnsTimeout fails its resolver
// only if the resolver answered no other flow meanwhile: one socket's
// query it drops (malformed, or lost) must not move every container to
// the next nameserver. An ICMP error from its host fails it at once; an
// answer clears that. Only a query (QR clear) waits for an answer.
func TestDNSResolverFailed(t *testing.T) {
	w, r, _ := twoNameservers(t)
	u := &Uplink{resolv: w}
	fl := &udpFlow{u: u, dns: true, dst: r}
	now := time.Now().UnixNano()
	if fl.resolverFailed(now) {
		t.Fatal("no query pending: failed")
	}
	fl.dnsPending.Store(now - int64(dnsTimeout) - 1)
	u.resolv.answer(r, now-int64(time.Second)) // another flow's answer, since
	if fl.resolverFailed(now) {
		t.Error("a query unanswered for dnsTimeout while the resolver answered another flow: failed")
	}
	u.resolv.mu.Lock()
	u.resolv.answered = now - 2*int64(dnsTimeout)
	u.resolv.mu.Unlock()
	if !fl.resolverFailed(now) {
		t.Error("a query unanswered for dnsTimeout, and nothing else answered since: not failed")
	}
	fl.dnsPending.Store(now - int64(time.Second))
	if fl.resolverFailed(now) {
		t.Error("a query unanswered for 1 s: failed")
	}
	fl.dnsFailed.Store(now)
	if !fl.resolverFailed(now) {
		t.Error("an ICMP error from the resolver's host: not failed")
	}
	if dnsQuery([]byte("junk")) || !dnsQuery(make([]byte, 12)) || dnsQuery(append([]byte{0, 0, 0x80}, make([]byte, 9)...)) {
		t.Error("dnsQuery: want a 12-byte header with QR clear only")
	}
}

// A DNS flow that outlives a failover (one socket a container keeps, as
// c-ares does) brings the first nameserver back when failBack is up with
// its old news: a query it left unanswered, or an ICMP error, from before
// the first became the one in use again, is another time's. Its queries
// then go to the first, and wait for its answer from then on; the first
// failing then moves them on again.
func TestDNSFallBackOldFlow(t *testing.T) {
	w, first, second := twoNameservers(t)
	u := &Uplink{resolv: w, log: slog.New(slog.DiscardHandler)}
	for _, icmp := range []bool{false, true} {
		fl := &udpFlow{u: u, dns: true, dst: first}
		old := time.Now().Add(-40 * time.Second).UnixNano()
		fl.dnsPending.Store(old)
		if icmp {
			fl.dnsFailed.Store(old)
		}
		w.fail(first)
		w.mu.Lock()
		w.failedAt = w.failedAt.Add(-failBack) // the second's time is up
		w.mu.Unlock()
		for q := range 2 { // an A and an AAAA query, at once
			now := time.Now().UnixNano()
			if got := u.dnsResolver(fl, now); got != first {
				t.Fatalf("icmp %v, query %d: to %v, want the first again, %v", icmp, q, got, first)
			}
			fl.dnsQueried(now)
		}
		if p := fl.dnsPending.Load(); p <= old {
			t.Errorf("icmp %v: the flow still waits since before the fall-back", icmp)
		}
		// Later, the first silent for dnsTimeout: the next, as before.
		w.inUse.Add(-2 * int64(dnsTimeout))
		fl.dnsFailed.Store(0)
		fl.dnsPending.Store(time.Now().UnixNano() - int64(dnsTimeout) - 1)
		if got := u.dnsResolver(fl, time.Now().UnixNano()); got != second {
			t.Errorf("icmp %v: the first silent for dnsTimeout: to %v, want %v", icmp, got, second)
		}
		w.mu.Lock()
		w.cur = 0 // the first again, for the next case
		w.inUse.Store(0)
		w.mu.Unlock()
	}
}
