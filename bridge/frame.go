package bridge

import (
	"sync"
	"sync/atomic"
)

// smallFrame is the buffer size below which a received frame is copied
// into a buffer of its own before queueing, so the port keeps its large
// receive buffer; larger frames are handed to the egress queues as they
// are, without a copy, and the receive slot gets a fresh large buffer.
// 2048 holds a 1500-byte MTU frame with VLAN tags.
const smallFrame = 2048

// frame is a pooled buffer travelling from an ingress port to one or more
// transmit queues. refs counts the queues still holding it; the last one to
// let go returns it to its pool. Frames never leave the package.
type frame struct {
	buf  []byte // full capacity
	n    int    // length of the frame in buf
	meta Offload
	refs atomic.Int32
	pool *sync.Pool
}

func (f *frame) bytes() []byte { return f.buf[:f.n] }

func (f *frame) release() {
	if f.refs.Add(-1) == 0 {
		f.pool.Put(f)
	}
}

// framePools hands out frames of the three sizes a bridge uses: small
// ones, ones of the bridge's largest frame, and ones of the largest GSO
// frame, for the ports that pass segmentation along (OffloadPort).
type framePools struct {
	small, large, gso sync.Pool
}

func newFramePools(large int) *framePools {
	p := &framePools{}
	p.small.New = func() any { return &frame{buf: make([]byte, smallFrame), pool: &p.small} }
	p.large.New = func() any { return &frame{buf: make([]byte, large), pool: &p.large} }
	p.gso.New = func() any { return &frame{buf: make([]byte, max(large, MaxGSOFrame)), pool: &p.gso} }
	return p
}

func (p *framePools) getSmall() *frame { return p.small.Get().(*frame) }
func (p *framePools) getLarge() *frame { return p.large.Get().(*frame) }
func (p *framePools) getGSO() *frame   { return p.gso.Get().(*frame) }
