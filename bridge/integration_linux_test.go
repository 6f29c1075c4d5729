package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/busypoll"
	"github.com/usernat/usernat/internal/netns"
)

// container is a network namespace whose eth0 is a TAP port of a bridge.
type container struct {
	ns   *netns.NS
	tap  *TAP
	port *Attachment
	mac  MAC
	v4   netip.Prefix
	v6   netip.Prefix
}

func newContainer(t *testing.T, br *Bridge, mac MAC, v4, v6 string, offload bool, mtu int, direct bool) *container {
	t.Helper()
	ns := privateNS(t)
	tap, err := OpenTAP(TAPConfig{Name: "eth0", NetNS: ns.Path(), MTU: mtu, HardwareAddr: mac, Offload: offload, DirectWrite: direct, RawIO: direct})
	if err != nil {
		t.Fatal(err)
	}
	c := &container{ns: ns, tap: tap, mac: mac, v4: netip.MustParsePrefix(v4), v6: netip.MustParsePrefix(v6)}
	c.port, err = br.AddPort(tap, PortConfig{Name: "tap-" + mac.String()[15:]})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{c.v4, c.v6} {
		if err := ns.AddAddr("eth0", p); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestIntegrationTwoNamespaces(t *testing.T) {
	netns.RequirePrivileged(t)
	// With offload on one side only, the bridge computes the checksums the
	// sender's kernel left pending, and the receiver's kernel checks them.
	// At MTU 1500 an offloading sender's kernel sends TCP in 64 KiB GSO
	// frames, which the bridge passes on to an offloading receiver and
	// cuts into segments for a plain one.
	for _, tt := range []struct {
		name               string
		offloadA, offloadB bool
		mtu                int
		direct             bool // the bridge writes to the TAPs from the forwarding goroutine, raw I/O (host mode's way)
	}{
		{"plain", false, false, MaxMTU, false},
		{"offload", true, true, MaxMTU, false},
		{"offload to plain", true, false, MaxMTU, false},
		{"plain to offload", false, true, MaxMTU, false},
		{"offload, MTU 1500", true, true, 1500, false},
		{"offload to plain, MTU 1500", true, false, 1500, false},
		{"direct writes and raw I/O, offload to plain, MTU 1500", true, false, 1500, true},
	} {
		t.Run(tt.name, func(t *testing.T) { twoNamespaces(t, tt.offloadA, tt.offloadB, tt.mtu, tt.direct) })
	}
}

func twoNamespaces(t *testing.T, offloadA, offloadB bool, mtu int, direct bool) {
	br, err := New(Config{Name: "usernat0", MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	// Documentation prefixes, used only inside these namespaces.
	a := newContainer(t, br, macA, "192.0.2.10/24", "2001:db8::a/64", offloadA, mtu, direct)
	b := newContainer(t, br, macB, "192.0.2.11/24", "2001:db8::b/64", offloadB, mtu, direct)
	if a.port.direct != direct || b.port.direct != direct || a.tap.raw != direct || b.tap.raw != direct {
		t.Fatalf("TAPConfig.DirectWrite and RawIO %v did not make the ports direct writers with raw I/O", direct)
	}

	t.Run("TAP set up", func(t *testing.T) {
		out, err := a.ns.Run(context.Background(), "ip", "-o", "link", "show", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{fmt.Sprintf("mtu %d", mtu), "UP", "link/ether " + macA.String()} {
			if !strings.Contains(string(out), want) {
				t.Errorf("ip link show: %q lacks %q", out, want)
			}
		}
	})

	pcapPath := filepath.Join(t.TempDir(), "bridge.pcap")
	t.Run("ping", func(t *testing.T) {
		f, err := os.Create(pcapPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		capture, err := br.Capture(f, CaptureConfig{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, dst := range []netip.Addr{b.v4.Addr(), b.v6.Addr()} {
			out, err := a.ns.Run(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "5", dst.String())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(out), "3 received") {
				t.Errorf("ping %v:\n%s", dst, out)
			}
		}
		if err := capture.Close(); err != nil {
			t.Fatal(err)
		}
		if capture.Dropped() != 0 {
			t.Errorf("capture dropped %d frames", capture.Dropped())
		}
	})

	t.Run("tcpdump reads the capture", func(t *testing.T) {
		if _, err := exec.LookPath("tcpdump"); err != nil {
			t.Fatal("tcpdump not installed (apt-get install tcpdump; .ci/run does)")
		}
		out, err := exec.Command("tcpdump", "-n", "-e", "-r", pcapPath).CombinedOutput()
		if err != nil {
			t.Fatalf("tcpdump -r: %v\n%s", err, out)
		}
		text := string(out)
		for _, want := range []string{
			"link-type EN10MB",
			macA.String() + " > ff:ff:ff:ff:ff:ff, ethertype ARP",
			"Request who-has 192.0.2.11 tell 192.0.2.10",
			"Reply 192.0.2.11 is-at " + macB.String(),
			"192.0.2.10 > 192.0.2.11: ICMP echo request",
			"192.0.2.11 > 192.0.2.10: ICMP echo reply",
			"2001:db8::a > 2001:db8::b: ICMP6, echo request",
			"2001:db8::b > 2001:db8::a: ICMP6, echo reply",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("tcpdump output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("tcpdump output:\n%s", text)
		}
	})

	t.Run("TCP transfer", func(t *testing.T) {
		for _, dst := range []netip.Addr{b.v4.Addr(), b.v6.Addr()} {
			tcpTransfer(t, a.ns, b.ns, netip.AddrPortFrom(dst, 8080), 8<<20)
		}
		// And the other way, from b's kernel to a's.
		tcpTransfer(t, b.ns, a.ns, netip.AddrPortFrom(a.v4.Addr(), 8080), 4<<20)
	})

	t.Run("checksums", func(t *testing.T) {
		// Only frames from an offloading TAP to a plain one need the
		// bridge to compute a checksum.
		sw := br.swChecksums.Load()
		if want := offloadA != offloadB; (sw > 0) != want {
			t.Errorf("bridge computed %d checksums; want some: %v", sw, want)
		}
	})

	t.Run("segmentation offload", func(t *testing.T) {
		// An offloading sender at MTU 1500 sends frames larger than the
		// MTU (GSO); a plain port gets only frames within it.
		in, out := a.port.Counters(), b.port.Counters()
		gso := in.RxBytes/max(1, in.RxFrames) > uint64(mtu+etherHeader)
		if want := offloadA && mtu < 16000; gso != want {
			t.Errorf("GSO frames from a: %v (%d frames, %d bytes), want %v", gso, in.RxFrames, in.RxBytes, want)
		}
		if !offloadB && out.TxBytes/max(1, out.TxFrames) > uint64(mtu+etherHeader) {
			t.Errorf("plain port b sent %d bytes in %d frames: more than the MTU each", out.TxBytes, out.TxFrames)
		}
		// Segmenting happens only from an offloading TAP to a plain one
		// (both ways have traffic), and surely at MTU 1500.
		segs := br.swSegmented.Load()
		if offloadA == offloadB && segs != 0 || offloadA != offloadB && mtu < 16000 && segs == 0 {
			t.Errorf("bridge cut %d GSO frames into segments", segs)
		}
	})

	t.Run("FDB and counters", func(t *testing.T) {
		fdb := br.FDB()
		for _, c := range []*container{a, b} {
			if e := findFDB(fdb, c.mac); e == nil || e.Port != c.port.Name() {
				t.Errorf("FDB entry for %v = %+v, want on %s", c.mac, e, c.port.Name())
			}
			cs := c.port.Counters()
			if cs.RxFrames == 0 || cs.TxFrames == 0 || cs.RxDropped() != 0 || cs.DropTxError != 0 {
				t.Errorf("%s counters %+v", c.port.Name(), cs)
			}
		}
	})

	// Closing the port deletes the TAP device with it.
	if err := a.port.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ns.Run(context.Background(), "ip", "link", "show", "eth0"); err == nil {
		t.Error("eth0 still exists after its port was closed")
	}
}

// tcpTransfer sends n pseudo-random bytes from a client in from to a
// server in to and checks that the same bytes arrived.
func tcpTransfer(t *testing.T, from, to *netns.NS, addr netip.AddrPort, n int) {
	t.Helper()
	if _, err := netns.Transfer(from, addr.String(), to, addr.String(), n); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationTAPFromFD(t *testing.T) {
	ns := privateNS(t)

	open := func(flags uint16) (int, error) {
		fd := -1
		err := ns.Do(func() error {
			var err error
			fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			ifr, err := unix.NewIfreq("handed0")
			if err != nil {
				return err
			}
			ifr.SetUint16(flags)
			return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		})
		return fd, err
	}

	fd, err := open(unix.IFF_TAP | unix.IFF_NO_PI)
	if err != nil {
		t.Fatal(err)
	}
	tap, err := NewTAPFromFD(fd, 0)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if tap.Name() != "handed0" || tap.BatchSize() != 16 {
		t.Errorf("Name %q BatchSize %d", tap.Name(), tap.BatchSize())
	}
	// Its device's namespace is found from the descriptor.
	if _, err := tap.KernelCounters(); err != nil {
		t.Errorf("KernelCounters of a TAP from a descriptor: %v", err)
	}
	// The kernel sends on an interface once it is up; read one frame
	// (IPv6 router solicitation or MLD report) to prove the fd works.
	if err := ns.SetLink("handed0", 0); err != nil {
		t.Fatal(err)
	}
	port := receives(t, tap)
	if err := port.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tap.ReadFrames([][]byte{make([]byte, 100)}, []int{0}); err != net.ErrClosed {
		t.Errorf("ReadFrames after Close: %v, want net.ErrClosed", err)
	}

	// A TUN device is refused.
	fd, err = open(unix.IFF_TUN | unix.IFF_NO_PI)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := NewTAPFromFD(fd, 0); err == nil {
		t.Error("NewTAPFromFD accepted a TUN device")
	}
}

func TestIntegrationOpenTAPErrors(t *testing.T) {
	netns.RequirePrivileged(t)
	bad := []TAPConfig{
		{Name: "a-name-too-long-for-linux"},
		{MTU: MaxMTU + 1},
		{HardwareAddr: Broadcast},
		{NetNS: "/nonexistent/ns"},
	}
	for _, cfg := range bad {
		if tap, err := OpenTAP(cfg); err == nil {
			tap.Close()
			t.Errorf("OpenTAP(%+v) succeeded", cfg)
		}
	}
}

// A TAP's kernel counters show frames the bridge never saw: with nobody
// reading the device, its queue fills and drops what its stack sends.
func TestIntegrationTAPKernelCounters(t *testing.T) {
	ns, tap := sendingTAP(t, TAPConfig{})
	before, err := tap.KernelCounters()
	if err != nil {
		t.Fatal(err)
	}
	const n = 4000 // the device queues 500 or 1000, as the kernel sets it
	if err := netns.SendUDP(ns, netip.MustParseAddrPort("10.9.0.2:9"), n); err != nil {
		t.Fatal(err)
	}
	after, err := tap.KernelCounters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d frames dropped by the device", after.TxDropped-before.TxDropped, n)
	if d := after.TxDropped - before.TxDropped; d < n/4 {
		t.Errorf("%d frames dropped by the device counted, want %d at least", d, n/4)
	}
	tap.Close()
	if _, err := tap.KernelCounters(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("counters of a closed TAP: %v, want net.ErrClosed", err)
	}
}

// sendingTAP is a TAP device tap0 in a namespace of its own, with
// 10.9.0.1/24 and a neighbour 10.9.0.2 (02:00:00:00:00:02): what the
// namespace sends to 10.9.0.2 comes out of it as frames; cfg gives the
// rest of the TAP's configuration. Both are closed when the test ends (the
// TAP not after a failure, which may have been a Close that hung).
func sendingTAP(t *testing.T, cfg TAPConfig) (*netns.NS, *TAP) {
	t.Helper()
	ns := privateNS(t)
	cfg.Name, cfg.NetNS = "tap0", ns.Path()
	tap, err := OpenTAP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() { // after a Close that hung, another would too
			tap.Close()
		}
	})
	if err := ns.AddAddr("tap0", netip.MustParsePrefix("10.9.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := ns.IP("neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "tap0"); err != nil {
		t.Fatal(err)
	}
	return ns, tap
}

// offloadBatch makes n buffers of MaxGSOFrame bytes, with their sizes and
// offload metadata, for ReadFramesOffload and ServeFramesOffload.
func offloadBatch(n int) ([][]byte, []int, []Offload) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, MaxGSOFrame)
	}
	return bufs, make([]int, n), make([]Offload, n)
}

// KernelCounters racing Close leaves no descriptor open: each it leaked
// held a network namespace.
func TestIntegrationTAPKernelCountersClose(t *testing.T) {
	ns := privateNS(t)
	// One first, so what the runtime opens once (its poller) is counted
	// before.
	if tap, err := OpenTAP(TAPConfig{Name: "tap0", NetNS: ns.Path()}); err == nil {
		tap.KernelCounters()
		tap.Close()
	}
	before := openFDs(t)
	// One after another on an open TAP: each call closes what it opened.
	tap, err := OpenTAP(TAPConfig{Name: "tap0", NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := tap.KernelCounters(); err != nil {
			t.Fatal(err)
		}
	}
	tap.Close()
	if after := openFDs(t); after > before {
		t.Fatalf("%d descriptors open after 20 calls, %d before", after, before)
	}
	// Racing Close.
	for range 100 {
		tap, err := OpenTAP(TAPConfig{Name: "tap0", NetNS: ns.Path()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			tap.KernelCounters()
		}()
		tap.Close()
		<-done
	}
	if after := openFDs(t); after > before {
		t.Fatalf("%d descriptors open after, %d before", after, before)
	}
}

// ServeFramesOffload hands on the frames as they come, and reads the
// device once more per wake-up only, to find it empty: a loop of
// ReadFramesOffload calls reads twice (the next call cannot know the last
// found nothing).
func TestIntegrationTAPServeFrames(t *testing.T) {
	ns, tap := sendingTAP(t, TAPConfig{Offload: true})
	const rounds = 100
	bufs, sizes, meta := offloadBatch(8)
	udp := make(chan struct{}, rounds) // a frame of the test's own came
	frames := 0
	served := make(chan error, 1)
	go func() {
		served <- tap.ServeFramesOffload(bufs, sizes, meta, func(n int) bool {
			frames += n
			for i := range n {
				f := bufs[i][:sizes[i]]
				// IPv4, UDP, to 10.9.0.2 (the kernel's own frames, such as
				// IPv6 router solicitations, come too)
				if len(f) > 34 && f[12] == 0x08 && f[13] == 0x00 && f[23] == 17 && netip.AddrFrom4([4]byte(f[30:34])) == netip.MustParseAddr("10.9.0.2") {
					udp <- struct{}{}
				}
			}
			return len(udp) < rounds
		})
	}()
	for i := range rounds {
		if err := netns.SendUDP(ns, netip.MustParseAddrPort("10.9.0.2:9"), 1); err != nil {
			t.Fatal(err)
		}
		// One at a time: each is a wake-up of its own.
		waitFor(t, fmt.Sprintf("frame %d to be handed on", i), func() bool { return len(udp) > i })
	}
	if err := <-served; err != nil {
		t.Fatalf("ServeFramesOffload: %v, want nil once fn said stop", err)
	}
	// A read that finds nothing ends each wake-up; a few more when a
	// frame is read before the poller's news of it, which then finds
	// nothing.
	if tap.rnone > uint64(frames+frames/4) {
		t.Errorf("%d reads found nothing for %d frames in %d wake-ups at most, want about one a wake-up", tap.rnone, frames, frames)
	}
	tap.Close()
	if err := tap.ServeFramesOffload(bufs, sizes, meta, func(int) bool { return true }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ServeFramesOffload on a closed TAP: %v, want net.ErrClosed", err)
	}
}

// Close ends ServeFramesOffload while frames keep coming: its loop looks
// for Close between batches, since the descriptor closes only once no
// read holds it, and the device under a flood never runs dry.
func TestIntegrationTAPServeFramesCloseUnderFlood(t *testing.T) {
	ns, tap := sendingTAP(t, TAPConfig{Offload: true})
	bufs, sizes, meta := offloadBatch(8)
	var frames atomic.Int64
	served := make(chan error, 1)
	go func() {
		served <- tap.ServeFramesOffload(bufs, sizes, meta, func(n int) bool {
			frames.Add(int64(n))
			time.Sleep(200 * time.Microsecond) // as forwarding takes time
			return true
		})
	}()
	floodUDP(t, ns)
	waitFor(t, "frames of the flood", func() bool { return frames.Load() > 1000 })
	closeWithin(t, tap, func() string { return fmt.Sprintf("(%d frames served)", frames.Load()) })
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("ServeFramesOffload after Close: %v, want net.ErrClosed", err)
	}
}

// A TAP closed under the bridge while it forwards a flood back out of
// itself (hairpin, written directly from its own read loop) is detached
// without a hang: the direct write that finds it closed runs inside the
// port's read, which the Close waits for, so it must not close the port
// itself; the port's transmit goroutine does.
func TestIntegrationTAPClosedUnderHairpin(t *testing.T) {
	ns, tap := sendingTAP(t, TAPConfig{Offload: true, DirectWrite: true})
	peer := MAC{2, 0, 0, 0, 0, 2} // sendingTAP's neighbour
	br, err := New(Config{Name: "br0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			br.Close()
		}
	})
	a, err := br.AddPort(tap, PortConfig{Hairpin: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := br.AddStatic(peer, a); err != nil { // the flood's destination is behind the port itself
		t.Fatal(err)
	}
	floodUDP(t, ns)
	waitFor(t, "hairpinned frames", func() bool { return a.Counters().TxFrames > 1000 })
	closeWithin(t, tap, func() string { return "" })
	waitFor(t, "the port detached", func() bool { return len(br.Ports()) == 0 })
}

// floodUDP sends datagrams from ns to 10.9.0.2:9 (sendingTAP's neighbour,
// out of its TAP) as fast as it can, until the test ends.
func floodUDP(t *testing.T, ns *netns.NS) {
	t.Helper()
	pc, err := ns.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.9.0.2:9"))
		for !stop.Load() {
			pc.WriteTo([]byte("x"), dst)
		}
	}()
	t.Cleanup(func() {
		stop.Store(true)
		<-flooding
		pc.Close()
	})
}

// closeLimit is how long closeWithin lets a Close take: a hang never
// ends, and a healthy Close takes milliseconds, but deleting the device
// has been seen to stall in the kernel for half a second on a busy
// machine.
const closeLimit = 10 * time.Second

// closeWithin closes tap, and fails the test if Close still waits after
// closeLimit; more says what else to report then.
func closeWithin(t *testing.T, tap *TAP, more func() string) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		tap.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(closeLimit):
		t.Fatalf("Close still waiting after %v %s", closeLimit, more())
	}
}

// A TAP opened in one place (OpenTAPFile, as a helper inside a user
// namespace does) is used in another with its offloads (TAPFromFile);
// NewTAPFromFD, which takes plain devices, refuses it and leaves the
// descriptor to its caller.
func TestIntegrationTAPFromFile(t *testing.T) {
	ns := privateNS(t)
	f, err := OpenTAPFile(TAPConfig{Name: "passed0", NetNS: ns.Path(), MTU: 9000, Offload: true})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		if _, err := NewTAPFromFD(int(fd), 0); err == nil {
			t.Error("NewTAPFromFD took a device with virtio-net headers")
		}
	})
	// A blocking descriptor, which Go's poller would not have taken, is
	// refused, and stays the caller's.
	setNonblock := func(on bool) {
		rc.Control(func(fd uintptr) {
			if err := unix.SetNonblock(int(fd), on); err != nil {
				t.Fatal(err)
			}
		})
	}
	setNonblock(false)
	if _, err := TAPFromFile(f, TAPConfig{}); !errors.Is(err, errBlockingTAP) {
		t.Errorf("TAPFromFile over a blocking descriptor: %v, want %v", err, errBlockingTAP)
	}
	setNonblock(true)
	tap, err := TAPFromFile(f, TAPConfig{BatchSize: 4, DirectWrite: true})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer tap.Close()
	if tap.Name() != "passed0" || !tap.Offloading() || tap.BatchSize() != 4 || !tap.WritesDirect() {
		t.Errorf("Name %q Offloading %v BatchSize %d WritesDirect %v; want passed0, offloads, 4, direct", tap.Name(), tap.Offloading(), tap.BatchSize(), tap.WritesDirect())
	}
	// OpenTAPFile set the MTU and brought the link up, in its namespace.
	out, err := ns.Run(context.Background(), "ip", "-o", "link", "show", "passed0")
	if err != nil || !strings.Contains(string(out), "mtu 9000") || !strings.Contains(string(out), ",UP") {
		t.Errorf("ip link show passed0: %v\n%s", err, out)
	}
	// An address, so the kernel sends on it: the device is read.
	if err := ns.AddAddr("passed0", netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	receives(t, tap)
}

// receives plugs tap into a new bridge and waits for a frame from the
// kernel through it (an IPv6 router solicitation or MLD report, sent once
// the link is up), which proves the device is read; it returns the port.
func receives(t *testing.T, tap *TAP) *Attachment {
	t.Helper()
	br, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	port, err := br.AddPort(tap, PortConfig{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a frame from the kernel", func() bool { return port.Counters().RxFrames > 0 })
	return port
}

// A TAP device's file is closed on exec, with offloads or without: a
// child process the embedder starts (a VM, a container's runtime, a
// helper) inherits no descriptor of it, which would keep the device
// alive after Close and let the child read and write the bridge's
// frames. A device that cannot be made leaves no descriptor open, and
// attaching to a persistent device leaves it persistent.
func TestIntegrationTAPFileHygiene(t *testing.T) {
	ns := privateNS(t)
	exists := func(name string) bool {
		var found bool
		ns.Do(func() error {
			_, err := net.InterfaceByName(name)
			found = err == nil
			return nil
		})
		return found
	}
	for _, offload := range []bool{false, true} {
		f, err := OpenTAPFile(TAPConfig{Name: "tap0", NetNS: ns.Path(), Offload: offload})
		if err != nil {
			t.Fatal(err)
		}
		flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("offload %v: the TAP's descriptor is inherited by child processes (no FD_CLOEXEC)", offload)
		}
		f.Close()

		// "lo" is a device, but no TAP: TUNSETIFF fails.
		before := openFDs(t)
		if tap, err := OpenTAP(TAPConfig{Name: "lo", NetNS: ns.Path(), Offload: offload}); err == nil {
			tap.Close()
			t.Fatalf("offload %v: opened lo as a TAP", offload)
		}
		if after := openFDs(t); after > before {
			t.Errorf("offload %v: %d descriptors open after a failed OpenTAP, %d before", offload, after, before)
		}

		f, err = OpenTAPFile(TAPConfig{Name: "keep0", NetNS: ns.Path(), Offload: offload})
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlSetInt(int(f.Fd()), unix.TUNSETPERSIST, 1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		tap, err := OpenTAP(TAPConfig{Name: "keep0", NetNS: ns.Path(), Offload: offload})
		if err != nil {
			t.Fatal(err)
		}
		tap.Close()
		if !exists("keep0") {
			t.Errorf("offload %v: a persistent TAP device is gone after OpenTAP and Close attached to it", offload)
			continue
		}
		f, err = OpenTAPFile(TAPConfig{Name: "keep0", NetNS: ns.Path(), Offload: offload})
		if err != nil {
			t.Fatal(err)
		}
		unix.IoctlSetInt(int(f.Fd()), unix.TUNSETPERSIST, 0)
		f.Close()
	}
}

// privateNS is a network namespace of the test's own, closed when it
// ends; the test skips unless it may make one.
func privateNS(t *testing.T) *netns.NS {
	t.Helper()
	netns.RequirePrivileged(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// A TAP's frames are served by whichever loop of the process polls
// (busypoll) while ServeFramesOffload's own goroutine sleeps: fn runs
// inside the polling loop's busypoll.Idle, here the test's. When fn says
// stop there, ServeFramesOffload returns nil all the same.
func TestIntegrationTAPServedByPollingLoop(t *testing.T) {
	ns, tap := sendingTAP(t, TAPConfig{Offload: true})
	bufs, sizes, meta := offloadBatch(8)
	var standIn atomic.Bool // a frame of the test's was served inside Idle
	served := make(chan error, 1)
	go func() {
		served <- tap.ServeFramesOffload(bufs, sizes, meta, func(n int) bool {
			for i := range n {
				f := bufs[i][:sizes[i]]
				if len(f) > 34 && f[12] == 0x08 && f[13] == 0x00 && f[23] == 17 && netip.AddrFrom4([4]byte(f[30:34])) == netip.MustParseAddr("10.9.0.2") && busypoll.InIdle() {
					standIn.Store(true)
				}
			}
			return !standIn.Load()
		})
	}()
	// One frame at a time, each sent while the test polls, until one is
	// served there. After it no frame comes: the TAP's goroutine, asleep,
	// must be woken to return by the stand-in.
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/tap0/disable_ipv6", []byte("1"), 0)
	}); err != nil {
		t.Fatal(err) // the kernel's IPv6 frames, which would wake it
	}
	ok, err := busypoll.PollUntil(10*time.Second, func() error {
		return netns.SendUDP(ns, netip.MustParseAddrPort("10.9.0.2:9"), 1)
	}, standIn.Load)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("in 10s, no frame was served by the polling loop")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeFramesOffload: %v, want nil once fn said stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeFramesOffload did not return within 10s of fn's stop, said to a polling loop")
	}
	// What woke it leaves nothing behind: the TAP serves again.
	go func() {
		served <- tap.ServeFramesOffload(bufs, sizes, meta, func(int) bool { return false })
	}()
	if err := netns.SendUDP(ns, netip.MustParseAddrPort("10.9.0.2:9"), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeFramesOffload again: %v, want nil once fn said stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeFramesOffload again: no frame served in 10s")
	}
}
