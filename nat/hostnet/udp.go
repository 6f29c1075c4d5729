package hostnet

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
)

// udpFlow is a UDP flow over a host socket: outbound, a socket connected
// to the destination; inbound, the published port's socket, answering the
// client it came from. Its datagrams from the host are built into packets
// from far to near: the tuple of the container's packets, reversed.
type udpFlow struct {
	u      *Uplink
	near   conntrack.Tuple // the container's packets: container to far
	conn   *net.UDPConn
	rc     syscall.RawConn // conn's, taken once: each SyscallConn allocates
	client netip.AddrPort  // inbound: where answers go; outbound: invalid
	seen   conntrack.Tuple // inbound: the expectation made for the gateway
	f      *flow
}

// udpRead is the room for one datagram read from a host socket, behind
// the IPv4 and UDP headers the packet for the container gets.
const udpRead = 65535 - 28

// sendUDP passes a container's datagram to its host socket, opening the
// flow for the first one.
func (u *Uplink) sendUDP(p *conntrack.Packet, pkt []byte) {
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 {
		u.stats.DropMalformed.Add(1)
		return
	}
	payload := pkt[ihl+8 : ihl+int(binary.BigEndian.Uint16(pkt[ihl+4:]))] // Decode checked the UDP length
	u.mu.Lock()
	fl := u.udp[p.Tuple]
	u.mu.Unlock()
	if fl == nil {
		if fl = u.openUDP(p, pkt); fl == nil {
			return
		}
	}
	fl.send(payload)
}

// send writes a datagram from the container to the host socket without
// waiting: the gateway's goroutine calls it, and a socket whose buffer is
// full drops the datagram, as a full link would.
func (fl *udpFlow) send(payload []byte) {
	fl.rc.Write(func(fd uintptr) bool {
		var err error
		if fl.client.IsValid() {
			err = unix.Sendto(int(fd), payload, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Addr: fl.client.Addr().As4(), Port: int(fl.client.Port())})
		} else {
			_, err = unix.SendmsgN(int(fd), payload, nil, nil, unix.MSG_DONTWAIT)
		}
		if err == unix.EAGAIN {
			fl.u.stats.DropHostFull.Add(1)
		}
		return true
	})
}

// openUDP opens the host socket of a container's new UDP flow, enters its
// entry, and starts its reader. An unreachable destination is answered
// with ICMP unreachable, the host's loopback with nothing.
func (u *Uplink) openUDP(p *conntrack.Packet, pkt []byte) *udpFlow {
	t := p.Tuple
	far := netip.AddrPortFrom(t.Dst, t.DstPort)
	dst, ok := u.hostDst(far)
	if !ok || !u.reserve(t.Src) {
		return nil
	}
	var c *net.UDPConn
	err := u.cfg.Namespace(func() error {
		var laddr *net.UDPAddr
		if a := u.udpLocalAddr(); a != nil && !dst.Addr().IsLoopback() {
			laddr = a
		}
		var err error
		c, err = net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		u.unreserve(t.Src)
		u.log.Debug("hostnet: UDP socket failed", "dst", dst, "err", err)
		if errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) {
			u.sendUnreachable(pkt, 1)
		}
		return nil
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	reply := conntrack.Tuple{Src: far.Addr(), Dst: local.Addr().Unmap(), SrcPort: far.Port(), DstPort: local.Port(), Proto: conntrack.ProtoUDP}
	res, ok := u.track(p, reply)
	id := res.ID
	if !ok {
		u.unreserve(t.Src)
		c.Close()
		return nil
	}
	fl := &udpFlow{u: u, near: t, conn: c, rc: rawConn(c)}
	if !u.startUDP(fl, t, t.Src, id) {
		return nil
	}
	u.stats.UDPOpened.Add(1)
	return fl
}

// startUDP registers fl under the entry orig (and id, when known), src's
// place reserved, and starts its reader; false (with fl's socket closed)
// when the flow cannot be registered.
func (u *Uplink) startUDP(fl *udpFlow, orig conntrack.Tuple, src netip.Addr, id uint64) bool {
	inbound := fl.client.IsValid()
	stop := func() {
		u.mu.Lock()
		if u.udp[fl.near] == fl {
			delete(u.udp, fl.near)
		}
		if inbound {
			delete(u.inbound, fl.seen)
		}
		u.mu.Unlock()
		if !inbound {
			fl.conn.Close()
		}
	}
	_, ok := u.addFlow(orig, src, id, stop, func(f *flow) {
		fl.f = f
		u.udp[fl.near] = fl
	})
	if !ok {
		if !inbound {
			fl.conn.Close()
		}
		return false
	}
	if !inbound {
		u.wg.Add(1)
		go fl.read()
	}
	return true
}

// read turns the datagrams of an outbound flow's host socket into packets
// for the container until the socket closes.
func (fl *udpFlow) read() {
	defer fl.u.wg.Done()
	defer fl.f.release()
	far := netip.AddrPortFrom(fl.near.Dst, fl.near.DstPort)
	ctr := netip.AddrPortFrom(fl.near.Src, fl.near.SrcPort)
	readLoop(fl.conn, func(fd int, buf []byte) (int, error) {
		n, err := unix.Read(fd, buf[28:])
		if err == nil {
			fl.u.ln.queue(udpPacket(buf, far, ctr, n), bridgeNone)
		}
		return n, err
	})
}

// readBuf is the buffer of one datagram read from a host socket, behind
// room for the headers of the packet it becomes.
var readBuf = sync.Pool{New: func() any { b := make([]byte, 28+udpRead); return &b }}

// readLoop reads a flow's socket with read until it fails for good (the
// socket closed), holding a buffer only while a datagram is there to read:
// an idle flow costs its goroutine and no 64 KiB. An ICMP error the
// socket reports (ECONNREFUSED) is no end: UDP carries on.
func readLoop(c syscall.Conn, read func(fd int, buf []byte) (int, error)) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	var fatal error
	for fatal == nil {
		err := rc.Read(func(fd uintptr) bool {
			bp := readBuf.Get().(*[]byte)
			defer readBuf.Put(bp)
			for {
				_, err := read(int(fd), *bp)
				switch err {
				case nil, unix.ECONNREFUSED, unix.EINTR:
					continue
				case unix.EAGAIN:
					return false // wait for the next datagram
				default:
					fatal = err
					return true
				}
			}
		})
		if err != nil {
			return
		}
	}
}

// serveUDP reads the datagrams of a published UDP port and carries each
// client's into the container at ctr from the client's address; the
// container's answers go back from the published port (sendUDP).
func (u *Uplink) serveUDP(c *net.UDPConn, ctr netip.AddrPort) {
	defer u.wg.Done()
	buf := make([]byte, 28+udpRead)
	rc := rawConn(c) // every client's flow answers through this socket
	la := c.LocalAddr().(*net.UDPAddr).AddrPort()
	local := netip.AddrPortFrom(la.Addr().Unmap(), la.Port())
	for {
		n, client, err := c.ReadFromUDPAddrPort(buf[28:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		src := u.presented(client)
		near := conntrack.Tuple{Src: ctr.Addr(), Dst: src.Addr(), SrcPort: ctr.Port(), DstPort: src.Port(), Proto: conntrack.ProtoUDP}
		u.mu.Lock()
		fl := u.udp[near]
		u.mu.Unlock()
		if fl != nil && fl.conn != c {
			// A flow of another socket's, unpublished or outbound:
			// this client's flow is this socket's now.
			fl.f.release()
			fl = nil
		}
		if fl == nil {
			dst := local
			if dst.Addr().IsUnspecified() {
				dst = netip.AddrPortFrom(u.cfg.Gateway, local.Port()) // bound to every address: name one
			}
			orig := conntrack.Tuple{Src: src.Addr(), Dst: dst.Addr().Unmap(), SrcPort: src.Port(), DstPort: dst.Port(), Proto: conntrack.ProtoUDP}
			seen, _ := near.Reverse()
			if !u.reserve(ctr.Addr()) {
				continue
			}
			if !u.expect(seen, orig, near) {
				u.unreserve(ctr.Addr())
				continue
			}
			// The expectation stays while the flow lives: every packet
			// until the gateway has made the entry may need it.
			fl = &udpFlow{u: u, near: near, conn: c, rc: rc, client: client, seen: seen}
			if !u.startUDP(fl, orig, ctr.Addr(), 0) {
				u.unexpect(seen)
				continue
			}
			u.stats.InboundOpened.Add(1)
		}
		u.ln.queue(udpPacket(buf, src, ctr, n), bridgeNone)
	}
}
