package hostnet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/nat"
)

const nicID tcpip.NICID = 1

// newStack makes the gateway's stack: IPv4 and TCP (UDP and ICMP go to
// host sockets without it) on one NIC over ln that is promiscuous (it
// takes packets to any address) and spoofing (it sends from any address),
// with no address of its own and a default route. TCP options were
// chosen by measurement (bench/rootless): CUBIC, SACK, receive buffer
// moderation, buffers up to 8 MiB. Its endpoints keep no TIME_WAIT: a
// container reuses a port at once when the remote end closed first (its
// side then ends last, without TIME_WAIT of its own), and the stack's
// endpoint in TIME_WAIT dropped the new SYN (it hands such a SYN only to a
// listening endpoint, and the uplink takes SYNs with a forwarder), so the
// connection waited for the container's retries. The flow's conntrack
// entry keeps the TIME_WAIT, as the kernel's does.
func newStack(ln *link) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	fail := func(what string, err tcpip.Error) (*stack.Stack, error) {
		s.Close()
		s.Wait()
		return nil, fmt.Errorf("hostnet: %s: %s", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	cc := tcpip.CongestionControlOption("cubic")
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20}
	tw := tcpip.TCPTimeWaitTimeoutOption(0)
	for _, o := range []tcpip.SettableTransportProtocolOption{&sack, &mod, &cc, &snd, &rcv, &tw} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fail("TCP option", err)
		}
	}
	if err := s.CreateNICWithOptions(nicID, ln, stack.NICOptions{Name: "hostnet0"}); err != nil {
		return fail("NIC", err)
	}
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fail("promiscuous mode", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fail("spoofing", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	return s, nil
}

// link is the stack's NIC: raw IPv4 packets, no link header. The gateway
// injects packets on its own goroutine (the stack handles them there,
// queueing TCP segments to its processors). Packets the stack sends, and
// those the uplink builds, go to the gateway one at a time: by the
// goroutine that made them when nothing is waiting and nobody else is
// delivering (a hand-off to another goroutine less per packet), else
// through a bounded queue that one goroutine drains, in order. The
// gateway never enters the stack from a packet of the uplink's, so a
// packet the stack sends while it holds its locks can go at once. It asks
// the stack for GSO packets (HostGSOSupported) and passes them on as GSO
// frames.
type link struct {
	mtu   uint32
	q     chan outFrame
	pool  sync.Pool // *[]byte of Headroom + maxPacket
	small sync.Pool // *[]byte of Headroom + smallPacket
	drops atomic.Uint64

	deliver atomic.Pointer[func([]byte, bridge.Offload)] // set by run
	dmu     sync.Mutex                                   // held while a packet is delivered
	pending atomic.Int64                                 // packets queued or being delivered by run

	mu      sync.RWMutex
	d       stack.NetworkDispatcher
	onClose func()

	wmu     sync.Mutex
	waiters []func()    // told once when the queue next has room (onRoom)
	waiting atomic.Bool // len(waiters) > 0
}

// outFrame is a packet for the gateway, at buf[Headroom:n].
type outFrame struct {
	buf *[]byte
	n   int
	off bridge.Offload
}

// maxPacket is the largest packet through the link: a GSO packet.
const maxPacket = 65536

// smallPacket is the largest packet that takes a small buffer: an ACK, a
// DNS answer, a full Ethernet-sized segment. A queued frame holds its
// buffer, so a queue of QueueLen ACKs takes QueueLen small buffers, not
// QueueLen times 64 KiB (270 MB at the default).
const smallPacket = 2048

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
)

func newLink(mtu uint32, queue int) *link {
	l := &link{mtu: mtu, q: make(chan outFrame, queue)}
	l.pool.New = func() any { b := make([]byte, nat.Headroom+maxPacket); return &b }
	l.small.New = func() any { b := make([]byte, nat.Headroom+smallPacket); return &b }
	return l
}

// getBuf takes a buffer for a packet of size bytes (at most maxPacket)
// behind nat.Headroom: a small one when it fits.
func (l *link) getBuf(size int) *[]byte {
	if size <= smallPacket {
		return l.small.Get().(*[]byte)
	}
	return l.pool.Get().(*[]byte)
}

// putBuf gives back a buffer of getBuf's.
func (l *link) putBuf(bp *[]byte) {
	if len(*bp) == nat.Headroom+smallPacket {
		l.small.Put(bp)
		return
	}
	l.pool.Put(bp)
}

func (l *link) MTU() uint32                    { return l.mtu }
func (l *link) SetMTU(uint32)                  {}
func (*link) MaxHeaderLength() uint16          { return 0 }
func (*link) LinkAddress() tcpip.LinkAddress   { return "" }
func (*link) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities says the link checks receive checksums, which the stack
// then skips: packets come from containers' kernels through TAP devices,
// with checksums right or left to compute (offload). A container that
// sends a wrong one corrupts only its own flow.
func (*link) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}
func (l *link) Attach(d stack.NetworkDispatcher)      { l.mu.Lock(); l.d = d; l.mu.Unlock() }
func (l *link) IsAttached() bool                      { l.mu.RLock(); defer l.mu.RUnlock(); return l.d != nil }
func (*link) Wait()                                   {}
func (*link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (*link) AddHeader(*stack.PacketBuffer)           {}
func (*link) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *link) SetOnCloseAction(f func())             { l.mu.Lock(); l.onClose = f; l.mu.Unlock() }
func (*link) GSOMaxSize() uint32                      { return maxPacket - 1 }
func (*link) SupportedGSO() stack.SupportedGSO        { return stack.HostGSOSupported }

func (l *link) Close() {
	l.mu.Lock()
	f := l.onClose
	l.d = nil
	l.mu.Unlock()
	if f != nil {
		f()
	}
}

// WritePackets queues the stack's packets for the gateway; the stack
// keeps them, so each is copied. A full queue drops (TCP sends again).
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		var off bridge.Offload
		if g := pkt.GSOOptions; g.Type == stack.GSOTCPv4 && g.NeedsCsum {
			l4 := nat.Headroom + int(g.L3HdrLen)
			off = bridge.Offload{
				Flags: bridge.OffloadNeedsCsum, CsumStart: uint16(l4), CsumOffset: g.CsumOffset,
			}
			// Only more than one segment's worth is a GSO packet.
			hdr := l4 + int(header.TCP(pkt.TransportHeader().Slice()).DataOffset())
			if nat.Headroom+pkt.Size()-hdr > int(g.MSS) {
				off.GSO, off.GSOSize, off.HdrLen = bridge.GSOTCPv4, g.MSS, uint16(hdr)
			}
		}
		if !l.queue(pkt.AsSlices(), off) {
			if n == 0 {
				return 0, &tcpip.ErrNoBufferSpace{}
			}
			break
		}
		n++
	}
	return n, nil
}

// queue copies the packet made of parts into a frame for the gateway and
// delivers it, at once or through the queue; it reports false when the
// queue is full.
func (l *link) queue(parts [][]byte, off bridge.Offload) bool {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	if size > maxPacket {
		l.drops.Add(1)
		return true // cannot be: the stack sends at most maxPacket
	}
	bp := l.getBuf(size)
	n := nat.Headroom
	for _, p := range parts {
		n += copy((*bp)[n:], p)
	}
	return l.push(bp, n, off)
}

// push delivers the frame (*bp)[:n], a buffer of getBuf's, which it
// takes, at once or through the queue; it reports false when the queue is
// full.
func (l *link) push(bp *[]byte, n int, off bridge.Offload) bool {
	// Order holds: a packet goes at once only when none is queued or
	// being delivered from the queue, and with dmu held.
	if d := l.deliver.Load(); d != nil && l.pending.Load() == 0 && l.dmu.TryLock() {
		if l.pending.Load() == 0 {
			(*d)((*bp)[:n], off)
			l.dmu.Unlock()
			l.putBuf(bp)
			return true
		}
		l.dmu.Unlock()
	}
	l.pending.Add(1)
	select {
	case l.q <- outFrame{bp, n, off}:
		return true
	default:
		l.pending.Add(-1)
		l.putBuf(bp)
		l.drops.Add(1)
		return false
	}
}

// onRoom has f called once, soon after the queue next has room: a frame
// of it was delivered. f runs on the goroutine that drains the queue and
// must not block. A splice whose frame the full queue refused waits for
// this, as Linux's TCP waits for its device queue to drain (TSQ), rather
// than on a timer alone: a retry at a fixed pace lands when the queue has
// room only by chance, and under stalls most did not. It reports false,
// and lists nothing, when the queue has room already (it drained since
// the refusal): the caller goes again now. A listed f is told by the next
// delivery from the queue, so none waits past it.
func (l *link) onRoom(f func()) bool {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if len(l.q) < cap(l.q) {
		return false
	}
	l.waiters = append(l.waiters, f)
	l.waiting.Store(true)
	return true
}

// roomMade tells the waiters that the queue has room.
func (l *link) roomMade() {
	if !l.waiting.Load() {
		return
	}
	l.wmu.Lock()
	ws := l.waiters
	l.waiters = nil
	l.waiting.Store(false)
	l.wmu.Unlock()
	for _, f := range ws {
		f()
	}
}

// run hands queued frames to deliver until ctx ends, and lets queue
// deliver in the meantime.
func (l *link) run(ctx context.Context, deliver func([]byte, bridge.Offload)) {
	l.deliver.Store(&deliver)
	defer l.deliver.Store(nil)
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case f := <-l.q:
					l.putBuf(f.buf)
				default:
					return
				}
			}
		case f := <-l.q:
			l.dmu.Lock()
			deliver((*f.buf)[:f.n], f.off)
			l.pending.Add(-1)
			l.dmu.Unlock()
			l.putBuf(f.buf)
			l.roomMade()
		}
	}
}

// inject gives the stack the IPv4 packet pkt, copied.
func (l *link) inject(pkt []byte) {
	l.mu.RLock()
	d := l.d
	l.mu.RUnlock()
	if d == nil || len(pkt) == 0 {
		return
	}
	p := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
	d.DeliverNetworkPacket(header.IPv4ProtocolNumber, p)
	p.DecRef()
}
