package bridge

// Port is anything that carries Ethernet frames: a TAP device, one end of a
// Pipe, the gateway, or a type of the user's. The bridge owns every Port
// added to it and is its only reader and only writer: it calls ReadFrames
// from one goroutine and WriteFrames from another, never two ReadFrames (or
// two WriteFrames) at once, so an implementation needs no locking beyond
// what Close requires.
//
// The contract, which Pipe and TAP follow and user ports must follow too:
//
//   - Frames are whole Ethernet frames starting at the destination MAC,
//     without preamble or FCS. Frames shorter than the 60-byte Ethernet
//     minimum are allowed (TAP devices deliver them unpadded).
//   - Buffers belong to the caller. ReadFrames fills the buffers it is given
//     and WriteFrames reads the ones it is given; neither keeps a reference
//     to any of them after it returns.
//   - Close is idempotent, unblocks any ReadFrames or WriteFrames in
//     progress, and releases the underlying device. After Close, ReadFrames
//     and WriteFrames return net.ErrClosed.
//   - An error from ReadFrames means the port can deliver no more frames
//     (closed, peer gone, device removed): the bridge detaches the port on
//     the first one. An error from WriteFrames means frames bufs[n:] were
//     not sent; the bridge counts them as dropped, and detaches the port
//     when the error wraps net.ErrClosed or io.EOF or io.ErrClosedPipe.
//     Ports must not return transient errors in a loop: drop and count
//     internally instead.
type Port interface {
	// ReadFrames blocks until at least one frame is available, then reads
	// up to len(bufs) frames, frame i into bufs[i] with its length in
	// sizes[i], and returns how many it read. It may return frames together
	// with an error. A frame longer than its buffer is truncated to
	// len(bufs[i]) and sizes[i] is len(bufs[i]); the bridge hands out
	// buffers one byte longer than the largest frame it accepts, so it
	// counts a truncated frame as oversize. len(sizes) >= len(bufs).
	ReadFrames(bufs [][]byte, sizes []int) (n int, err error)

	// WriteFrames sends every frame in bufs, in order, and returns how many
	// it sent. It may block (a Pipe waits for its reader); the bridge calls
	// it from the port's own transmit goroutine, so a blocked port delays
	// only itself.
	WriteFrames(bufs [][]byte) (n int, err error)

	// BatchSize is the number of frames the port prefers per call. The
	// bridge never passes more than this many buffers to ReadFrames or
	// frames to WriteFrames. It must be at least 1 and must not change.
	BatchSize() int

	// Close releases the port, as described above.
	Close() error
}

// Namer is implemented by ports that have a name of their own, such as a
// TAP device. The bridge uses it when PortConfig.Name is empty.
type Namer interface {
	Name() string
}

// KernelCounter is implemented by ports over a kernel device, such as a
// TAP, whose counters show what the bridge's cannot: frames lost between
// the bridge and the device's network stack.
type KernelCounter interface {
	KernelCounters() (KernelCounters, error)
}

// KernelCounters are a device's counters of frames lost on its side.
type KernelCounters struct {
	// RxDropped counts frames the bridge wrote that the device's stack
	// dropped (its backlog full).
	RxDropped uint64
	// TxDropped counts frames the device's stack sent that the device
	// could not queue for the bridge: the bridge read too slowly.
	TxDropped uint64
}

// DirectWriter is implemented by ports whose WriteFrames never waits on
// anyone and costs little, such as the gateway's router port, which
// handles frames as they come. The bridge may then write a frame to the
// port from the goroutine that forwards it, when nothing is queued for the
// port, instead of waking the port's transmit goroutine: a goroutine
// switch less per frame. Frames still go out in order, and a port with a
// backlog still gets its queue. A Pipe, whose writes wait for its reader,
// is not one. A TAP device is one only when opened with
// TAPConfig.DirectWrite (off by default): measured (bench/nat), writing to
// it from the forwarding goroutine serialises two system calls that the
// transmit goroutine otherwise runs on the other core, and costs the link
// uplink more throughput and latency than the switch it saves.
type DirectWriter interface {
	WritesDirect() bool
}

// BatchEnder is implemented by ports that want to know where a batch of
// the frames written to them ends: the frames of one read from another
// port, of one Inject, or of one write by the port's transmit goroutine.
// Such a port may hold back part of what a frame asks of it, to do it
// together with what later frames of the same batch ask (the gateway's
// host-socket uplink sends a TCP segment's bytes and the FIN that follows
// them in one segment), and does it in EndBatch. The bridge calls EndBatch
// once the frames written to the port since its last call were handed
// over, before the goroutine that wrote them waits for more, from that
// goroutine or from another one's batch end; it may call it from several
// goroutines at once. It holds none of its own locks then, but a batch
// end at an Inject's runs in the injecting goroutine, with whatever that
// holds; an Inject never ends its own port's batch, so a port may inject
// from inside its writes, and its EndBatch may lead to its injecting.
type BatchEnder interface {
	EndBatch()
}
