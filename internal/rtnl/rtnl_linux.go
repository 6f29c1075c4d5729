package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/usernat/usernat/internal/netns"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by requests on a closed Conn.
var ErrClosed = errors.New("rtnl: connection closed")

// OpError is a failed request: Op names it ("add address 172.17.0.4/16 to
// eth0") and Err is the cause, usually a unix.Errno from the kernel.
type OpError struct {
	Op  string
	Err error
}

func (e *OpError) Error() string { return "rtnl: " + e.Op + ": " + e.Err.Error() }

func (e *OpError) Unwrap() error { return e.Err }

// Timeout bounds how long a request waits for the kernel's answer.
const Timeout = 5 * time.Second

// Conn is a route netlink socket in one network namespace. Its methods are
// safe for concurrent use; requests are serialized.
type Conn struct {
	mu   sync.Mutex
	fd   int
	seq  uint32
	buf  []byte
	once sync.Once
}

// Open returns a Conn in the network namespace at path (/proc/PID/ns/net,
// /run/netns/NAME, /proc/PID/fd/N); an empty path means the caller's.
func Open(path string) (*Conn, error) {
	var fd int
	err := netns.InPath(path, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		return nil
	})
	if err != nil {
		return nil, &OpError{Op: "open", Err: err}
	}
	tv := unix.NsecToTimeval(Timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, &OpError{Op: "open", Err: os.NewSyscallError("setsockopt", err)}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, &OpError{Op: "open", Err: os.NewSyscallError("bind", err)}
	}
	return &Conn{fd: fd, buf: make([]byte, 1<<16)}, nil
}

// Close closes the socket. Closing twice is harmless.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		err = unix.Close(c.fd)
		c.fd = -1
	})
	return err
}

// LinkIndex returns the index of the link called name.
func (c *Conn) LinkIndex(name string) (int, error) {
	index, _, _, err := c.link(name)
	return index, err
}

// link asks for the link named name: its index, and its counters (ok
// when the answer has them).
func (c *Conn) link(name string) (index int, st LinkStats, ok bool, err error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return 0, LinkStats{}, false, &OpError{Op: "find link " + name, Err: unix.EINVAL}
	}
	m := newMessage(unix.RTM_GETLINK, 0)
	m.ifInfo(unix.AF_UNSPEC, 0, 0, 0)
	m.attr(unix.IFLA_IFNAME, append([]byte(name), 0))
	err = c.request(m, func(typ uint16, data []byte) {
		if typ == unix.RTM_NEWLINK && len(data) >= unix.SizeofIfInfomsg && index == 0 {
			index = int(int32(binary.NativeEndian.Uint32(data[4:8])))
			st, ok = parseLinkStats(data)
		}
	})
	if err == nil && index == 0 {
		err = errors.New("no link in the answer")
	}
	if err != nil {
		return 0, LinkStats{}, false, &OpError{Op: "find link " + name, Err: err}
	}
	return index, st, ok, nil
}

// LinkStats are a link's counters as `ip -s link` shows them: the first
// eight of the kernel's rtnl_link_stats64.
type LinkStats struct {
	RxPackets, TxPackets, RxBytes, TxBytes uint64
	RxErrors, TxErrors                     uint64
	// RxDropped counts packets the link received that the stack dropped
	// (a full backlog, a device with no room); TxDropped packets the
	// stack sent that the device could not take (for a TAP, a reader too
	// slow to drain its queue).
	RxDropped, TxDropped uint64
}

// LinkStats returns the counters of the link named name, in one round
// trip.
func (c *Conn) LinkStats(name string) (LinkStats, error) {
	_, st, ok, err := c.link(name)
	if err == nil && !ok {
		err = &OpError{Op: "read counters of link " + name, Err: errors.New("no IFLA_STATS64 in the answer")}
	}
	return st, err
}

// parseLinkStats finds IFLA_STATS64 among the attributes of an
// RTM_NEWLINK message's data.
func parseLinkStats(data []byte) (LinkStats, bool) {
	if len(data) < unix.SizeofIfInfomsg {
		return LinkStats{}, false
	}
	ne := binary.NativeEndian
	for b := data[unix.SizeofIfInfomsg:]; len(b) >= unix.SizeofRtAttr; {
		n, typ := int(ne.Uint16(b[0:])), ne.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)
		if n < unix.SizeofRtAttr || n > len(b) {
			return LinkStats{}, false
		}
		if v := b[unix.SizeofRtAttr:n]; typ == unix.IFLA_STATS64 && len(v) >= 8*8 {
			u := func(i int) uint64 { return ne.Uint64(v[8*i:]) }
			return LinkStats{
				RxPackets: u(0), TxPackets: u(1), RxBytes: u(2), TxBytes: u(3),
				RxErrors: u(4), TxErrors: u(5), RxDropped: u(6), TxDropped: u(7),
			}, true
		}
		b = b[min(len(b), (n+3)&^3):]
	}
	return LinkStats{}, false
}

// SetLinkUp brings the link up, as `ip link set dev DEV up`.
func (c *Conn) SetLinkUp(index int) error {
	m := newMessage(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	m.ifInfo(unix.AF_UNSPEC, int32(index), unix.IFF_UP, unix.IFF_UP)
	if err := c.request(m, nil); err != nil {
		return &OpError{Op: fmt.Sprintf("set link %d up", index), Err: err}
	}
	return nil
}

// AddAddr assigns p (an address with the prefix of its subnet) to the link,
// as `ip addr add P dev DEV` does, with the subnet's broadcast address for
// IPv4. It fails with EEXIST when the address is there already.
func (c *Conn) AddAddr(index int, p netip.Prefix) error {
	op := fmt.Sprintf("add address %v to link %d", p, index)
	if !p.IsValid() {
		return &OpError{Op: op, Err: unix.EINVAL}
	}
	a := p.Addr().Unmap()
	family, bits := byte(unix.AF_INET6), 128
	if a.Is4() {
		family, bits = unix.AF_INET, 32
	}
	if p.Bits() > bits {
		return &OpError{Op: op, Err: unix.EINVAL}
	}
	m := newMessage(unix.RTM_NEWADDR, unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	m.ifAddr(family, byte(p.Bits()), uint32(index))
	m.attr(unix.IFA_LOCAL, a.AsSlice())
	m.attr(unix.IFA_ADDRESS, a.AsSlice())
	if a.Is4() && p.Bits() < 31 {
		m.attr(unix.IFA_BROADCAST, Broadcast(netip.PrefixFrom(a, p.Bits())).AsSlice())
	}
	if err := c.request(m, nil); err != nil {
		return &OpError{Op: op, Err: err}
	}
	return nil
}

// AddRoute adds a route to dst in the main table through gateway gw on the
// link, as `ip route add DST via GW dev DEV`; an invalid gw makes the route
// direct (scope link). dst 0.0.0.0/0 is the default route. It fails with
// EEXIST when a route to dst is there already.
func (c *Conn) AddRoute(dst netip.Prefix, gw netip.Addr, index int) error {
	op := fmt.Sprintf("add route %v via %v dev %d", dst, gw, index)
	if !dst.IsValid() || (gw.IsValid() && gw.Unmap().Is4() != dst.Addr().Unmap().Is4()) {
		return &OpError{Op: op, Err: unix.EINVAL}
	}
	dst = netip.PrefixFrom(dst.Addr().Unmap(), dst.Bits()).Masked()
	family := byte(unix.AF_INET6)
	if dst.Addr().Is4() {
		family = unix.AF_INET
	}
	scope := byte(unix.RT_SCOPE_UNIVERSE)
	if !gw.IsValid() {
		scope = unix.RT_SCOPE_LINK
	}
	m := newMessage(unix.RTM_NEWROUTE, unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	m.rtMsg(family, byte(dst.Bits()), unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, scope, unix.RTN_UNICAST)
	if dst.Bits() > 0 {
		m.attr(unix.RTA_DST, dst.Addr().AsSlice())
	}
	if gw.IsValid() {
		m.attr(unix.RTA_GATEWAY, gw.Unmap().AsSlice())
	}
	var oif [4]byte
	binary.NativeEndian.PutUint32(oif[:], uint32(index))
	m.attr(unix.RTA_OIF, oif[:])
	if err := c.request(m, nil); err != nil {
		return &OpError{Op: op, Err: err}
	}
	return nil
}

// request sends m and reads answers until the kernel's acknowledgement or
// error for it, handing other messages of the same sequence to fn.
func (c *Conn) request(m *message, fn func(typ uint16, data []byte)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return ErrClosed
	}
	c.seq++
	seq := c.seq
	b := m.finish(seq)
	if err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	for {
		n, from, err := unix.Recvfrom(c.fd, c.buf, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return fmt.Errorf("no answer from the kernel within %v", Timeout)
		case err != nil:
			return os.NewSyscallError("recvfrom", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not from the kernel
		}
		done, err := parseAnswer(c.buf[:n], seq, m.flags&unix.NLM_F_ACK != 0, fn)
		if done {
			return err
		}
	}
}

// parseAnswer reads one datagram of answers to request seq. It reports
// done with the request's outcome when the datagram holds its
// acknowledgement or error, or, for a request without NLM_F_ACK, its
// answer.
func parseAnswer(b []byte, seq uint32, ack bool, fn func(typ uint16, data []byte)) (done bool, err error) {
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return true, errors.New("bad answer: truncated header")
		}
		ne := binary.NativeEndian
		n := int(ne.Uint32(b[0:]))
		typ, flags, mseq := ne.Uint16(b[4:]), ne.Uint16(b[6:]), ne.Uint32(b[8:])
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return true, fmt.Errorf("bad answer: message length %d of %d bytes", n, len(b))
		}
		data := b[unix.SizeofNlMsghdr:n]
		b = b[min(len(b), (n+3)&^3):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return true, errors.New("truncated netlink error")
			}
			if errno := -int32(ne.Uint32(data)); errno != 0 {
				return true, unix.Errno(errno)
			}
			return true, nil
		case unix.NLMSG_DONE:
			return true, nil
		default:
			if fn != nil {
				fn(typ, data)
			}
			if !ack && flags&unix.NLM_F_MULTI == 0 {
				return true, nil
			}
		}
	}
	return false, nil
}

// Broadcast returns the last address of the IPv4 prefix p's subnet, its
// broadcast address.
func Broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// ConfigureLink sets up the link called name in the network namespace at
// path the way a container expects its eth0: addr on it, the link up, and,
// when gw is valid, a default route through gw. The namespace's loopback
// device is brought up too, as runc and slirp4netns -c do (Podman makes
// the namespace itself and leaves lo down).
func ConfigureLink(path, name string, addr netip.Prefix, gw netip.Addr) error {
	c, err := Open(path)
	if err != nil {
		return err
	}
	defer c.Close()
	if lo, err := c.LinkIndex("lo"); err == nil {
		if err := c.SetLinkUp(lo); err != nil {
			return err
		}
	}
	index, err := c.LinkIndex(name)
	if err != nil {
		return err
	}
	if err := c.AddAddr(index, addr); err != nil {
		return err
	}
	if err := c.SetLinkUp(index); err != nil {
		return err
	}
	if !gw.IsValid() {
		return nil
	}
	def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if gw.Unmap().Is6() {
		def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return c.AddRoute(def, gw, index)
}
