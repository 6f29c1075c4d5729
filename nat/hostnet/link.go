package hostnet

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/nat"
)

// link is the uplink's way to the gateway: the packets the uplink builds
// (a splice's segments, datagrams from host sockets, ICMP) go to the
// gateway one at a time, by the goroutine that made them when nothing is
// waiting and nobody else is delivering (a hand-off to another goroutine
// less per packet), else through a bounded queue that one goroutine
// drains, in order. The gateway never calls the uplink back from a packet
// of the uplink's, so a packet can go at once from wherever it was made.
type link struct {
	q     chan outFrame
	pool  sync.Pool // *[]byte of Headroom + maxPacket
	small sync.Pool // *[]byte of Headroom + smallPacket
	drops atomic.Uint64

	deliver atomic.Pointer[func([]byte, bridge.Offload)] // set by run
	dmu     sync.Mutex                                   // held while a packet is delivered
	pending atomic.Int64                                 // packets queued or being delivered by run

	// large counts the queued frames in buffers of maxPacket, at most
	// maxLarge: QueueLen alone let the queue hold QueueLen of them (a
	// host socket's 64 KiB datagrams, read faster than the gateway cuts
	// them into fragments: 270 MB at the default).
	large    atomic.Int32
	maxLarge int32

	wmu     sync.Mutex
	waiters []func()    // told once when the queue next has room (onRoom)
	waiting atomic.Bool // len(waiters) > 0
	told    []func()    // roomMade's, reused: only the goroutine that delivers calls it
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

func newLink(queue int) *link {
	l := &link{q: make(chan outFrame, queue), maxLarge: largeFrames(DefaultQueueBytes)}
	l.pool.New = func() any { b := make([]byte, nat.Headroom+maxPacket); return &b }
	l.small.New = func() any { b := make([]byte, nat.Headroom+smallPacket); return &b }
	return l
}

// largeFrames is how many frames in buffers of maxPacket a queue bounded
// to bytes (Config.QueueBytes) holds: one at least.
func largeFrames(bytes int) int32 { return int32(max(1, min(bytes/maxPacket, 1<<30))) }

// isLarge says whether bp, a buffer of getBuf's, is one of maxPacket.
func isLarge(bp *[]byte) bool { return len(*bp) != nat.Headroom+smallPacket }

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

// queue copies the packet pkt into a frame for the gateway and delivers
// it, at once or through the queue; it reports false when the queue is
// full.
func (l *link) queue(pkt []byte, off bridge.Offload) bool {
	if len(pkt) > maxPacket {
		l.drops.Add(1)
		return true // cannot be: nothing the uplink sends is larger
	}
	bp := l.getBuf(len(pkt))
	n := nat.Headroom + copy((*bp)[nat.Headroom:], pkt)
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
	large := isLarge(bp)
	if large && l.large.Add(1) > l.maxLarge {
		l.large.Add(-1)
		l.putBuf(bp)
		l.drops.Add(1)
		return false
	}
	l.pending.Add(1)
	select {
	case l.q <- outFrame{bp, n, off}:
		return true
	default:
		l.pending.Add(-1)
		if large {
			l.large.Add(-1)
		}
		l.putBuf(bp)
		l.drops.Add(1)
		return false
	}
}

// room says whether the queue has room for a frame, of any size.
func (l *link) room() bool { return len(l.q) < cap(l.q) && l.large.Load() < l.maxLarge }

// onRoom has f called once, soon after the queue next has room: a frame
// of it was delivered. f runs on the goroutine that drains the queue and
// must not block. A splice whose frame the full queue refused waits for
// this, as Linux's TCP waits for its device queue to drain (TSQ), rather
// than on a timer alone: a retry at a fixed pace lands when the queue has
// room only by chance, and under stalls most did not. It reports false,
// and lists nothing, when the queue has room already (it drained since
// the refusal): the caller goes again now. A listed f is told by a
// delivery from the queue that leaves room for it (roomMade), the last at
// the latest.
func (l *link) onRoom(f func()) bool {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.room() {
		return false
	}
	l.waiters = append(l.waiters, f)
	l.waiting.Store(true)
	return true
}

// roomMade tells waiters that the queue has room: as many as it has
// room for, first listed first, and the others at the next delivery,
// which finds more room if those told did not take it (the last, with the
// queue empty, tells all). Told all at once, every waiter but the first
// to send found the queue full again: each frame delivered cost a retry
// (a timer's goroutine, a peek of up to 64 KiB) for every flow waiting.
func (l *link) roomMade() {
	if !l.waiting.Load() {
		return
	}
	l.wmu.Lock()
	n := len(l.waiters)
	if len(l.q) > 0 { // a delivery to come, to tell the others
		n = min(cap(l.q)-len(l.q), int(l.maxLarge-l.large.Load()), n)
		n = max(n, 0)
	}
	ws := append(l.told[:0], l.waiters[:n]...)
	m := copy(l.waiters, l.waiters[n:])
	clear(l.waiters[m:]) // holds no splice told
	l.waiters = l.waiters[:m]
	l.waiting.Store(len(l.waiters) > 0)
	l.wmu.Unlock()
	for _, f := range ws {
		f()
	}
	clear(ws) // holds no splice told
	l.told = ws[:0]
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
					l.done(f.buf)
				default:
					return
				}
			}
		case f := <-l.q:
			l.dmu.Lock()
			deliver((*f.buf)[:f.n], f.off)
			l.pending.Add(-1)
			l.dmu.Unlock()
			l.done(f.buf)
			l.roomMade()
		}
	}
}

// done gives back the buffer of a frame that left the queue, and its
// place among the large ones.
func (l *link) done(bp *[]byte) {
	if isLarge(bp) {
		l.large.Add(-1)
	}
	l.putBuf(bp)
}
