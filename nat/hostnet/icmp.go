package hostnet

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// ICMP types and codes the uplink carries.
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	icmpUnreachable = 3 // destination unreachable
	icmpFragNeeded  = 4 // its code: fragmentation needed
)

// pingFlow is an ICMP echo flow over an unprivileged ICMP socket of the
// host's ("ping socket"), connected to the destination: the host picks
// the identifier of the echoes it sends, and the replies get the
// container's back.
type pingFlow struct {
	u    *Uplink
	near conntrack.Tuple // the container's echo requests
	file *os.File
	rc   syscall.RawConn // file's, taken once
	hops ttlSetting      // the socket's TTL
	pmtu pmtuSetting     // the socket's path MTU discovery
	errs errorSender     // what the network's errors are about
	r    *dgramReader    // the poller's reader of file
	out  sender          // writes the container's echo requests to file (write)
	f    *flow
	host bool // to the host itself (HostLoopback): its answer crosses no hop
}

// sendICMP sends a container's echo request through its flow's socket,
// opening the flow for the first one. Other ICMP from containers (errors
// about flows the uplink carries, replies) has nowhere to go.
func (u *Uplink) sendICMP(p *conntrack.Packet, pkt []byte) {
	if p.Kind != conntrack.KindFlow || p.Tuple.ICMPType() != icmpEchoRequest {
		u.stats.DropProto.Add(1)
		return
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 {
		u.stats.DropMalformed.Add(1)
		return
	}
	if pkt[ihl+1] != 0 {
		// An ICMP socket sends echo requests of code 0 only (EINVAL):
		// another code's would open a flow that sends nothing.
		u.stats.DropProto.Add(1)
		return
	}
	u.mu.Lock()
	pf := u.pings[p.Tuple]
	seen := pf != nil && pf.f.id != 0
	u.mu.Unlock()
	if pf != nil && u.lapsed(pf.f, seen, p.Tuple) {
		pf = nil
	}
	if pf == nil {
		if pf = u.openPing(p, pkt); pf == nil {
			return
		}
	}
	pf.out.send(pkt, pkt[ihl:])
}

// write sends the echo request msg, of the container's packet pkt,
// through the socket fd without waiting, as a UDP flow's (pf.out's
// writer).
func (pf *pingFlow) write(fd int, pkt, msg []byte) {
	pf.u.sendConnected(fd, pkt, msg, &pf.hops, &pf.pmtu, &pf.errs)
}

// openPing opens the ICMP socket of a new echo flow. Where the host does
// not let this process make one (net.ipv4.ping_group_range), echo to the
// outside is refused, and said so once in the log: an answer the network
// did not give would be a lie.
func (u *Uplink) openPing(p *conntrack.Packet, pkt []byte) *pingFlow {
	t := p.Tuple
	dst := t.Dst
	if dst == u.cfg.HostLoopback && dst.IsValid() {
		dst = netip.AddrFrom4([4]byte{127, 0, 0, 1}) // as TCP's and UDP's (hostDst)
	} else if dst.IsLoopback() || dst.IsUnspecified() || u.Claims(dst) {
		u.stats.DropLoopback.Add(1)
		return nil
	}
	if !u.claimOpen(t) {
		return nil
	}
	defer u.doneOpen(t)
	if !u.reserve(t.Src) {
		return nil
	}
	ok := false
	defer func() {
		if !ok {
			u.unreserve(t.Src)
		}
	}()
	var fd int
	var local netip.Addr
	var id uint16
	err := u.cfg.Namespace(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		if err := setRecvErr(fd); err != nil { // forwardErrors
			unix.Close(fd)
			return err
		}
		if err := setProbe(fd); err != nil { // DF kept (pmtuSetting)
			unix.Close(fd)
			return err
		}
		if err := setOn(fd, unix.IPPROTO_IP, unix.IP_RECVTTL); err != nil { // the replies' TTL
			unix.Close(fd)
			return err
		}
		if u.cfg.OutboundAddr.IsValid() && !dst.IsLoopback() {
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: u.cfg.OutboundAddr.As4()}); err != nil {
				unix.Close(fd)
				return os.NewSyscallError("bind", err)
			}
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
			unix.Close(fd)
			return os.NewSyscallError("connect", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			unix.Close(fd)
			return os.NewSyscallError("getsockname", err)
		}
		in := sa.(*unix.SockaddrInet4)
		local, id = netip.AddrFrom4(in.Addr), uint16(in.Port)
		return nil
	})
	if err != nil {
		// Only the socket itself is the host's refusal: connect says
		// EACCES too, of a broadcast address, which has no answer.
		if se := (*os.SyscallError)(nil); errors.As(err, &se) && se.Syscall == "socket" && (se.Err == unix.EACCES || se.Err == unix.EPERM) {
			u.stats.DropPingRefused.Add(1)
			u.warnOnce("ping", "hostnet: ICMP echo to the outside refused: this process may not open ICMP sockets (see sysctl net.ipv4.ping_group_range)", "err", err)
			return nil
		}
		u.log.Debug("hostnet: ICMP socket failed", "dst", t.Dst, "err", err)
		if !u.socketFailed("ICMP", err) {
			u.noRoute(pkt, err) // as UDP's and TCP's are
		}
		return nil
	}
	reply := conntrack.ICMPTuple(t.Dst, local, icmpEchoReply, 0, id)
	res, tracked := u.trackNew(p, reply)
	eid := res.ID
	if !tracked {
		unix.Close(fd)
		return nil
	}
	pf := &pingFlow{u: u, near: t, file: os.NewFile(uintptr(fd), "ping"), errs: errorSender{near: t, far: dst, inner: echoInner(t)}, host: dst.IsLoopback()}
	pf.rc = rawConn(pf.file)
	pf.out.init(pf.rc, pf.write)
	pf.r = u.newDgramReader(pf.rc, &pf.errs, pf.readOne, func(err error) { u.readFailed(pf.f, "ICMP", pf.near.Dst, err) })
	_, added := u.addFlow(t, t.Src, eid, func() {
		u.mu.Lock()
		if u.pings[pf.near] == pf {
			delete(u.pings, pf.near)
		}
		u.mu.Unlock()
		pf.r.stop()
		pf.file.Close()
	}, func(f *flow) bool {
		pf.f = f
		u.pings[t] = pf
		return true
	})
	ok = true // addFlow has the place now, or gave it back
	if !added {
		pf.file.Close()
		u.untrack(t, eid)
		return nil
	}
	if err := pf.r.watch(); err != nil {
		// Out of memory for the epoll set, or ended already.
		u.log.Debug("hostnet: ICMP socket not watched", "dst", t.Dst, "err", err)
		pf.f.drop()
		u.untrack(t, eid)
		return nil
	}
	u.stats.PingOpened.Add(1)
	return pf
}

// readOne reads an echo reply from the socket fd into buf, behind room
// for an IPv4 header, and passes it to the container with its identifier.
func (pf *pingFlow) readOne(fd int, buf []byte) (int, error) {
	var oob [32]byte
	n, oobn, _, err := recvFrom4(fd, buf[20:], oob[:]) // unix.Recvmsg allocates the sender's address
	if err != nil {
		return n, err
	}
	ttl := defaultTTL
	if d := cmsgData(oob[:oobn], unix.IPPROTO_IP, unix.IP_TTL, 4); d != nil {
		ttl = int(binary.NativeEndian.Uint32(d))
	}
	if !pf.host {
		// The gateway's hop, as the kernel's NAT forwards it; the
		// host's own answer (to HostLoopback) crosses none.
		if ttl--; ttl < 1 {
			return n, nil // died at the gateway's hop
		}
	}
	m := buf[20 : 20+n]
	if n < 8 || m[0] != icmpEchoReply {
		return n, nil
	}
	binary.BigEndian.PutUint16(m[4:], pf.near.ICMPID())
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], nat.Checksum(m))
	pkt := buf[:20+n]
	ipv4Header(pkt, len(pkt), conntrack.ProtoICMP, uint8(ttl), pf.near.Dst, pf.near.Src)
	pf.u.ln.queue(pkt, bridgeNone)
	return n, nil
}
