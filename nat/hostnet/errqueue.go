package hostnet

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// The ICMP errors of datagram flows.
//
// A flow's host socket asks for IP_RECVERR, so the host's kernel queues
// every ICMP error about the socket's datagrams whole: its type and code,
// the next hop's MTU, the address of the router (or host) that sent it,
// and the part of the datagram it quotes. The uplink hands each to the
// container as that sender's error about the container's own datagram,
// which is what the container would get through the kernel's NAT: ping's
// "Destination Host Unreachable" from the router that said so, a UDP
// socket's ECONNREFUSED or EHOSTUNREACH (only for the codes Linux takes
// for hard errors, as there), fragmentation needed with the MTU.

// hostTTL is the TTL a container's datagram pkt leaves the host with:
// its own, less the gateway's hop, as the kernel's NAT forwards it. The
// gateway answers one that arrives with 1 or less (time exceeded), so a
// container's traceroute finds the gateway, then the routers beyond the
// host, whose time exceeded errors forwardErrors hands on.
func hostTTL(pkt []byte) uint8 { return max(pkt[8], 2) - 1 }

// ttlSetting is the IP_TTL a flow's socket was last given (0: none yet).
// The datagrams of a flow come with one TTL, but for a traceroute's, so
// the socket is told at its first and at a change.
type ttlSetting struct{ v atomic.Uint32 }

// set gives fd, the flow's socket, ttl as its IP_TTL, unless it has it.
func (s *ttlSetting) set(fd int, ttl uint8) {
	if uint8(s.v.Load()) == ttl {
		return
	}
	if rawSetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, int(ttl)) == nil {
		s.v.Store(uint32(ttl))
	}
}

// hostDF says whether a container's datagram pkt has DF set: whether
// its copy through the flow's socket may be fragmented on the way.
func hostDF(pkt []byte) bool { return pkt[6]&0x40 != 0 }

// pmtuSetting is whether a flow's socket was last given
// IP_PMTUDISC_DONT (false: IP_PMTUDISC_PROBE, which the socket is given
// when made, setProbe). A datagram without DF leaves without DF (DONT),
// so a router on the way fragments it, as it would the container's own
// through the kernel's NAT; on a socket that discovers the path's MTU it
// would leave with DF, and a narrower link on the way would drop it. One
// with DF leaves with DF and is never fragmented (PROBE), as a router
// forwards it: one larger than the host's link is refused (EMSGSIZE),
// and the container is told "fragmentation needed" (sendConnected); by
// default (IP_PMTUDISC_WANT) the host fragmented it, and the container
// never learned the MTU of a link narrower than its own (a VPN's, a
// PPPoE line's). PROBE, not DO: as a router forwards, by its link's MTU,
// not by the path MTU it learnt for its own traffic, whose router then
// answers the container itself.
type pmtuSetting struct{ dont atomic.Bool }

// setProbe gives fd, a new flow's socket, IP_PMTUDISC_PROBE (pmtuSetting).
func setProbe(fd int) error {
	if err := rawSetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// set gives fd, the flow's socket, the path MTU discovery of a datagram
// with DF (df) or without, unless it has it.
func (s *pmtuSetting) set(fd int, df bool) {
	if s.dont.Load() != df {
		return // DONT for a datagram without DF, PROBE for one with, already
	}
	mode := unix.IP_PMTUDISC_DONT
	if df {
		mode = unix.IP_PMTUDISC_PROBE
	}
	if rawSetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, mode) == nil {
		s.dont.Store(!df)
	}
}

// maxQuoted bounds the part of a datagram an error the uplink sends
// quotes: with its IPv4 and ICMP headers, and the container's IPv4
// header, the error stays within the 576 bytes every IPv4 host takes.
const maxQuoted = 576 - 20 - 8 - 20

// errorSender is where the ICMP errors a flow's socket hears come from,
// and what they are about.
type errorSender struct {
	near conntrack.Tuple // the flow as the container sent it
	// far is where the flow's socket sends: the container's destination,
	// or the host's address for it (hostDst: the DNS address's
	// resolver, the host-loopback address's 127.0.0.1).
	far netip.Addr
	// inner writes into b[20:] the transport header and data of the
	// container's datagram that quoted, the part of the host's datagram
	// after the transport header (UDP) or from the echo header on (ICMP),
	// stands for, and returns their length (0 for none).
	inner func(b, quoted []byte) int
	// failed, when set, is told of each ICMP error the socket reports
	// (a DNS flow's resolver failing).
	failed func()
}

// sizeofExtendedErr is the size of struct sock_extended_err.
const sizeofExtendedErr = int(unsafe.Sizeof(unix.SockExtendedErr{}))

// sendRetries bounds how often a send that took the socket's pending
// error (an earlier datagram's) is made again: errors may keep coming in
// between, each again (a burst of probes, each answered at once).
const sendRetries = 4

// sendConnected sends msg, what the host sends of the container's
// datagram pkt, on fd, a flow's connected datagram socket, with pkt's
// TTL less the gateway's hop (hostTTL; hops keeps what the socket has),
// and DF when pkt has it (hostDF; pmtu keeps what the socket has),
// without waiting: a full socket drops it, as a full link would. A send
// that takes the socket's pending error, about an earlier datagram, in
// its place hands on the queued errors (the reader will not hear of them
// now, es says what they are about) and sends again, as long as errors
// keep coming in between. A datagram with DF larger than the host's link
// does not leave (the host says so: EMSGSIZE, and an error of its own on
// the queue with the link's MTU), and pkt is answered "fragmentation
// needed".
func (u *Uplink) sendConnected(fd int, pkt, msg []byte, hops *ttlSetting, pmtu *pmtuSetting, es *errorSender) {
	hops.set(fd, hostTTL(pkt))
	pmtu.set(fd, hostDF(pkt))
	_, err := unix.SendmsgN(fd, msg, nil, nil, unix.MSG_DONTWAIT)
	for try := 0; try < sendRetries && icmpReported(err); try++ {
		if mtu := u.forwardErrors(fd, es); mtu != 0 && err == unix.EMSGSIZE {
			u.fragNeeded(pkt, mtu) // sent again, it would be refused again
			return
		}
		_, err = unix.SendmsgN(fd, msg, nil, nil, unix.MSG_DONTWAIT)
	}
	if err == unix.EAGAIN {
		u.stats.DropHostFull.Add(1)
	}
}

// fragNeeded answers the container's datagram pkt, which has DF and is
// larger than the host's link of MTU mtu, with
// "fragmentation needed" from the gateway, as a router answers a packet
// it cannot forward whole (never rate-limited: path MTU discovery).
func (u *Uplink) fragNeeded(pkt []byte, mtu int) {
	var buf [576]byte
	if msg, err := nat.FragNeeded(buf[:0], pkt, u.cfg.Gateway, mtu); err == nil {
		u.ln.queue(msg, bridgeNone)
	}
}

// setRecvErr asks the kernel to queue the ICMP errors about fd's
// datagrams (IP_RECVERR).
func setRecvErr(fd int) error { return setOn(fd, unix.IPPROTO_IP, unix.IP_RECVERR) }

// forwardErrors takes the errors queued on fd, the socket of the flow es
// describes, and sends the container each the network sent (origin
// ICMP). It reads until the queue is empty, which also clears the
// socket's pending error. It returns the MTU the host's own error about
// a datagram too large for its link (origin local, EMSGSIZE) gave, when
// it read one, else 0.
func (u *Uplink) forwardErrors(fd int, es *errorSender) (tooBig int) {
	var data [maxQuoted]byte
	var oob [128]byte
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, data[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return tooBig
		}
		// A quote cut short (MSG_TRUNC) is still the datagram's start.
		ee, from, ok := extendedErr(oob[:oobn])
		if ok && ee.Origin == unix.SO_EE_ORIGIN_LOCAL && ee.Errno == uint32(unix.EMSGSIZE) && ee.Info != 0 {
			tooBig = int(ee.Info)
		}
		if !ok || ee.Origin != unix.SO_EE_ORIGIN_ICMP {
			continue
		}
		if es.failed != nil && ee.Type == icmpUnreachable && ee.Code != icmpFragNeeded {
			es.failed()
		}
		u.sendHostError(es, ee, from, data[:n])
	}
}

// extendedErr finds the IP_RECVERR message among the control messages
// of an error queue's read: the error, and the address of its sender
// (invalid when the kernel gave none).
func extendedErr(oob []byte) (unix.SockExtendedErr, netip.Addr, bool) {
	d := cmsgData(oob, unix.IPPROTO_IP, unix.IP_RECVERR, sizeofExtendedErr)
	if d == nil {
		return unix.SockExtendedErr{}, netip.Addr{}, false
	}
	ee := *(*unix.SockExtendedErr)(unsafe.Pointer(&d[0]))
	var from netip.Addr
	// SO_EE_OFFENDER: a sockaddr_in right after the error.
	if off := d[sizeofExtendedErr:]; len(off) >= unix.SizeofSockaddrInet4 &&
		binary.NativeEndian.Uint16(off) == unix.AF_INET {
		from = netip.AddrFrom4([4]byte(off[4:8]))
	}
	return ee, from, true
}

// sendHostError sends the container the error ee about its datagram of
// the flow es, which the host's quoted: hostError's packet.
func (u *Uplink) sendHostError(es *errorSender, ee unix.SockExtendedErr, from netip.Addr, quoted []byte) {
	var buf [576]byte
	if msg := hostError(buf[:0], es, ee, from, quoted); msg != nil {
		u.stats.HostErrors.Add(1)
		u.ln.queue(msg, bridgeNone)
	}
}

// hostError builds in buf the error ee (destination unreachable, time
// exceeded or parameter problem; nil for others) about the container's
// datagram of the flow es, quoting what the error quoted of the host's,
// from the address that sent it: a router on the way, or the
// destination. An error from the flow's far end comes from the address
// the container used for it, as the kernel's NAT shows the far end of a
// flow whose destination it translated (nat.RewriteICMPError): the DNS
// address's resolver, the host's loopback (a flow to an address mapped
// there).
func hostError(buf []byte, es *errorSender, ee unix.SockExtendedErr, from netip.Addr, quoted []byte) []byte {
	var info uint32
	switch ee.Type {
	case icmpUnreachable:
		if ee.Code == icmpFragNeeded { // the next hop's MTU
			info = ee.Info & 0xffff
		}
	case 11: // time exceeded
	case 12: // parameter problem: the pointer, in the first byte
		info = ee.Info << 24
	default:
		return nil
	}
	if !from.IsValid() || !from.Is4() || from.IsLoopback() || from.IsUnspecified() || from.IsMulticast() || from == es.far {
		from = es.near.Dst
	}
	var pkt [20 + 8 + maxQuoted]byte
	n := es.inner(pkt[:], quoted[:min(len(quoted), maxQuoted)])
	if n == 0 {
		return nil
	}
	ipv4Header(pkt[:], 20+n, es.near.Proto, defaultTTL, es.near.Src, es.near.Dst)
	msg, err := nat.ICMPError(buf, pkt[:20+n], from, ee.Type, ee.Code, info)
	if err != nil {
		return nil
	}
	return msg
}

// udpInner is the container's UDP datagram of the flow near that a
// host error quotes: its header, and what the error quotes of the data.
func udpInner(near conntrack.Tuple) func(b, quoted []byte) int {
	return func(b, quoted []byte) int {
		u := b[20:]
		binary.BigEndian.PutUint16(u[0:], near.SrcPort)
		binary.BigEndian.PutUint16(u[2:], near.DstPort)
		n := 8 + copy(u[8:], quoted)
		binary.BigEndian.PutUint16(u[4:], uint16(n))
		u[6], u[7] = 0, 0 // no checksum: the quote may be cut short
		return n
	}
}

// echoInner is the container's echo request of the flow near that a
// host error quotes: the host's echo, with the container's identifier.
func echoInner(near conntrack.Tuple) func(b, quoted []byte) int {
	return func(b, quoted []byte) int {
		if len(quoted) < 8 || quoted[0] != icmpEchoRequest {
			return 0
		}
		m := b[20:]
		n := copy(m, quoted)
		old, id := binary.BigEndian.Uint16(m[4:]), near.ICMPID()
		binary.BigEndian.PutUint16(m[4:], id)
		binary.BigEndian.PutUint16(m[2:], nat.UpdateChecksum16(binary.BigEndian.Uint16(m[2:]), old, id))
		return n
	}
}
