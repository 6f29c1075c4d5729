package hostnet

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// exhaustFDs lowers RLIMIT_NOFILE to the lowest free descriptor, so the
// process's next socket() or open() fails with EMFILE; restore puts the
// limit back.
func exhaustFDs(t *testing.T) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	lim := old
	lim.Cur = uint64(fd)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// dropCount sums the uplink's drop counters: a datagram the uplink did
// not carry is counted in one of them.
func dropCount(u *Uplink) uint64 {
	var n uint64
	for k, v := range u.Counters() {
		if strings.HasPrefix(k, "drop_") {
			n += v
		}
	}
	return n
}

// loopbackUDPDst is loopbackDst for UDP: a socket on the host's loopback
// and the address a container names it by (the gateway's, which the
// uplink's test config maps to the host's loopback).
func loopbackUDPDst(t *testing.T, u *Uplink) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, netip.AddrPortFrom(u.cfg.Gateway, uint16(srv.LocalAddr().(*net.UDPAddr).Port))
}

// ctrDatagram is a UDP datagram from the container, as the gateway hands
// it to Send.
func ctrDatagram(from, to netip.AddrPort, payload string) []byte {
	pkt := make([]byte, nat.Headroom+28+len(payload))
	copy(pkt[nat.Headroom+28:], payload)
	udpPacket(pkt[nat.Headroom:], from, to, len(payload))
	return pkt
}

// A container's UDP datagram whose host socket cannot be made (the
// process is out of descriptors: EMFILE) is dropped and counted, leaves
// no flow or entry, and the next datagram, once descriptors are free,
// opens the flow.
func TestUDPSocketEMFILECounted(t *testing.T) {
	u, tbl := outboundUplink(t)
	srv, dst := loopbackUDPDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:41000")

	before := dropCount(u)
	restore := exhaustFDs(t)
	u.Send(ctrDatagram(ctr, dst, "lost"), dst.Addr(), bridgeNone)
	restore()
	if n := u.Flows(); n != 0 {
		t.Errorf("%d flows after EMFILE, want none", n)
	}
	if n := tbl.Len(); n != 0 {
		t.Errorf("%d entries after EMFILE, want none", n)
	}
	if got := dropCount(u) - before; got != 1 {
		t.Errorf("datagram dropped for EMFILE counted %d times in drop_* counters, want 1 (counters %v)", got, u.Counters())
	}

	u.Send(ctrDatagram(ctr, dst, "again"), dst.Addr(), bridgeNone)
	srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, _, err := srv.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "again" {
		t.Errorf("after descriptors came back: read %q, %v; want the datagram", buf[:n], err)
	}
}

// A container's connection whose host socket cannot be made (out of
// descriptors: EMFILE) is counted in drop_no_socket, not as a destination
// that stayed silent (tcp_timed_out), and the container hears nothing,
// as from a host that dropped its SYN; its next SYN, once descriptors
// are free, connects.
func TestTCPSocketEMFILECounted(t *testing.T) {
	u, _ := outboundUplink(t)
	l, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:41001")

	restore := exhaustFDs(t)
	sendSyn(u, ctr, dst, 1000)
	restore()
	noSegment(t, u, "a segment to the container after EMFILE, want silence")
	if c := u.Counters(); c["drop_no_socket"] != 1 || c["tcp_timed_out"] != 0 {
		t.Errorf("drop_no_socket %d, tcp_timed_out %d after EMFILE; want 1 and 0", c["drop_no_socket"], c["tcp_timed_out"])
	}
	if n := u.Flows(); n != 0 {
		t.Errorf("%d flows after EMFILE, want none", n)
	}

	sendSyn(u, ctr, dst, 1000)
	if s := nextSegment(t, u); s.flags() != conntrack.TCPSyn|conntrack.TCPAck {
		t.Errorf("after descriptors came back: %#x, want the SYN-ACK", s.flags())
	}
	l.SetDeadline(time.Now().Add(2 * time.Second))
	if c, err := l.Accept(); err != nil {
		t.Errorf("the destination accepted nothing: %v", err)
	} else {
		c.Close()
	}
}

// resolv.conf rewritten (a VPN, DHCP) while the process is out of
// descriptors: the file cannot be read then, but once it can, the DNS
// forwarder follows the new resolver.
func TestResolvChangeSeenAfterEMFILE(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	oldNS := netip.MustParseAddrPort("192.0.2.1:53")
	newNS := netip.MustParseAddrPort("198.51.100.22:53")
	if err := os.WriteFile(p, []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := newResolvWatch(p, oldNS)
	if err := os.WriteFile(p, []byte("nameserver 198.51.100.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	age := func() {
		w.mu.Lock()
		w.checked = time.Now().Add(-2 * time.Second)
		w.mu.Unlock()
	}
	age()
	restore := exhaustFDs(t)
	during := w.get()
	restore()
	if during != oldNS {
		t.Logf("during EMFILE: %v", during)
	}
	age()
	if got := w.get(); got != newNS {
		t.Errorf("resolver once resolv.conf can be read again: %v, want %v (the rewrite seen while it could not be read is lost for good)", got, newNS)
	}
}

// Two packets of one new UDP flow handed over at once (from two of the
// gateway's goroutines): one flow opens, and its entry is in the table
// (trackNew: "the caller drops this packet" for the other).
func TestUDPConcurrentFirstPackets(t *testing.T) {
	u, tbl := outboundUplink(t)
	_, dst := loopbackUDPDst(t, u)
	bad := 0
	for i := range 300 {
		ctr := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.100"), uint16(20000+i))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				u.Send(ctrDatagram(ctr, dst, "x"), dst.Addr(), bridgeNone)
			}()
		}
		close(start)
		wg.Wait()
		orig := conntrack.Tuple{Src: ctr.Addr(), Dst: dst.Addr(), SrcPort: ctr.Port(), DstPort: dst.Port(), Proto: conntrack.ProtoUDP}
		u.mu.Lock()
		f := u.flows[orig]
		var id uint64
		if f != nil {
			id = f.id
		}
		u.mu.Unlock()
		e, _, ok := tbl.Get(0, orig)
		if f == nil || !ok || e.ID != id {
			bad++
			if bad == 1 {
				t.Errorf("flow %v: flow %v (entry id %d), table entry %v (id %d): the flow has no entry of its own", ctr, f != nil, id, ok, e.ID)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of 300 flows opened by two packets at once are left without their entry", bad)
	}
}

// A container's SYN the table has no room for (every entry assured, so
// none can be dropped early) is counted in drop_table_full and answered
// with nothing, as the kernel's conntrack drops it: a reset would refuse
// a connection no destination refused, where the container's next SYN,
// once there is room, connects.
func TestTCPTableFullSilent(t *testing.T) {
	u, tbl := outboundUplinkWith(t, conntrack.Config{Max: 1})
	a, b := fillAssured(t, tbl)
	if e, _, ok := tbl.Get(0, conntrack.Tuple{Src: a.Addr(), Dst: b.Addr(), SrcPort: a.Port(), DstPort: b.Port(), Proto: conntrack.ProtoTCP}); !ok || e.Status&conntrack.Assured == 0 {
		t.Fatalf("the filling entry %v (there %v) is not assured", e, ok)
	}

	l, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:41002")
	sendSyn(u, ctr, dst, 1000)
	noSegment(t, u, "a segment to the container for a SYN the table had no room for, want silence")
	if n := u.Counters()["drop_table_full"]; n != 1 {
		t.Errorf("drop_table_full %d, want 1", n)
	}
	// Nor did the host connect for it: through the kernel's NAT the SYN
	// never leaves. (The uplink connected, then closed the socket, so
	// every SYN the container sent again reached the destination.)
	if n := acceptQueue(t, l); n != 0 {
		t.Errorf("the destination has %d connections waiting for a SYN the table had no room for, want none", n)
	}
	if n := u.Flows(); n != 0 {
		t.Errorf("%d flows, want none", n)
	}

	tbl.Flush()
	sendSyn(u, ctr, dst, 1000)
	if s := nextSegment(t, u); s.flags() != conntrack.TCPSyn|conntrack.TCPAck {
		t.Errorf("with room again: %#x, want the SYN-ACK", s.flags())
	}
	l.SetDeadline(time.Now().Add(2 * time.Second))
	if c, err := l.Accept(); err == nil {
		c.Close()
	}
}

// acceptQueue is how many connections wait in l's accept queue
// (TCP_INFO's tcpi_unacked for a listening socket).
func acceptQueue(t *testing.T, l *net.TCPListener) int {
	t.Helper()
	rc, err := l.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	if cerr := rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return int(info.Unacked)
}
