package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// NS is a network namespace this process created. It lives as long as the
// NS is open or a process or device keeps it alive.
type NS struct {
	fd   int
	once sync.Once
}

// New creates a network namespace with its loopback up.
func New() (*NS, error) {
	type result struct {
		fd  int
		err error
	}
	resc := make(chan result, 1)
	// The goroutine's descriptor of its own namespace is closed before the
	// result is sent (not deferred past the send): New returns with
	// nothing of its own left open.
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{-1, fmt.Errorf("netns: open own namespace: %w", err)}
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			unix.Close(orig)
			runtime.UnlockOSThread()
			resc <- result{-1, fmt.Errorf("netns: %w", os.NewSyscallError("unshare", err))}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = linkUp("lo")
			if err != nil {
				unix.Close(fd)
				fd = -1
			}
		}
		serr := unix.Setns(orig, unix.CLONE_NEWNET)
		unix.Close(orig)
		if serr != nil {
			// Stay locked: the runtime ends this thread with the goroutine.
			if fd >= 0 {
				unix.Close(fd)
			}
			resc <- result{-1, fmt.Errorf("netns: %w", os.NewSyscallError("setns back", serr))}
			return
		}
		runtime.UnlockOSThread()
		resc <- result{fd, err}
	}()
	r := <-resc
	if r.err != nil {
		return nil, r.err
	}
	return &NS{fd: r.fd}, nil
}

// Open returns the network namespace at path (such as /proc/PID/ns/net of
// a process another tool made), held open until Close.
func Open(path string) (*NS, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	return &NS{fd: fd}, nil
}

// Path returns a path that opens the namespace from this process or any
// other (as root): /proc/PID/fd/FD. Pass it to bridge.TAPConfig.NetNS or
// to `ip link set DEV netns PATH`.
func (ns *NS) Path() string {
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(ns.fd)
}

// Do runs fn on an OS thread inside the namespace. Sockets, devices and
// processes fn creates belong to the namespace; sockets keep working from
// any goroutine after fn returns.
func (ns *NS) Do(fn func() error) error { return onThreadIn(ns.fd, "", fn) }

// onThreadIn runs fn on an OS thread that has entered the network
// namespace open at fd (named name in errors), and goes back after. If the
// thread cannot go back it stays locked, so the runtime ends it with the
// goroutine rather than reuse a thread in the wrong namespace; what fn did
// stands. (A process in a user namespace of its own, as Podman runs
// slirp4netns, may enter a network namespace of that user namespace but
// not go back to the host's, which it does not own.)
//
// The goroutine closes its descriptor of the thread's own namespace before
// it hands fn's result over, so that onThreadIn returns with nothing of its
// own left open (a close deferred past the send would run after the caller
// has gone on, and a caller counting its descriptors would see one more).
func onThreadIn(fd int, name string, fn func() error) error {
	if name != "" {
		name = " " + name
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			unix.Close(orig)
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter%s: %w", name, os.NewSyscallError("setns", err))
			return
		}
		ferr := fn()
		err = unix.Setns(orig, unix.CLONE_NEWNET)
		unix.Close(orig)
		if err != nil {
			errc <- ferr // the thread, locked, ends with this goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Start starts cmd inside the namespace: the child inherits the namespace
// of the thread that forks it.
func (ns *NS) Start(cmd *exec.Cmd) error {
	return ns.Do(cmd.Start)
}

// Run runs a command inside the namespace and returns its combined
// output; a failure's error includes the output.
func (ns *NS) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out []byte
	err := ns.Do(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return out, fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// IP runs the ip command of iproute2 inside the namespace.
func (ns *NS) IP(args ...string) error {
	_, err := ns.Run(context.Background(), "ip", args...)
	return err
}

// AddVeth creates a veth pair: name in ns and peerName in peer.
func (ns *NS) AddVeth(name string, peer *NS, peerName string) error {
	return ns.IP("link", "add", name, "type", "veth", "peer", "name", peerName, "netns", peer.Path())
}

// SetLink brings dev up, with the given MTU when mtu is not zero.
func (ns *NS) SetLink(dev string, mtu int) error {
	args := []string{"link", "set", "dev", dev, "up"}
	if mtu > 0 {
		args = append(args, "mtu", strconv.Itoa(mtu))
	}
	return ns.IP(args...)
}

// AddAddr assigns prefix (an address and its subnet length) to dev. IPv6
// addresses skip duplicate address detection, so they are usable at once.
func (ns *NS) AddAddr(dev string, prefix netip.Prefix) error {
	args := []string{"addr", "add", prefix.String(), "dev", dev}
	if prefix.Addr().Is6() {
		args = append(args, "nodad")
	}
	return ns.IP(args...)
}

// Listen is net.Listen inside the namespace.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket is net.ListenPacket inside the namespace.
func (ns *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial is net.Dialer.DialContext inside the namespace.
func (ns *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Close releases the namespace; it goes away once no process, device or
// socket holds it. Closing twice is harmless.
func (ns *NS) Close() error {
	var err error
	ns.once.Do(func() { err = unix.Close(ns.fd) })
	return err
}

// initNetIno is the inode number of the initial network namespace on
// kernels that give the initial namespaces fixed numbers
// (PROC_NET_INIT_INO).
const initNetIno = 0xeffffff9

// CheckPrivate returns an error unless this process runs in a private
// network namespace, such as `unshare --net` makes, rather than the
// machine's own. Tests that create devices or send packets call it first.
//
// The namespace counts as the machine's when it is PID 1's (where this
// process may look), when it has the initial namespace's fixed inode
// number, or when it has any interface besides loopback: a namespace with
// only loopback has nowhere to send a packet to.
func CheckPrivate() error {
	const hint = "; run under `unshare --net` (sh .ci/test does)"
	var self, init unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	if err := unix.Stat("/proc/1/ns/net", &init); err == nil && self.Ino == init.Ino && self.Dev == init.Dev {
		return errors.New("netns: running in PID 1's network namespace" + hint)
	}
	if self.Ino == initNetIno {
		return errors.New("netns: running in the initial network namespace" + hint)
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("netns: this network namespace has interface %s, so it is not a private one%s", ifc.Name, hint)
		}
	}
	return nil
}

// linkUp brings dev up in the calling thread's namespace.
func linkUp(dev string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(dev)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netns: %s flags: %w", dev, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netns: %s up: %w", dev, err)
	}
	return nil
}

// InPath runs fn on an OS thread that has entered the network namespace at
// path; an empty path runs fn where the caller is.
func InPath(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: open %s: %w", path, err)
	}
	defer unix.Close(target)
	return onThreadIn(target, path, fn)
}

// TB is the part of testing.TB RequirePrivileged uses; it keeps package
// testing out of the binaries that use this package (the usernat command,
// through rtnl).
type TB interface {
	Helper()
	Skip(args ...any)
	Fatal(args ...any)
}

// RequirePrivileged skips t when the process is not root, and fails it
// when the process runs in the machine's own network namespace: tests that
// create devices and send packets belong inside `unshare --net` (sh
// .ci/test), where CI runs them.
func RequirePrivileged(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and devices; run sh .ci/test as root")
	}
	if err := CheckPrivate(); err != nil {
		t.Fatal(err)
	}
}
