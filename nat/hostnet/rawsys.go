package hostnet

import (
	"encoding/binary"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls of the splices, their host sockets and the poller are
// made without telling Go's scheduler (RawSyscall): none of them waits
// (the sockets are non-blocking, and nothing lingers on close), and one
// the scheduler sees lets its monitor hand the thread's P to another
// thread when it takes more than 20 µs — which a write to a TAP device or
// a socket's shutdown does, doing the receiving side's work in the
// caller — at the cost of a thread wake-up and two context switches.
// gVisor's fdbased link writes the same way. Measured with bench/rootless
// (2026-11-27): CPU per connection and per round trip fell by a fifth.

func rawErr(e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func rawSetsockoptInt(fd, level, opt, v int) error {
	x := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&x)), 4, 0)
	return rawErr(e)
}

// setOn turns the option level, name of the socket fd on (sets it to 1).
func setOn(fd, level, name int) error {
	if err := rawSetsockoptInt(fd, level, name, 1); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// rawLinger0 makes closing fd reset the connection.
func rawLinger0(fd int) error {
	l := unix.Linger{Onoff: 1, Linger: 0}
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
	return rawErr(e)
}

func rawShutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	return rawErr(e)
}

func rawClose(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return rawErr(e)
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return rawErr(e)
}

// rawAccept4 accepts a connection on the IPv4 listening socket fd,
// non-blocking and close-on-exec, and returns it with its peer's address.
func rawAccept4(fd int) (int, netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	l := uint32(unsafe.Sizeof(sa))
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(r), inet4(&sa), nil
}

// rawGetsockname returns the local address of the IPv4 socket fd.
func rawGetsockname(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	l := uint32(unsafe.Sizeof(sa))
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return inet4(&sa), nil
}

func inet4(sa *unix.RawSockaddrInet4) netip.AddrPort {
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
}

// rawBind4 binds the IPv4 socket fd to a.
func rawBind4(fd int, a netip.AddrPort) error {
	sa := sockaddr4(a)
	_, _, e := unix.RawSyscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	return rawErr(e)
}

// rawConnect4 connects the IPv4 socket fd to a; a non-blocking one
// returns EINPROGRESS, and connects later. It is raw as a write is: a
// connection on the same machine does the listener's side of the
// handshake in the caller.
func rawConnect4(fd int, a netip.AddrPort) error {
	sa := sockaddr4(a)
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	return rawErr(e)
}

func sockaddr4(a netip.AddrPort) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().Unmap().As4()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], a.Port())
	return sa
}

// sockError takes the pending error of the socket fd (SO_ERROR).
func sockError(fd int) error {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	if v != 0 {
		return unix.Errno(v)
	}
	return nil
}

// rawConn is c's RawConn; a socket's SyscallConn never fails.
func rawConn(c syscall.Conn) syscall.RawConn {
	rc, _ := c.SyscallConn()
	return rc
}
