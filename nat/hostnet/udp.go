package hostnet

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// udpFlow is a UDP flow over a host socket: outbound, a socket connected
// to the destination; inbound, the published port's socket, answering the
// client it came from. Its datagrams from the host are built into packets
// from far to near: the tuple of the container's packets, reversed.
type udpFlow struct {
	u      *Uplink
	near   conntrack.Tuple // the container's packets: container to far
	conn   *net.UDPConn
	rc     syscall.RawConn     // conn's, taken once: each SyscallConn allocates
	client netip.AddrPort      // inbound: where answers go; outbound: invalid
	key    inKey               // inbound: what the host saw of the client (u.udpIn's key)
	dst    netip.AddrPort      // outbound: where the host socket is connected (hostDst)
	to     *unix.SockaddrInet4 // inbound: client, for sendmsg (made once, not per datagram)
	from   []byte              // inbound, through a socket bound to every address: IP_PKTINFO naming the one answers go from
	seen   conntrack.Tuple     // inbound: the expectation made for the gateway (near, reversed)
	hops   ttlSetting          // outbound: the socket's TTL
	pmtu   pmtuSetting         // outbound: the socket's path MTU discovery
	errs   errorSender         // outbound: what the network's errors are about
	r      *dgramReader        // outbound: the poller's reader of conn (a published port's reads every client's)
	out    sender              // writes the container's datagrams to conn (write)
	f      *flow

	// A flow to the DNS address, to the host's resolver (dns): since when
	// its queries go unanswered, and when the resolver's host said it
	// failed (an ICMP error); unix ns, 0 for none.
	dns        bool
	dnsPending atomic.Int64
	dnsFailed  atomic.Int64
}

// dnsTimeout is how long the resolver may leave a DNS flow's query
// unanswered, and every other flow's too, before the next query tries
// the next nameserver: glibc's timeout (RES_TIMEOUT), after which the
// host's own lookups try the next.
const dnsTimeout = 5 * time.Second

// resolverFailed reports whether the DNS flow fl's resolver failed: its
// host said so (an ICMP error), or it left fl's query unanswered for
// dnsTimeout and answered no other flow meanwhile; both since it became
// the resolver in use (a flow may outlive a failover and the fall-back).
func (fl *udpFlow) resolverFailed(now int64) bool {
	if f := fl.dnsFailed.Load(); f != 0 && f >= fl.u.resolv.since() {
		return true
	}
	p := fl.dnsPending.Load()
	return p != 0 && now-p >= int64(dnsTimeout) && fl.u.resolv.silentSince(fl.dst, p)
}

// dnsResolver returns the resolver the DNS flow fl's next query goes to:
// the one in use (once a failover's time is up, the first again; the
// file's first, once it changed), or the next when fl tells that it
// failed, as the host's own lookups try the next.
func (u *Uplink) dnsResolver(fl *udpFlow, now int64) netip.AddrPort {
	r := u.resolv.get()
	if r == fl.dst && fl.resolverFailed(now) {
		if r = u.resolv.fail(fl.dst); r != fl.dst {
			u.log.Info("hostnet: DNS: the resolver failed; trying the next", "resolver", fl.dst, "next", r)
		}
	}
	return r
}

// dnsQueried notes that the DNS flow fl sent a query at now: it waits for
// an answer from then, unless it waits already, since the resolver in use
// became so.
func (fl *udpFlow) dnsQueried(now int64) {
	if p := fl.dnsPending.Load(); p == 0 || p < fl.u.resolv.since() {
		fl.dnsPending.CompareAndSwap(p, now)
	}
}

// dnsQuery reports whether payload is a DNS query (a header, QR clear):
// only a query waits for an answer.
func dnsQuery(payload []byte) bool { return len(payload) >= 12 && payload[2]&0x80 == 0 }

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
	seen := fl != nil && fl.f.id != 0
	u.mu.Unlock()
	if fl != nil && u.lapsed(fl.f, seen, p.Tuple) {
		fl = nil
	}
	if fl != nil && fl.dns && u.dnsResolver(fl, time.Now().UnixNano()) != fl.dst {
		// The resolver moved: this query goes to the new one, as
		// libslirp's do (it translates the DNS address at each send).
		fl.f.drop()
		fl = nil
	}
	if fl == nil {
		if fl = u.openUDP(p, pkt); fl == nil {
			return
		}
	}
	if fl.dns && dnsQuery(payload) {
		fl.dnsQueried(time.Now().UnixNano())
	}
	fl.out.send(pkt, payload)
}

// write writes payload, of the container's datagram pkt, to the host
// socket fd without waiting (fl.out's writer): the gateway's goroutine
// calls it, and a socket whose buffer is full drops the datagram, as a
// full link would. An outbound flow's datagram leaves with pkt's TTL and
// DF (sendConnected).
func (fl *udpFlow) write(fd int, pkt, payload []byte) {
	var err error
	switch {
	case fl.from != nil:
		_, err = unix.SendmsgN(fd, payload, fl.from, fl.to, unix.MSG_DONTWAIT)
	case fl.client.IsValid():
		err = unix.Sendto(fd, payload, unix.MSG_DONTWAIT, fl.to)
	default:
		fl.u.sendConnected(fd, pkt, payload, &fl.hops, &fl.pmtu, &fl.errs)
		return
	}
	if err == unix.EAGAIN {
		fl.u.stats.DropHostFull.Add(1)
	}
}

// openUDP opens the host socket of a container's new UDP flow, enters its
// entry, and has the poller read it. An unreachable destination is answered
// with ICMP unreachable, a port of the DNS address other than 53 with
// port unreachable (as a host with nothing there), the host's loopback
// with nothing.
func (u *Uplink) openUDP(p *conntrack.Packet, pkt []byte) *udpFlow {
	t := p.Tuple
	far := netip.AddrPortFrom(t.Dst, t.DstPort)
	dst, v := u.hostDst(far)
	if v == dstNoService {
		u.sendUnreachableFrom(pkt, t.Dst, 3) // from the host nothing listens on
	}
	if v != dstOK {
		return nil
	}
	if !u.claimOpen(t) {
		return nil
	}
	defer u.doneOpen(t)
	if !u.reserve(t.Src) {
		return nil
	}
	var c *net.UDPConn
	err := u.cfg.Namespace(func() error {
		// Without SO_BROADCAST, which Go's net sets on every UDP
		// socket: a destination the host takes for a broadcast (its
		// subnet's) is refused (connect's EACCES), as Linux forwards no
		// directed broadcast, not broadcast on the host's network.
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var err error
			if cerr := rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 0) }); cerr != nil {
				return cerr
			}
			return err
		}}
		if a := u.udpLocalAddr(); a != nil && !dst.Addr().IsLoopback() {
			d.LocalAddr = a
		}
		nc, err := d.Dial("udp4", dst.String())
		if err != nil {
			return err
		}
		c = nc.(*net.UDPConn)
		// The network's errors about the flow's datagrams, whole, for
		// the container (forwardErrors); DF kept (pmtuSetting).
		rawConn(c).Control(func(fd uintptr) {
			if err = setRecvErr(int(fd)); err == nil {
				err = setProbe(int(fd))
			}
		})
		if err != nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		u.unreserve(t.Src)
		u.log.Debug("hostnet: UDP socket failed", "dst", dst, "err", err)
		if !u.socketFailed("UDP", err) {
			u.noRoute(pkt, err)
		}
		return nil
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	reply := conntrack.Tuple{Src: far.Addr(), Dst: local.Addr().Unmap(), SrcPort: far.Port(), DstPort: local.Port(), Proto: conntrack.ProtoUDP}
	res, ok := u.trackNew(p, reply)
	id := res.ID
	if !ok {
		u.unreserve(t.Src)
		c.Close()
		return nil
	}
	fl := &udpFlow{u: u, near: t, conn: c, rc: rawConn(c), dst: dst, errs: errorSender{near: t, far: dst.Addr(), inner: udpInner(t)}}
	if fl.dns = u.resolv != nil && t.Dst == u.cfg.DNS; fl.dns {
		fl.errs.failed = func() { fl.dnsFailed.Store(time.Now().UnixNano()) }
	}
	fl.out.init(fl.rc, fl.write)
	fl.r = u.newDgramReader(fl.rc, &fl.errs, fl.readOne, func(err error) { u.readFailed(fl.f, "UDP", far.Addr(), err) })
	if !u.startUDP(fl, t, t.Src, id) {
		u.untrack(t, id)
		return nil
	}
	u.stats.UDPOpened.Add(1)
	return fl
}

// startUDP registers fl under the entry orig (and id, when known), src's
// place reserved, and has the poller read an outbound flow's socket;
// false (with fl's socket closed) when the flow cannot be registered.
func (u *Uplink) startUDP(fl *udpFlow, orig conntrack.Tuple, src netip.Addr, id uint64) bool {
	inbound := fl.client.IsValid()
	stop := func() {
		u.mu.Lock()
		if u.udp[fl.near] == fl {
			delete(u.udp, fl.near)
		}
		if inbound {
			if u.udpIn[fl.key] == fl {
				delete(u.udpIn, fl.key)
			}
			delete(u.inbound, fl.seen)
		}
		u.mu.Unlock()
		if !inbound {
			fl.r.stop()
			fl.conn.Close()
		}
	}
	// A client's flow and the container's own flow to the address the
	// client is shown as may be opened at once (a hole punch): whichever
	// registers second finds the other's at near, which inboundNear and
	// the container's lookup could not see yet. The client's takes the
	// place, as inboundNear gives it: the container's own is refused,
	// or ended (displaced) when it came first. Another client's refuses
	// this one, whose next datagram finds another port.
	var displaced *udpFlow
	_, ok := u.addFlow(orig, src, id, stop, func(f *flow) bool {
		if old := u.udp[fl.near]; old != nil {
			if !inbound || old.client.IsValid() {
				return false
			}
			displaced = old
		}
		fl.f = f
		u.udp[fl.near] = fl
		if inbound {
			u.udpIn[fl.key] = fl
		}
		return true
	})
	if !ok {
		if !inbound {
			fl.conn.Close()
		}
		return false
	}
	if displaced != nil {
		displaced.f.drop() // its entry too, whose tuple the client's needs
	}
	if !inbound {
		if err := fl.r.watch(); err != nil {
			// Out of memory for the epoll set, or ended already.
			u.log.Debug("hostnet: UDP socket not watched", "dst", fl.dst, "err", err)
			fl.f.drop()
			return false
		}
	}
	return true
}

// readOne reads a datagram from an outbound flow's host socket fd into
// buf, behind room for the headers, and passes it to the container as a
// packet from the flow's destination.
func (fl *udpFlow) readOne(fd int, buf []byte) (int, error) {
	n, err := unix.Read(fd, buf[28:])
	if err == nil {
		if fl.dns { // the resolver answered
			fl.dnsPending.Store(0)
			fl.dnsFailed.Store(0)
			fl.u.resolv.answer(fl.dst, time.Now().UnixNano())
		}
		far := netip.AddrPortFrom(fl.near.Dst, fl.near.DstPort)
		ctr := netip.AddrPortFrom(fl.near.Src, fl.near.SrcPort)
		fl.u.ln.queue(udpPacket(buf, far, ctr, n), bridgeNone)
	}
	return n, err
}

// icmpReported says whether err is what a connected datagram socket
// reports of an ICMP error its destination, or a router on the way, sent
// (Linux's icmp_err_convert; an ICMP socket's redirect and source quench
// are EREMOTEIO): the news of one datagram, which the next read clears,
// not the socket's end.
func icmpReported(err error) bool {
	switch err {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENONET,
		unix.ENOPROTOOPT, unix.EMSGSIZE, unix.EOPNOTSUPP, unix.EPROTO, unix.EREMOTEIO:
		return true
	}
	return false
}

// readFailed ends the datagram flow f to dst, whose host socket failed
// with err: the flow ends with its entry, which names the socket.
func (u *Uplink) readFailed(f *flow, what string, dst netip.Addr, err error) {
	u.stats.HostSocketErrors.Add(1)
	u.warnOnce("read", "hostnet: a flow's host socket failed; the flow ends (logged once; counted in host_socket_errors)", "proto", what, "dst", dst, "err", os.NewSyscallError("read", err))
	f.drop()
}

// publishedUDP is a published UDP port's socket, which the poller reads:
// it carries each client's datagrams into the container at ctr from the
// client's address; the container's answers go back from the published
// port (sendUDP), and from the address the client sent to. An idle port
// (of a range of thousands, say) costs its socket alone.
type publishedUDP struct {
	u     *Uplink
	c     *net.UDPConn
	rc    syscall.RawConn // c's: every client's flow answers through it
	r     *dgramReader
	ctr   netip.AddrPort
	local netip.AddrPort
	oob   []byte // for IP_PKTINFO (pktinfo), bound to every address
}

// newPublishedUDP makes the published port of the socket c, bound to at,
// carried to ctr; start has the poller read it.
func (u *Uplink) newPublishedUDP(c *net.UDPConn, at, ctr netip.AddrPort) (*publishedUDP, error) {
	if err := pktinfo(c, at); err != nil {
		return nil, err
	}
	la := c.LocalAddr().(*net.UDPAddr).AddrPort()
	p := &publishedUDP{u: u, c: c, rc: rawConn(c), ctr: ctr, local: netip.AddrPortFrom(la.Addr().Unmap(), la.Port())}
	if p.local.Addr().IsUnspecified() {
		p.oob = make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	}
	// Not the socket's end: a failed read is one datagram's.
	p.r = u.newDgramReader(p.rc, nil, p.readOne, func(error) {})
	return p, nil
}

func (p *publishedUDP) start() error { return p.r.watch() }

// Close closes the socket; the flows that answer through it end
// (endInbound), with any a read opened meanwhile: a close waits for the
// reads.
func (p *publishedUDP) Close() error {
	p.r.stop()
	err := p.c.Close()
	p.u.endInbound(p.c)
	return err
}

// readOne reads a client's datagram from the socket fd into buf, behind
// room for the headers, and carries it into the container.
func (p *publishedUDP) readOne(fd int, buf []byte) (int, error) {
	n, oobn, client, err := recvFrom4(fd, buf[28:], p.oob)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return 0, err
	case err != nil:
		return 0, nil // not the socket's end: the next datagram
	}
	p.u.servedDatagram(p.c, p.rc, buf, n, client, p.ctr, p.local, pktinfoDst(p.oob[:oobn]))
	return n, nil
}

// servedDatagram carries the datagram buf[28:28+n] that client sent to a
// published port's socket c (bound to local; to, the address it came to,
// when the socket said) into the container at ctr, opening the client's
// flow for its first. The flow is found by what the host saw: the socket,
// the address the client sent to, and the client; not by the tuple of
// the container's packets, which a client sending from one port to two
// published ports of one container port, or to two of the host's
// addresses, would share between two flows.
func (u *Uplink) servedDatagram(c *net.UDPConn, rc syscall.RawConn, buf []byte, n int, client, ctr, local netip.AddrPort, to netip.Addr) {
	dst := local
	if to.IsValid() {
		dst = netip.AddrPortFrom(to, local.Port())
	} else if dst.Addr().IsUnspecified() {
		dst = netip.AddrPortFrom(u.cfg.Gateway, local.Port()) // bound to every address: name one
	}
	k := inKey{c: c, to: dst.Addr(), client: client}
	u.mu.Lock()
	fl := u.udpIn[k]
	seen := fl != nil && fl.f.id != 0
	u.mu.Unlock()
	if fl != nil && u.lapsed(fl.f, seen, fl.near) {
		fl = nil // its entry expired: the client's datagram is a new flow's
	}
	if fl == nil {
		if fl = u.openInboundUDP(c, rc, k, ctr, dst, to.IsValid()); fl == nil {
			return
		}
	}
	// From the client as the container sees it: its port may be another
	// (inboundNear).
	u.ln.queue(udpPacket(buf, netip.AddrPortFrom(fl.near.Dst, fl.near.DstPort), ctr, n), bridgeNone)
}

// inKey is what the host saw of a published UDP port's client: the
// socket the client's datagrams come through, the host's address they
// are sent to, and the client.
type inKey struct {
	c      *net.UDPConn
	to     netip.Addr
	client netip.AddrPort
}

// inboundNear returns the tuple of the container's packets to a published
// UDP port's new client, whose flow's entry is orig, and which is shown
// to the container as near.Dst, near.DstPort. That is near itself while
// it is free, or holds only the container's own flow to that address,
// which the client's flow replaces (its entry deleted), or an expired
// flow, or orig's own entry. When near is a live flow's of the same
// client (its port to another published port of the same container port,
// or to another of the host's addresses) or another entry's, the client
// is shown with another port, as the kernel's NAT gives a new connection
// whose reply tuple is taken another source port (nf_nat's unique tuple):
// each flow keeps its own, and the container's answers to each go back
// through it. It reports false, counted in DropCollision, for another
// client on the host's loopback with the same port, and when no port is
// free.
func (u *Uplink) inboundNear(client netip.AddrPort, orig, near conntrack.Tuple) (conntrack.Tuple, bool) {
	u.mu.Lock()
	fl := u.udp[near]
	seen := fl != nil && fl.f.id != 0
	u.mu.Unlock()
	switch {
	case fl == nil:
		if e, _, ok := u.tbl.Load().Get(0, near); !ok || e.Orig == orig {
			return near, true
		}
	case u.lapsed(fl.f, seen, near):
		return near, true
	case !fl.client.IsValid():
		// The container's own flow to the address the client is
		// shown as: the client's flow takes its place, with an entry
		// of its own.
		fl.f.drop()
		return near, true
	case fl.client != client:
		// Another client on the host's loopback with the same port:
		// shown as the gateway, both would be one flow to the
		// container. The live one stays, as for TCP.
		u.stats.DropCollision.Add(1)
		return conntrack.Tuple{}, false
	}
	if near, ok := u.freeNear(near); ok {
		return near, true
	}
	u.stats.DropCollision.Add(1)
	return conntrack.Tuple{}, false
}

// nearTries bounds the ports freeNear tests, as the kernel's NAT bounds
// its search (128 in its first round): a full search of a crowded range
// would cost a new client tens of thousands of lookups.
const nearTries = 128

// freeNear returns near, a UDP or TCP tuple, with another port for its
// destination (the client as the container sees it) that neither a flow
// of the uplink (a datagram flow, a splice, one being opened) nor an
// entry of the table uses, tested from a random place in the
// range Linux's NAT picks from for the client's port
// (nat.SourcePortRange), so a privileged port stays privileged.
func (u *Uplink) freeNear(near conntrack.Tuple) (conntrack.Tuple, bool) {
	first, size := nat.SourcePortRange(near.DstPort)
	tbl := u.tbl.Load()
	off := rand.IntN(size)
	for i := range min(size, nearTries) {
		near.DstPort = uint16(first + (off+i)%size)
		seen, _ := near.Reverse()
		u.mu.Lock()
		_, expected := u.inbound[seen]
		busy := expected || u.udp[near] != nil
		u.mu.Unlock()
		if !busy && !u.spliceAt(near) && !tbl.Taken(0, near) {
			return near, true
		}
	}
	return conntrack.Tuple{}, false
}

// recvFrom4 reads a datagram from the IPv4 socket fd into p, and its
// control messages into oob, without waiting and without allocating.
func recvFrom4(fd int, p, oob []byte) (n, oobn int, from netip.AddrPort, err error) {
	var sa unix.RawSockaddrInet4
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sa)), Namelen: uint32(unsafe.Sizeof(sa)), Iov: &iov, Iovlen: 1}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	if e != 0 {
		return 0, 0, netip.AddrPort{}, e
	}
	return int(r), int(msg.Controllen), inet4(&sa), nil
}

// endInbound ends the flows of a published UDP port's clients that
// answer through c, closed, with their entries, which name the socket.
func (u *Uplink) endInbound(c *net.UDPConn) {
	var ended []*udpFlow
	u.mu.Lock()
	for _, fl := range u.udp {
		if fl.client.IsValid() && fl.conn == c {
			ended = append(ended, fl)
		}
	}
	u.mu.Unlock()
	for _, fl := range ended {
		fl.f.drop()
	}
}

// openInboundUDP opens the flow of a published UDP port's new client,
// k.client, which sent to dst through k.c (told by IP_PKTINFO when
// pktinfo), into the container at ctr. It returns nil, having counted
// why, when the flow cannot be carried.
func (u *Uplink) openInboundUDP(c *net.UDPConn, rc syscall.RawConn, k inKey, ctr, dst netip.AddrPort, pktinfo bool) *udpFlow {
	src := u.presented(k.client)
	orig := conntrack.Tuple{Src: src.Addr(), Dst: dst.Addr(), SrcPort: src.Port(), DstPort: dst.Port(), Proto: conntrack.ProtoUDP}
	near, ok := u.inboundNear(k.client, orig, conntrack.Tuple{Src: ctr.Addr(), Dst: src.Addr(), SrcPort: ctr.Port(), DstPort: src.Port(), Proto: conntrack.ProtoUDP})
	if !ok {
		return nil
	}
	seen, _ := near.Reverse()
	if !u.inboundRoom(orig) || !u.reserve(ctr.Addr()) {
		return nil
	}
	if u.expect(seen, orig, near) != nil {
		u.unreserve(ctr.Addr())
		return nil
	}
	// The expectation stays while the flow lives: every packet until
	// the gateway has made the entry may need it.
	fl := u.inboundUDPFlow(c, rc, k, near, dst, pktinfo)
	if !u.startUDP(fl, orig, ctr.Addr(), 0) {
		u.unexpect(seen)
		return nil
	}
	u.stats.InboundOpened.Add(1)
	return fl
}

// inboundUDPFlow makes the flow of a published UDP port's client k, not
// started yet: shown to the container as near, answered from dst (told
// by IP_PKTINFO when pktinfo) through k.c.
func (u *Uplink) inboundUDPFlow(c *net.UDPConn, rc syscall.RawConn, k inKey, near conntrack.Tuple, dst netip.AddrPort, pktinfo bool) *udpFlow {
	seen, _ := near.Reverse()
	fl := &udpFlow{u: u, near: near, conn: c, rc: rc, client: k.client, key: k, seen: seen,
		to: &unix.SockaddrInet4{Addr: k.client.Addr().As4(), Port: int(k.client.Port())}}
	if pktinfo {
		fl.from = unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: dst.Addr().As4()})
	}
	fl.out.init(rc, fl.write)
	return fl
}

// pktinfoDst returns the address a datagram was sent to, from the control
// message IP_PKTINFO left in oob: the local address the packet came to
// (ipi_spec_dst, which for a broadcast is the address answers go from).
func pktinfoDst(oob []byte) netip.Addr {
	if d := cmsgData(oob, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo); d != nil {
		info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&d[0]))
		if a := netip.AddrFrom4(info.Spec_dst); !a.IsUnspecified() {
			return a
		}
	}
	return netip.Addr{}
}

// cmsgData returns the data of the first control message of level and
// typ in oob with at least size bytes, or nil; it allocates nothing (a
// published port's datagrams each carry one).
func cmsgData(oob []byte, level, typ int32, size int) []byte {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return nil
		}
		if h.Level == level && h.Type == typ && len(data) >= size {
			return data
		}
		oob = rest
	}
	return nil
}
