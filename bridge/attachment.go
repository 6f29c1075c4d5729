package bridge

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// PortConfig configures a port as AddPort attaches it. The zero value is a
// port with the bridge's queue length, hairpin off and no port security.
type PortConfig struct {
	// Name names the port in FDB listings and logs. Empty means the Port's
	// own name when it implements Namer (a TAP device's interface name),
	// else "portN" with N counting from 0.
	Name string

	// Hairpin lets frames go back out of the port they came in on, as
	// Linux's hairpin_mode: needed when several stations sit behind one
	// port and reach each other through the bridge (a reflective relay).
	// Off by default.
	Hairpin bool

	// QueueLen is the length of the port's transmit queue in frames; zero
	// means the bridge's Config.QueueLen.
	QueueLen int

	// Security restricts the source addresses the port may use; nil means
	// no restriction. See PortSecurity.
	Security *PortSecurity
}

// Attachment is a port attached to a bridge: the handle AddPort returns,
// through which the port is configured, read, captured and detached.
type Attachment struct {
	b     *Bridge
	port  Port
	off   OffloadPort // port, when it passes checksum and segmentation work along; else nil
	name  string
	batch int

	hairpin  atomic.Bool
	security atomic.Pointer[portSecurity]
	capture  atomic.Pointer[[]*Capture]
	closing  atomic.Bool

	txq chan *frame

	// Direct transmit (see DirectWriter): with nothing pending for the
	// port, the forwarding goroutine writes the frame itself. pending
	// counts frames queued or being written by txLoop, on direct ports
	// only (others need not pay for it); txMu serialises the port's
	// writers, and guards the direct path's scratch.
	direct  bool
	pending atomic.Int64
	txMu    sync.Mutex
	dbatch  [1]*frame
	dbufs   [1][]byte
	dmeta   [1]Offload

	// Segmentation of GSO frames for a port that takes none, by the
	// goroutine holding txMu: segments are built in sarea, listed in sbufs.
	sarea []byte
	sbufs [][]byte
	seg   segmenter

	once     sync.Once
	done     chan struct{}
	gone     chan struct{} // a direct write found the port gone: txLoop detaches it
	wg       sync.WaitGroup
	closeErr error

	ctr counters

	// ender is port, when it is told where batches end (BatchEnder);
	// unended says it was written to since it was last told.
	ender   BatchEnder
	unended atomic.Bool
}

// Name returns the port's name.
func (a *Attachment) Name() string { return a.name }

// Port returns the Port the attachment forwards to and from.
func (a *Attachment) Port() Port { return a.port }

// SetHairpin turns hairpin mode on or off; see PortConfig.Hairpin.
func (a *Attachment) SetHairpin(on bool) { a.hairpin.Store(on) }

// SetSecurity replaces the port's security policy; nil turns it off. The
// gateway calls it once it knows the address it leased to the port.
func (a *Attachment) SetSecurity(s *PortSecurity) error {
	if s == nil {
		a.security.Store(nil)
		return nil
	}
	sec, err := s.compile()
	if err != nil {
		return err
	}
	a.security.Store(sec)
	return nil
}

// Counters returns a snapshot of the port's counters.
func (a *Attachment) Counters() Counters { return a.ctr.snapshot() }

// Close detaches the port from the bridge, forgets the MACs behind it,
// stops its captures, closes the Port and waits for the port's goroutines
// to end, and for a write to the port that another port's goroutine made
// directly (DirectWriter): once it returns, nothing of the bridge's is in
// the Port or will be. It returns the Port's Close error. Closing twice
// is harmless.
func (a *Attachment) Close() error {
	a.shutdown()
	a.wg.Wait()
	// The direct writes begun before closing, which check it under txMu:
	// a barrier, with nothing to do inside.
	a.txMu.Lock()
	//lint:ignore SA2001 waiting for the holder is the point
	a.txMu.Unlock()
	return a.closeErr
}

// shutdown does the part of Close that the port's own goroutines may do
// when the Port fails: everything but waiting for themselves.
func (a *Attachment) shutdown() {
	a.once.Do(func() {
		a.closing.Store(true)
		a.b.detach(a)
		close(a.done)
		a.closeErr = a.port.Close()
		a.b.capMu.Lock()
		caps := a.capture.Swap(nil)
		a.b.capMu.Unlock()
		if caps != nil {
			for _, c := range *caps {
				c.Close()
			}
		}
		a.b.log.Info("port removed", "port", a.name)
	})
}

func (a *Attachment) rxLoop() {
	defer a.b.wg.Done()
	defer a.wg.Done()
	b := a.b
	frames := make([]*frame, a.batch)
	bufs := make([][]byte, a.batch)
	sizes := make([]int, a.batch)
	var meta []Offload
	get := b.pools.getLarge
	if a.off != nil {
		meta = make([]Offload, a.batch)
		get = b.pools.getGSO
	}
	for i := range frames {
		frames[i] = get()
		bufs[i] = frames[i].buf
	}
	defer func() {
		for _, f := range frames {
			f.pool.Put(f)
		}
	}()
	take := func(n int) bool {
		now := b.now()
		ports := *b.ports.Load()
		for i := range min(n, len(frames)) {
			frames[i].meta = Offload{}
			if meta != nil {
				frames[i].meta = meta[i]
			}
			if a.input(frames[i], sizes[i], now, ports) {
				frames[i] = get()
				bufs[i] = frames[i].buf
			}
		}
		b.endBatches(nil)
		return true
	}
	err := ServeFrames(a.port, a.off, bufs, sizes, meta, take)
	if !a.closing.Load() {
		b.log.Warn("port read failed; detaching", "port", a.name, "err", err)
	}
	a.shutdown()
}

// endBatch tells a's port that a batch ended (BatchEnder), if frames
// were written to it since it was last told.
func (a *Attachment) endBatch() {
	if a.ender != nil && a.unended.Load() && a.unended.CompareAndSwap(true, false) {
		a.ender.EndBatch()
	}
}

// endBatches ends the batch of every port written to but except (nil
// for none): after a read's frames, or an injection's, were forwarded,
// which may have written to any port directly (DirectWriter). The ports
// are those attached now, not the forwarding's snapshot: a port attached
// meanwhile may have been written to too. Only BatchEnders are looked at,
// so the cost does not grow with the ports (a gateway's bridge has one,
// its router port).
//
// An injection passes its own port as except: it writes to it only
// hairpinned (whose batch then ends with the next one's), and a port may
// inject from inside a write to it, its locks held: the gateway answers
// an ARP request there, maybe the second frame of a read whose first the
// uplink holds for the batch's end. That end, run inside the injection,
// would have the uplink send to the gateway, which would wait for its own
// lock. The goroutine that wrote the frames ends their batch after them.
func (b *Bridge) endBatches(except *Attachment) {
	for _, p := range *b.enders.Load() {
		if p != except {
			p.endBatch()
		}
	}
}

// Inject forwards frames as if the attachment's port had read them —
// learning, counters, capture, forwarding — in the caller's goroutine. The
// frames are copied; the caller keeps its buffers. A router that produces
// frames in its own goroutine (the gateway) injects them rather than
// handing them to a port's reader, which saves a goroutine switch per
// frame. Injection is safe concurrently with the port's own reads; after
// Close it returns net.ErrClosed.
func (a *Attachment) Inject(bufs [][]byte) error {
	return a.InjectOffload(bufs, nil)
}

// InjectOffload is Inject for frames that may carry pending checksums or
// be GSO frames, each described by the Offload at the same index of meta;
// a nil meta means complete frames.
func (a *Attachment) InjectOffload(bufs [][]byte, meta []Offload) error {
	if a.closing.Load() {
		return net.ErrClosed
	}
	b := a.b
	now := b.now()
	ports := *b.ports.Load()
	for i, buf := range bufs {
		var f *frame
		switch {
		case len(buf) <= smallFrame:
			f = b.pools.getSmall()
		case len(buf) < b.maxFrame+1:
			f = b.pools.getLarge()
		default:
			f = b.pools.getGSO()
		}
		if len(buf) > len(f.buf) {
			// Received, and dropped: counted as input counts frames.
			a.ctr.rxFrames.Add(1)
			a.ctr.rxBytes.Add(uint64(len(buf)))
			a.ctr.dropOversize.Add(1)
			f.pool.Put(f)
			continue
		}
		n := copy(f.buf, buf)
		f.meta = Offload{}
		if meta != nil {
			f.meta = meta[i]
		}
		if !a.input(f, n, now, ports) {
			f.pool.Put(f)
		}
	}
	b.endBatches(a)
	return nil
}

// input forwards one received frame and reports whether rx itself went to
// the transmit queues (so the caller needs a new receive buffer). This is
// the hot path: it takes no write lock for a known MAC and allocates
// nothing.
func (a *Attachment) input(rx *frame, size int, now int64, ports []*Attachment) bool {
	b := a.b
	size = max(0, min(size, len(rx.buf)))
	buf := rx.buf[:size]
	a.ctr.rxFrames.Add(1)
	a.ctr.rxBytes.Add(uint64(size))
	if c := a.capture.Load(); c != nil {
		recordAll(*c, b.clock, buf)
	}
	if c := b.capture.Load(); c != nil {
		recordAll(*c, b.clock, buf)
	}

	switch {
	case size < etherHeader:
		a.ctr.dropRunt.Add(1)
		return false
	case size > b.maxFrame && rx.meta.GSO == GSONone:
		a.ctr.dropOversize.Add(1)
		return false
	}
	dst, src := MAC(buf[0:6]), MAC(buf[6:12])
	if !src.isStation() || !rx.meta.Valid(size) {
		a.ctr.dropInvalid.Add(1)
		return false
	}
	if rx.meta.GSO != GSONone {
		// Headers a plain port's transmit could not cut into segments
		// are refused here, on the port that sent them, as an invalid
		// Offload is.
		var s segmenter
		if s.init(buf, l3Offset(buf), rx.meta) != nil {
			a.ctr.dropInvalid.Add(1)
			return false
		}
		if s.hdr+min(s.mss, len(buf)-s.hdr) > b.maxFrame { // SegmentLen, from what init found
			// Its segments would be larger than the bridge's frames,
			// as such a frame without GSO is.
			a.ctr.dropOversize.Add(1)
			return false
		}
	}
	if dst.linkLocal() {
		// As Linux's bridge (group_fwd_mask 0): 802.1D's reserved
		// groups are the link's own, not forwarded. STP's
		// (01:80:C2:00:00:00) is, the bridge running no STP.
		a.ctr.dropLinkLocal.Add(1)
		return false
	}
	if s := a.security.Load(); s != nil && !s.allows(buf) {
		a.ctr.dropFiltered.Add(1)
		return false
	}
	if a.closing.Load() {
		// Being detached: what it reads now neither learns (its
		// entries are flushed, or about to be) nor goes anywhere, as
		// Linux's bridge disables a port before it flushes it.
		a.ctr.dropDetached.Add(1)
		return false
	}
	if b.fdb.learn(src, a, now) {
		b.log.Debug("MAC moved", "mac", src, "port", a.name)
	}

	hairpin := a.hairpin.Load()
	if !dst.IsMulticast() {
		// A port detached while this frame was on its way may still be
		// in the table: flood rather than drop into its dead queue.
		if out := b.fdb.lookup(dst, now); out != nil && !out.closing.Load() {
			if out == a && !hairpin {
				a.ctr.dropSamePort.Add(1)
				return false
			}
			// A GSO frame is cut into segments by out's transmit.
			if out.off == nil && CompleteChecksum(buf, &rx.meta) {
				b.swChecksums.Add(1)
			}
			f := b.stage(rx, size, 1)
			out.enqueue(f)
			return f == rx
		}
	}

	// Broadcast, multicast or unknown unicast: flood.
	n, plain := 0, false
	for _, p := range ports {
		if p != a || hairpin {
			n++
			plain = plain || p.off == nil
		}
	}
	if n == 0 {
		return false
	}
	// One buffer goes to every port, so a port that cannot take a
	// pending checksum means computing it for all.
	if plain && CompleteChecksum(buf, &rx.meta) {
		b.swChecksums.Add(1)
	}
	f := b.stage(rx, size, n)
	for _, p := range ports {
		if p != a || hairpin {
			p.enqueue(f)
		}
	}
	return f == rx
}

// stage returns the frame to queue for rx's first size bytes, with refs
// references: a small copy of a large buffer, or rx itself when it is
// small already (Inject) or copying would cost more than finding a new
// receive buffer.
func (b *Bridge) stage(rx *frame, size int, refs int) *frame {
	f := rx
	if size <= smallFrame && len(rx.buf) > smallFrame {
		f = b.pools.getSmall()
		copy(f.buf, rx.buf[:size])
	}
	f.n = size
	f.meta = rx.meta
	f.refs.Store(int32(refs))
	return f
}

// enqueue queues f for transmission, or drops it when the queue is full so
// that a slow port never holds up the ingress port.
func (a *Attachment) enqueue(f *frame) {
	if a.closing.Load() {
		f.release()
		return
	}
	// Nothing queued or in flight for the port: write the frame now, in
	// this goroutine, rather than wake the port's own. Order holds: a
	// frame forwarded later finds this one written, or txMu held.
	if a.direct && a.pending.Load() == 0 && a.txMu.TryLock() {
		if a.closing.Load() {
			// Closed since the check above: Close, past the port's
			// Close, waits for txMu, and no write may begin after it.
			a.txMu.Unlock()
			f.release()
			return
		}
		if a.pending.Load() == 0 {
			a.dbatch[0] = f
			err := a.transmitLocked(a.dbatch[:], a.dbufs[:0], a.dmeta[:0])
			a.dbatch[0], a.dbufs[0] = nil, nil
			a.txMu.Unlock()
			if portGone(err) {
				// Not detached here: this runs inside some port's read
				// (its own, for a hairpin frame), which closing the port
				// would wait for. Its transmit goroutine, which runs in
				// no read, detaches it, as after a write of its own.
				a.warnGone(err)
				a.closing.Store(true)
				select {
				case a.gone <- struct{}{}:
				default: // told already
				}
			}
			return
		}
		a.txMu.Unlock()
	}
	if a.direct {
		a.pending.Add(1)
	}
	select {
	case a.txq <- f:
		if a.closing.Load() {
			// Closed since the check above: its transmit goroutine may
			// have drained the queue and gone before f went in, and
			// nothing would ever take f. Count it as drain counts what
			// a closing port leaves queued.
			a.drain()
		}
	default:
		if a.direct {
			a.pending.Add(-1)
		}
		a.ctr.dropQueueFull.Add(1)
		f.release()
	}
}

func (a *Attachment) txLoop() {
	defer a.b.wg.Done()
	defer a.wg.Done()
	batch := make([]*frame, 0, a.batch)
	bufs := make([][]byte, 0, a.batch)
	var meta []Offload
	if a.off != nil {
		meta = make([]Offload, 0, a.batch)
	}
	for {
		select {
		case f := <-a.txq:
			batch = append(batch[:0], f)
		case <-a.done:
			a.drain()
			return
		case <-a.gone:
			a.shutdown()
			a.drain()
			return
		}
	fill:
		for len(batch) < cap(batch) {
			select {
			case f := <-a.txq:
				batch = append(batch, f)
			default:
				break fill
			}
		}
		a.txMu.Lock()
		err := a.transmitLocked(batch, bufs[:0], meta[:0])
		a.txMu.Unlock()
		a.endBatch()
		if a.direct {
			a.pending.Add(-int64(len(batch)))
		}
		clear(batch)
		if a.afterTransmit(err) {
			a.drain()
			return
		}
	}
}

// transmitLocked writes batch to the port, counts and captures what went,
// and releases the frames. bufs and meta are scratch of batch's capacity.
// The caller holds a.txMu.
func (a *Attachment) transmitLocked(batch []*frame, bufs [][]byte, meta []Offload) error {
	if a.off == nil {
		for _, f := range batch {
			if f.meta.GSO != GSONone {
				return a.transmitSegmented(batch)
			}
		}
	}
	for _, f := range batch {
		bufs = append(bufs, f.bytes())
	}
	var n int
	var err error
	if a.off != nil {
		for _, f := range batch {
			meta = append(meta, f.meta)
		}
		n, err = a.off.WriteFramesOffload(bufs, meta)
	} else {
		n, err = a.port.WriteFrames(bufs)
	}
	a.sent(bufs, n)
	for _, f := range batch {
		f.release()
	}
	clear(bufs)
	return err
}

// segArea is the room for the segments of GSO frames written to a port
// that takes no offloads at once: at least one segment of the largest.
const segArea = 256 << 10

// transmitSegmented is transmitLocked for a port that takes no offloads
// when batch holds GSO frames: each of those is cut into segments
// (Segment), written a batch at a time; a frame whose headers do not
// make sense is dropped as invalid. Counters and captures see the
// segments, as they see what any port sends.
func (a *Attachment) transmitSegmented(batch []*frame) error {
	if a.sarea == nil {
		a.sarea = make([]byte, segArea)
		a.sbufs = make([][]byte, 0, a.batch)
	}
	var err error
	for _, f := range batch {
		if err != nil {
			// Counted as the segments it would have been.
			n := 1
			if f.meta.GSO != GSONone && a.seg.init(f.bytes(), l3Offset(f.bytes()), f.meta) == nil {
				n = a.seg.left()
			}
			a.ctr.dropTxError.Add(uint64(n))
			continue
		}
		if f.meta.GSO == GSONone {
			err = a.writeSegments(append(a.sbufs[:0], f.bytes()))
			continue
		}
		if a.seg.init(f.bytes(), l3Offset(f.bytes()), f.meta) != nil {
			a.ctr.dropInvalid.Add(1)
			continue
		}
		a.b.swSegmented.Add(1)
		for more := true; more && err == nil; {
			bufs, room := a.sbufs[:0], a.sarea
			for more && len(bufs) < cap(bufs) && len(room) >= a.seg.hdr+a.seg.mss {
				var n int
				n, more = a.seg.next(room)
				bufs, room = append(bufs, room[:n]), room[n:]
			}
			err = a.writeSegments(bufs)
		}
		if err != nil {
			a.ctr.dropTxError.Add(uint64(a.seg.left())) // the segments not made
		}
	}
	for _, f := range batch {
		f.release()
	}
	return err
}

// writeSegments writes bufs to the port and counts and captures what
// went.
func (a *Attachment) writeSegments(bufs [][]byte) error {
	n, err := a.port.WriteFrames(bufs)
	a.sent(bufs, n)
	clear(bufs)
	return err
}

// sent counts and captures the first n of the frames bufs written to the
// port, and counts the rest as failed.
func (a *Attachment) sent(bufs [][]byte, n int) {
	if a.ender != nil && !a.unended.Load() {
		a.unended.Store(true) // after the write: its batch end sees what it held
	}
	n = max(0, min(n, len(bufs)))
	var bytes uint64
	for _, b := range bufs[:n] {
		bytes += uint64(len(b))
	}
	a.ctr.txFrames.Add(uint64(n))
	a.ctr.txBytes.Add(bytes)
	if n < len(bufs) {
		a.ctr.dropTxError.Add(uint64(len(bufs) - n))
	}
	if c := a.capture.Load(); c != nil {
		for _, b := range bufs[:n] {
			recordAll(*c, a.b.clock, b)
		}
	}
}

// afterTransmit detaches the port when a write error says it is gone, and
// reports whether it did. Only its own writer calls it: a port's Close
// waits for its read, which a direct write may run inside (enqueue).
func (a *Attachment) afterTransmit(err error) bool {
	if !portGone(err) {
		return false
	}
	a.warnGone(err)
	a.shutdown()
	return true
}

// portGone reports whether a write error says the port is gone.
func portGone(err error) bool {
	return err != nil && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe))
}

// warnGone logs a port gone, once: not if it is being closed already.
func (a *Attachment) warnGone(err error) {
	if !a.closing.Load() {
		a.b.log.Warn("port write failed; detaching", "port", a.name, "err", err)
	}
}

// drain releases what is left in the queue of a port that is going away,
// counted as not sent.
func (a *Attachment) drain() {
	for {
		select {
		case f := <-a.txq:
			if a.direct {
				a.pending.Add(-1)
			}
			a.ctr.dropTxError.Add(1)
			f.release()
		default:
			return
		}
	}
}
