package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/internal/rtnl"
	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/busypoll"
)

// TAPConfig configures OpenTAP. The zero value creates a TAP device named
// by the kernel (tapN) in the caller's network namespace, with the
// kernel's default MTU, brought up.
type TAPConfig struct {
	// Name is the interface name, at most 15 bytes; empty lets the kernel
	// choose. If a persistent TAP device of that name exists, OpenTAP
	// attaches to it.
	Name string

	// NetNS is the path of the network namespace to create the device in,
	// such as /proc/PID/ns/net or /run/netns/NAME; empty means the
	// caller's. The process must be allowed to enter it: CAP_SYS_ADMIN over
	// the user namespace that owns it. A namespace of another user
	// namespace (a rootless container's) it cannot enter, as a Go program
	// cannot join a user namespace: there a helper process opens the
	// device (OpenTAPFile) and passes it on (TAPFromFile), as `usernat`
	// does when run as slirp4netns.
	NetNS string

	// MTU is set on the device when not zero; at most 65520.
	MTU int

	// HardwareAddr is set as the device's MAC when not zero. This is the
	// MAC of the container or VM side, the one the bridge learns.
	HardwareAddr MAC

	// BatchSize is the most frames moved per call; zero means 16.
	BatchSize int

	// DirectWrite lets the bridge write frames to the device from the
	// goroutine that forwards them when nothing is queued for it
	// (DirectWriter), instead of waking the port's transmit goroutine: a
	// hand-off less per frame, for latency and connections per second,
	// at the cost of the forwarding goroutine making the write itself.
	// Off by default (bench/nat measured it worse for the link uplink).
	DirectWrite bool

	// RawIO makes the device's reads and writes without telling Go's
	// scheduler (RawSyscall). They never wait (the device is
	// non-blocking), but a write does the receiving kernel's work, and
	// one the scheduler sees lets its monitor hand the thread's P to
	// another thread when it takes over 20 µs: a wake-up and two context
	// switches. Measured with bench/rootless (the host-socket uplink,
	// direct writes, 2026-11-27; bench/README.md's table of steps): CPU
	// per connection 0.109–0.123 -> 0.095 ms, per round trip
	// 0.060–0.062 -> 0.044. With bench/nat (the link
	// uplink, transmit goroutines) p50 latency went from 68–77 µs to
	// 97–113 µs, so it is off by default.
	RawIO bool

	// Offload turns on checksum and TCP segmentation offload: the device
	// is opened with virtio-net headers (IFF_VNET_HDR) and TUN_F_CSUM,
	// TUN_F_TSO4, TUN_F_TSO6 and TUN_F_TSO_ECN, so the kernel leaves the
	// TCP and UDP checksums of the frames it sends to be computed, sends
	// TCP in segments of up to 64 KiB whatever the MTU (cut to the MTU by
	// whoever delivers them), and takes such frames. The bridge passes
	// them between offloading ports untouched, and computes checksums and
	// cuts segments only for other ports. One 64 KiB frame instead of
	// forty-odd 1500-byte ones is forty-odd system calls fewer on each
	// side. A capture shows pending checksums as incorrect and segments
	// larger than the MTU, as tcpdump on a NIC with offloads does. Off by
	// default.
	Offload bool
}

// TAP is a Port over a Linux TAP device: frames the kernel sends out of the
// interface are read from it, frames written to it are received by the
// kernel. The device must be a TAP (not TUN) device without packet
// information (IFF_NO_PI) and without virtio-net headers. A device OpenTAP
// created goes away when the TAP is closed, unless it is persistent.
type TAP struct {
	f     *os.File
	rc    syscall.RawConn
	name  string
	batch int
	vnet  bool // frames carry a virtio-net header on the wire

	// State of the call in progress, for the callbacks given to rc, which
	// are built once so a call does not allocate. The bridge makes one
	// read and one write at a time (see Port); the mutexes make TAP safe
	// for other users too.
	rmu    sync.Mutex
	rbufs  [][]byte
	rsizes []int
	rn     int
	rerr   error
	rmeta  []Offload // nil when the caller wants plain frames
	rtry   bool      // return rather than wait when nothing is waiting
	rempty bool      // the last read found nothing (EAGAIN)
	rnone  uint64    // reads that found nothing, for the tests
	rserve func(int) bool
	rstop  bool // rserve said stop
	rloop  *busypoll.Loop
	// standInFn is standIn, made once.
	standInFn func(uintptr) bool
	rhdr      [vnetHdrLen]byte
	riov      [2]unix.Iovec
	readFn    func(uintptr) bool
	serveFn   func(uintptr) bool
	// Plain reads of an offloading TAP: one frame at a time into big,
	// GSO frames cut into segments one ReadFrames slot at a time.
	big     []byte
	one     [1][]byte
	oneSize [1]int
	oneMeta [1]Offload
	seg     segmenter
	segging bool
	wmu     sync.Mutex
	wbufs   [][]byte
	wn      int
	werr    error
	wmeta   []Offload
	whdr    [vnetHdrLen]byte
	wiov    [2]unix.Iovec
	writeFn func(uintptr) bool

	closed atomic.Bool
	once   sync.Once
	cerr   error

	direct bool
	raw    bool // TAPConfig.RawIO
}

var (
	_ Port          = (*TAP)(nil)
	_ Namer         = (*TAP)(nil)
	_ OffloadPort   = (*TAP)(nil)
	_ KernelCounter = (*TAP)(nil)
)

// OpenTAP creates (or attaches to) a TAP device as cfg says, sets its MTU
// and MAC when asked, and brings the link up.
func OpenTAP(cfg TAPConfig) (*TAP, error) {
	f, err := OpenTAPFile(cfg)
	if err != nil {
		return nil, err
	}
	t, err := TAPFromFile(f, cfg)
	if err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

// OpenTAPFile does what OpenTAP does and returns the device's open file
// instead of a TAP: for a process that can open the device where the one
// that uses it cannot, such as a helper inside a container's user
// namespace, which passes the file on (over a unix socket) to TAPFromFile.
func OpenTAPFile(cfg TAPConfig) (*os.File, error) {
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("bridge: open TAP: name %q longer than %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}
	if cfg.MTU < 0 || cfg.MTU > MaxMTU {
		return nil, fmt.Errorf("bridge: open TAP: MTU %d not in 1..%d", cfg.MTU, MaxMTU)
	}
	if !cfg.HardwareAddr.IsZero() && !cfg.HardwareAddr.isStation() {
		return nil, fmt.Errorf("bridge: open TAP: MAC %v is not a unicast address", cfg.HardwareAddr)
	}
	var f *os.File
	err := netns.InPath(cfg.NetNS, func() error {
		var name string
		var err error
		if f, name, err = createTAP(cfg.Name, cfg.Offload); err != nil {
			return err
		}
		if err := linkSetup(name, cfg.MTU, cfg.HardwareAddr); err != nil {
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: open TAP %q: %w", cfg.Name, err)
	}
	return f, nil
}

// TAPFromFile returns a TAP over f, an open TAP device: OpenTAPFile's, or
// one a rootless runtime passes over a unix socket (made non-blocking
// before os.NewFile, so that Go's poller takes it). A device opened with
// virtio-net headers (IFF_VNET_HDR, of the default size) is used with
// checksum and segmentation offload, as TAPConfig.Offload asks for, which
// it sets (TUNSETOFFLOAD); one with packet information is refused, and a
// blocking descriptor too, which Go's poller did not take. Of cfg, only
// BatchSize, DirectWrite and RawIO apply: the device is used as it is. The TAP takes ownership of f and closes it on Close; on an error
// f stays the caller's.
func TAPFromFile(f *os.File, cfg TAPConfig) (*TAP, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("bridge: TAP from %s: %w", f.Name(), err)
	}
	var name string
	var vnet bool
	if cerr := rc.Control(func(fd uintptr) {
		// Go's poller took f only if it was non-blocking: a blocking
		// read of a device run dry would hold a thread (with RawIO, the
		// process's only one) until the next frame.
		if fl, ferr := unix.FcntlInt(fd, unix.F_GETFL, 0); ferr == nil && fl&unix.O_NONBLOCK == 0 {
			err = errBlockingTAP
			return
		}
		name, vnet, err = checkTAP(int(fd), true)
	}); cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: TAP from %s: %w", f.Name(), err)
	}
	t, err := newTAP(f, name, cfg.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("bridge: TAP from %s: %w", f.Name(), err)
	}
	t.vnet, t.direct, t.raw = vnet, cfg.DirectWrite, cfg.RawIO
	return t, nil
}

// errBlockingTAP is TAPFromFile's error for a file over a blocking
// descriptor.
var errBlockingTAP = errors.New("the descriptor is blocking: make it non-blocking before os.NewFile")

// NewTAPFromFD returns a TAP over fd, an open TAP device such as a rootless
// runtime passes over a unix socket. The TAP takes ownership of fd and
// closes it on Close. The device's MTU and link state are left as they
// are. batchSize zero means 16. A device with virtio-net headers is
// refused (TAPFromFile takes it).
func NewTAPFromFD(fd int, batchSize int) (*TAP, error) {
	name, _, err := checkTAP(fd, false)
	if err != nil {
		return nil, fmt.Errorf("bridge: TAP from fd %d: %w", fd, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("bridge: TAP from fd %d: %w", fd, err)
	}
	t, err := newTAP(os.NewFile(uintptr(fd), name), name, batchSize)
	if err != nil {
		return nil, fmt.Errorf("bridge: TAP from fd %d: %w", fd, err)
	}
	return t, nil
}

// checkTAP checks that fd is a TAP device without packet information,
// and, unless vnetOK, without virtio-net headers; it returns the device's
// name and whether it has them, in which case it turns its offloads on.
func checkTAP(fd int, vnetOK bool) (name string, vnet bool, err error) {
	ifr, err := tunIfreq(fd)
	if err != nil {
		return "", false, err
	}
	name, flags := ifr.Name(), ifr.Uint16()
	switch {
	case flags&unix.IFF_TAP == 0:
		return "", false, fmt.Errorf("%s is not a TAP device", name)
	case flags&unix.IFF_NO_PI == 0, !vnetOK && flags&unix.IFF_VNET_HDR != 0:
		return "", false, fmt.Errorf("%s carries packet information or vnet headers", name)
	}
	if flags&unix.IFF_VNET_HDR == 0 {
		return name, false, nil
	}
	if n, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ); err != nil || n != vnetHdrLen {
		return "", false, fmt.Errorf("%s: a virtio-net header of %d bytes, want %d (%v)", name, n, vnetHdrLen, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6|tunFTSOECN); err != nil {
		return "", false, os.NewSyscallError("ioctl TUNSETOFFLOAD", err)
	}
	return name, true, nil
}

// createTAP creates the TAP device name (the kernel names it when name is
// empty), or attaches to the persistent one of that name, leaving its
// persistence as it is; with vnet, with virtio-net headers. The file is
// non-blocking, for Go's poller, and closed on exec, so that no child
// process inherits the device (a child holding it would keep the device
// alive after Close, and could read and write the bridge's frames); when
// the device cannot be made, nothing is left open.
func createTAP(name string, vnet bool) (*os.File, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", os.NewSyscallError("ioctl TUNSETIFF", err)
	}
	// Its offloads are turned on by TAPFromFile (checkTAP).
	return os.NewFile(uintptr(fd), ifr.Name()), ifr.Name(), nil
}

func newTAP(f *os.File, name string, batch int) (*TAP, error) {
	if batch <= 0 {
		batch = 16
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &TAP{f: f, rc: rc, name: name, batch: batch}
	t.readFn = t.readRaw
	t.serveFn = t.serveRaw
	t.standInFn = t.standIn
	t.writeFn = t.writeRaw
	return t, nil
}

// Name returns the interface name.
func (t *TAP) Name() string { return t.name }

// BatchSize implements Port.
func (t *TAP) BatchSize() int { return t.batch }

// ReadFrames implements Port. A TAP device hands out one frame per read;
// ReadFrames waits for the first and then takes those already waiting, up
// to len(bufs), in one wake-up. On an offloading TAP it gives complete
// frames: it computes pending checksums and cuts GSO frames into
// segments, returning the segments of one frame over several calls when
// they outnumber bufs; each buffer must then hold a segment (the MTU plus
// the Ethernet header), else the rest of that frame is dropped.
func (t *TAP) ReadFrames(bufs [][]byte, sizes []int) (int, error) {
	if !t.vnet {
		return t.read(bufs, sizes, nil)
	}
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if t.big == nil {
		t.big = make([]byte, MaxGSOFrame)
		t.one[0] = t.big
	}
	n := 0
	for n < len(bufs) {
		if t.segging {
			if len(bufs[n]) < t.seg.hdr+t.seg.mss {
				t.segging = false
				continue
			}
			sizes[n], t.segging = t.seg.next(bufs[n])
			n++
			continue
		}
		t.rtry = n > 0
		k, err := t.readLocked(t.one[:], t.oneSize[:], t.oneMeta[:])
		t.rtry = false
		if k == 0 || err != nil {
			return n, err
		}
		frame, o := t.big[:t.oneSize[0]], &t.oneMeta[0]
		if o.GSO != GSONone {
			t.segging = t.seg.init(frame, l3Offset(frame), *o) == nil
			continue
		}
		CompleteChecksum(frame, o)
		if len(frame) <= len(bufs[n]) {
			sizes[n] = copy(bufs[n], frame)
			n++
		}
	}
	return n, nil
}

// KernelCounters implements KernelCounter. It reads the device's counters
// in the device's network namespace, wherever that is (a TAP handed over
// as a descriptor too, found with TUNGETDEVNETNS, Linux 5.2), by its
// current name; it needs CAP_NET_ADMIN over that namespace, and to enter
// it.
func (t *TAP) KernelCounters() (KernelCounters, error) {
	nsfd := -1
	var name string
	var ierr error
	err := t.rc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, ierr = tunIfreq(int(fd)); ierr != nil {
			return
		}
		name = ifr.Name()
		if nsfd, ierr = unix.IoctlRetInt(int(fd), unix.TUNGETDEVNETNS); ierr != nil {
			nsfd, ierr = -1, os.NewSyscallError("ioctl TUNGETDEVNETNS", ierr)
		}
	})
	if nsfd >= 0 {
		defer unix.Close(nsfd) // whatever happens next: it holds a namespace
	}
	if err == nil {
		err = ierr
	}
	var st rtnl.LinkStats
	if err == nil {
		st, err = linkStats(fmt.Sprintf("/proc/self/fd/%d", nsfd), name)
	}
	if err != nil {
		return KernelCounters{}, t.mapErr(fmt.Errorf("counters: %w", err))
	}
	return KernelCounters{RxDropped: st.RxDropped, TxDropped: st.TxDropped}, nil
}

// linkStats reads the counters of the link name in the namespace at path.
func linkStats(path, name string) (rtnl.LinkStats, error) {
	c, err := rtnl.Open(path)
	if err != nil {
		return rtnl.LinkStats{}, err
	}
	defer c.Close()
	return c.LinkStats(name)
}

// tunIfreq asks the TUN/TAP device open as fd for its name and flags
// (TUNGETIFF).
func tunIfreq(fd int) (*unix.Ifreq, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, os.NewSyscallError("ioctl TUNGETIFF", err)
	}
	return ifr, nil
}

// WritesDirect implements DirectWriter: it reports TAPConfig.DirectWrite.
func (t *TAP) WritesDirect() bool { return t.direct }

// Offloading implements OffloadPort: it reports whether the TAP was
// opened with TAPConfig.Offload.
func (t *TAP) Offloading() bool { return t.vnet }

// ReadFramesOffload implements OffloadPort. Each buffer should hold
// MaxGSOFrame bytes: a frame longer than its buffer is dropped.
func (t *TAP) ReadFramesOffload(bufs [][]byte, sizes []int, meta []Offload) (int, error) {
	return t.read(bufs, sizes, meta)
}

func (t *TAP) read(bufs [][]byte, sizes []int, meta []Offload) (int, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	return t.readLocked(bufs, sizes, meta)
}

func (t *TAP) readLocked(bufs [][]byte, sizes []int, meta []Offload) (int, error) {
	if t.closed.Load() {
		return 0, net.ErrClosed
	}
	t.rbufs, t.rsizes, t.rmeta, t.rn, t.rerr = bufs, sizes, meta, 0, nil
	err := t.rc.Read(t.readFn)
	n, rerr := t.rn, t.rerr
	t.rbufs, t.rsizes, t.rmeta = nil, nil, nil
	clear(t.riov[:])
	if err == nil {
		err = rerr
	}
	return n, t.mapErr(err)
}

// ServeFramesOffload implements FrameServer. Each buffer should hold
// MaxGSOFrame bytes: a frame longer than its buffer is dropped. Close ends
// it, between two batches, with net.ErrClosed.
func (t *TAP) ServeFramesOffload(bufs [][]byte, sizes []int, meta []Offload, fn func(n int) bool) error {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if t.closed.Load() {
		return net.ErrClosed
	}
	t.rbufs, t.rsizes, t.rmeta, t.rserve, t.rerr, t.rstop = bufs, sizes, meta, fn, nil, false
	t.rloop = busypoll.NewLoop(t.rc, t.standInFn)
	err := t.rc.Read(t.serveFn)
	t.rloop.Close()
	rerr, stop := t.rerr, t.rstop
	t.rbufs, t.rsizes, t.rmeta, t.rserve, t.rloop = nil, nil, nil, nil, nil
	clear(t.riov[:])
	if stop {
		t.f.SetReadDeadline(time.Time{}) // standIn's, if it set one to wake the loop
		return nil
	}
	if err == nil {
		err = rerr
	}
	return t.mapErr(err)
}

// standIn is the busypoll.Loop's serve of ServeFramesOffload's loop: one
// batch, read and handed on, when a polling loop finds the device ready
// while this one sleeps. A failed read it leaves to the loop; should fn
// say stop, it wakes the loop to return. A loop that is ending (its read
// failed, and serveRaw returned, but ServeFramesOffload has not closed
// the busypoll.Loop yet) it leaves alone: its error is the loop's to
// return, and fn has had its last batch.
func (t *TAP) standIn(fd uintptr) bool {
	if t.closed.Load() || t.rstop || t.rerr != nil {
		return false
	}
	t.rn, t.rempty = 0, false
	t.readRaw(fd)
	if t.rn > 0 && !t.rserve(t.rn) {
		t.rstop = true
		t.f.SetReadDeadline(time.Now())
	}
	if t.rerr != nil {
		t.rerr = nil // the loop's own read meets it again
		return false
	}
	return true
}

// serveRaw is ServeFramesOffload's callback for rc.Read: it reads a batch
// and hands it on, again and again, and has rc wait for the device's news
// only when a read found nothing. All in one call of rc.Read: a new call
// forgets the news that came before it (it resets the descriptor's
// readiness), so it must read first, even when the last found nothing.
// Between batches it looks for Close, which waits for it to return (the
// descriptor is closed once no read holds it): a device that never runs
// dry would keep it waiting. Run dry, it polls a moment before it waits
// (busypoll).
func (t *TAP) serveRaw(fd uintptr) bool {
	t.rloop.Enter()
	defer t.rloop.Exit()
	busypoll.Woke()
	for {
		if t.closed.Load() {
			t.rerr = net.ErrClosed
			return true
		}
		if t.rstop {
			return true // fn said stop to standIn
		}
		t.rn, t.rempty = 0, false
		t.readRaw(fd)
		if t.rn > 0 && !t.rserve(t.rn) {
			t.rstop = true
			return true
		}
		if t.rerr != nil {
			return true
		}
		if t.rempty && !busypoll.Idle(int(fd)) {
			return false
		}
	}
}

func (t *TAP) readRaw(fd uintptr) bool {
	for t.rn < len(t.rbufs) {
		var n int
		var err error
		if t.vnet {
			n, err = t.readv(fd, t.rbufs[t.rn])
		} else {
			n, err = plainIO(t.raw, unix.SYS_READ, fd, t.rbufs[t.rn])
		}
		switch err {
		case nil:
			if t.vnet && !t.takeHeader(&n, len(t.rbufs[t.rn])) {
				continue
			}
			t.rsizes[t.rn] = n
			t.rn++
		case unix.EINTR:
		case unix.EAGAIN:
			t.rempty = true
			t.rnone++
			return t.rn > 0 || t.rtry // wait for the poller only while empty-handed
		default:
			t.rerr = os.NewSyscallError("read", err)
			return true
		}
	}
	return true
}

// readv reads one frame with its virtio-net header into t.rhdr.
func (t *TAP) readv(fd uintptr, buf []byte) (int, error) {
	return vnetIO(t.raw, unix.SYS_READV, fd, &t.riov, &t.rhdr, buf)
}

// plainIO reads or writes (trap SYS_READ or SYS_WRITE) one frame buf of a
// device without virtio-net headers; raw as vnetIO's.
func plainIO(raw bool, trap, fd uintptr, buf []byte) (int, error) {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	var r uintptr
	var e unix.Errno
	if raw {
		r, _, e = unix.RawSyscall(trap, fd, uintptr(p), uintptr(len(buf)))
	} else {
		r, _, e = unix.Syscall(trap, fd, uintptr(p), uintptr(len(buf)))
	}
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// vnetIO reads or writes (trap SYS_READV or SYS_WRITEV) one frame buf
// behind the virtio-net header hdr, through iov, and returns the bytes
// moved, header included; raw makes the call unseen by the scheduler
// (TAPConfig.RawIO).
func vnetIO(raw bool, trap, fd uintptr, iov *[2]unix.Iovec, hdr *[vnetHdrLen]byte, buf []byte) (int, error) {
	iov[0].Base = &hdr[0]
	iov[0].SetLen(vnetHdrLen)
	iov[1].Base = nil
	if len(buf) > 0 {
		iov[1].Base = &buf[0]
	}
	iov[1].SetLen(len(buf))
	var r uintptr
	var e unix.Errno
	if raw {
		r, _, e = unix.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&iov[0])), 2)
	} else {
		r, _, e = unix.Syscall(trap, fd, uintptr(unsafe.Pointer(&iov[0])), 2)
	}
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// takeHeader turns the header read with frame t.rn into its offload
// metadata and *n into the frame's length. It reports false for a frame to
// skip: one longer than its buffer of size (the kernel cut it short), or
// one whose header does not fit it.
func (t *TAP) takeHeader(n *int, size int) bool {
	*n -= vnetHdrLen
	h := t.rhdr
	o := Offload{
		Flags:      h[0] & (OffloadNeedsCsum | OffloadDataValid),
		GSO:        h[1],
		HdrLen:     binary.LittleEndian.Uint16(h[2:]),
		GSOSize:    binary.LittleEndian.Uint16(h[4:]),
		CsumStart:  binary.LittleEndian.Uint16(h[6:]),
		CsumOffset: binary.LittleEndian.Uint16(h[8:]),
	}
	if *n < 0 || *n > size || !o.Valid(*n) {
		return false
	}
	if t.rmeta != nil {
		t.rmeta[t.rn] = o
	}
	return true
}

// WriteFrames implements Port.
func (t *TAP) WriteFrames(bufs [][]byte) (int, error) {
	return t.write(bufs, nil)
}

// WriteFramesOffload implements OffloadPort.
func (t *TAP) WriteFramesOffload(bufs [][]byte, meta []Offload) (int, error) {
	return t.write(bufs, meta)
}

func (t *TAP) write(bufs [][]byte, meta []Offload) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.closed.Load() {
		return 0, net.ErrClosed
	}
	t.wbufs, t.wmeta, t.wn, t.werr = bufs, meta, 0, nil
	err := t.rc.Write(t.writeFn)
	n, werr := t.wn, t.werr
	t.wbufs, t.wmeta = nil, nil
	clear(t.wiov[:])
	if err == nil {
		err = werr
	}
	return n, t.mapErr(err)
}

func (t *TAP) writeRaw(fd uintptr) bool {
	for t.wn < len(t.wbufs) {
		var err error
		if t.vnet {
			err = t.writev(fd)
		} else {
			_, err = plainIO(t.raw, unix.SYS_WRITE, fd, t.wbufs[t.wn])
		}
		switch err {
		case nil:
			t.wn++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			t.werr = os.NewSyscallError("write", err)
			return true
		}
	}
	return true
}

// writev writes frame t.wn behind a virtio-net header made from its
// offload metadata, or a blank one (checksum to be verified) without.
func (t *TAP) writev(fd uintptr) error {
	t.whdr = [vnetHdrLen]byte{}
	if t.wmeta != nil {
		o := t.wmeta[t.wn]
		t.whdr[0] = o.Flags
		if o.Flags&OffloadNeedsCsum != 0 {
			binary.LittleEndian.PutUint16(t.whdr[6:], o.CsumStart)
			binary.LittleEndian.PutUint16(t.whdr[8:], o.CsumOffset)
		}
		if o.GSO != GSONone {
			t.whdr[1] = o.GSO
			binary.LittleEndian.PutUint16(t.whdr[2:], o.HdrLen)
			binary.LittleEndian.PutUint16(t.whdr[4:], o.GSOSize)
		}
	}
	_, err := vnetIO(t.raw, unix.SYS_WRITEV, fd, &t.wiov, &t.whdr, t.wbufs[t.wn])
	return err
}

func (t *TAP) mapErr(err error) error {
	if err == nil {
		return nil
	}
	if t.closed.Load() || errors.Is(err, os.ErrClosed) {
		return net.ErrClosed
	}
	return fmt.Errorf("bridge: TAP %s: %w", t.name, err)
}

// Close implements Port: it unblocks reads and writes in progress and
// closes the device file. Closing twice is harmless.
func (t *TAP) Close() error {
	t.once.Do(func() {
		t.closed.Store(true)
		t.cerr = t.f.Close()
	})
	return t.cerr
}

// linkSetup sets a device's MTU and MAC and brings it up, in the calling
// thread's network namespace.
func linkSetup(name string, mtu int, hw MAC) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if mtu > 0 {
		ifr.SetUint32(uint32(mtu))
		if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
			return fmt.Errorf("set MTU %d: %w", mtu, os.NewSyscallError("ioctl", err))
		}
	}
	if !hw.IsZero() {
		// x/sys has no setter for ifr_hwaddr, so lay out struct ifreq here.
		var req struct {
			name   [unix.IFNAMSIZ]byte
			family uint16
			data   [14]byte
			_      [8]byte // the rest of the ifreq union
		}
		copy(req.name[:], name)
		req.family = unix.ARPHRD_ETHER
		copy(req.data[:], hw[:])
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s), unix.SIOCSIFHWADDR, uintptr(unsafe.Pointer(&req))); e != 0 {
			return fmt.Errorf("set MAC %v: %w", hw, os.NewSyscallError("ioctl", e))
		}
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags: %w", os.NewSyscallError("ioctl", err))
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link up: %w", os.NewSyscallError("ioctl", err))
	}
	return nil
}
