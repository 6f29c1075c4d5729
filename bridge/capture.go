package bridge

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Classic libpcap file format, microsecond timestamps, Ethernet link type.
const (
	pcapMagic           = 0xa1b2c3d4
	pcapVersionMajor    = 2
	pcapVersionMinor    = 4
	pcapLinkTypeEther   = 1
	pcapRecordHeader    = 16
	DefaultSnaplen      = 262144 // as tcpdump's default
	DefaultCaptureQueue = 4096
	DefaultCaptureBytes = 16 << 20
)

// CaptureConfig configures a capture. The zero value captures whole frames
// with a queue of 4096 frames and 16 MiB.
type CaptureConfig struct {
	// Snaplen is the most bytes kept of each frame; zero means 262144.
	Snaplen int
	// QueueLen is how many frames may wait for the writer; zero means
	// 4096. Frames beyond are not captured and are counted in Dropped, so
	// a slow writer never slows forwarding.
	QueueLen int
	// MaxBytes bounds the memory of the frames waiting for the writer
	// (their records, as kept: at most Snaplen bytes each, and a record
	// header); zero means 16 MiB. Frames beyond are not captured and are
	// counted in Dropped; one frame is captured whatever its size when
	// none waits. QueueLen alone would let a stalled writer hold
	// QueueLen of the largest frames: 4096 GSO frames of 64 KiB are
	// 256 MiB.
	MaxBytes int
}

// Capture is a running capture writing a pcap stream, readable by
// `tcpdump -r` and Wireshark. A capture of a port sees the frames the port
// reads and the frames written to it; a capture of the bridge sees every
// frame read on any port, once. Frames are recorded as read, before the
// bridge checks them. When no capture runs, the forwarding path pays one
// atomic load per frame.
type Capture struct {
	w       *bufio.Writer
	snaplen int
	q       chan []byte
	max     int64        // MaxBytes
	queued  atomic.Int64 // bytes of the records in q, or being written
	done    chan struct{}
	wg      sync.WaitGroup
	remove  func(*Capture)

	captured, dropped atomic.Uint64
	failed            atomic.Bool // the writer met an error: nothing more is written
	once              sync.Once
	err               error // first write error; owned by the writer goroutine until wg is done
}

// Capture starts capturing every frame the bridge receives, on any port,
// to w in pcap format. The pcap file header is written before Capture
// returns. Stop with Capture.Close; Bridge.Close stops it too.
func (b *Bridge) Capture(w io.Writer, cfg CaptureConfig) (*Capture, error) {
	return b.startCapture(w, cfg, &b.capture, func() bool { return b.capsClosed })
}

// Capture starts capturing the frames the port reads and the frames it
// sends, to w in pcap format. Stop with Capture.Close; closing the port
// stops it too.
func (a *Attachment) Capture(w io.Writer, cfg CaptureConfig) (*Capture, error) {
	return a.b.startCapture(w, cfg, &a.capture, a.closing.Load)
}

// startCapture adds a capture to set. closed, called with b.capMu held,
// reports whether the owner of set has been closed; the closer takes set
// under b.capMu, so a capture is either refused or stopped by Close.
func (b *Bridge) startCapture(w io.Writer, cfg CaptureConfig, set *atomic.Pointer[[]*Capture], closed func() bool) (*Capture, error) {
	if cfg.Snaplen == 0 {
		cfg.Snaplen = DefaultSnaplen
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultCaptureQueue
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultCaptureBytes
	}
	if cfg.Snaplen < 0 || cfg.QueueLen < 0 || cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("bridge: capture: negative Snaplen, QueueLen or MaxBytes")
	}
	b.capMu.Lock()
	gone := closed()
	b.capMu.Unlock()
	if gone {
		return nil, fmt.Errorf("bridge: capture: %w", net.ErrClosed)
	}
	c := &Capture{
		w:       bufio.NewWriterSize(w, 64<<10),
		snaplen: cfg.Snaplen,
		q:       make(chan []byte, cfg.QueueLen),
		max:     int64(cfg.MaxBytes),
		done:    make(chan struct{}),
	}
	var hdr [24]byte
	binary.LittleEndian.PutUint32(hdr[0:], pcapMagic)
	binary.LittleEndian.PutUint16(hdr[4:], pcapVersionMajor)
	binary.LittleEndian.PutUint16(hdr[6:], pcapVersionMinor)
	binary.LittleEndian.PutUint32(hdr[16:], uint32(cfg.Snaplen))
	binary.LittleEndian.PutUint32(hdr[20:], pcapLinkTypeEther)
	if _, err := c.w.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("bridge: capture: %w", err)
	}
	if err := c.w.Flush(); err != nil {
		return nil, fmt.Errorf("bridge: capture: %w", err)
	}
	c.remove = func(c *Capture) {
		b.capMu.Lock()
		defer b.capMu.Unlock()
		old := set.Load()
		if old == nil {
			return
		}
		next := slices.DeleteFunc(slices.Clone(*old), func(x *Capture) bool { return x == c })
		if len(next) == 0 {
			set.Store(nil) // back to the free path
			return
		}
		set.Store(&next)
	}
	b.capMu.Lock()
	if closed() {
		// Closed while the header was written: the closer has taken
		// the set already and would never stop this capture.
		b.capMu.Unlock()
		return nil, fmt.Errorf("bridge: capture: %w", net.ErrClosed)
	}
	var next []*Capture
	if old := set.Load(); old != nil {
		next = slices.Clone(*old)
	}
	next = append(next, c)
	set.Store(&next)
	b.capMu.Unlock()
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// recordAll records frame in every capture of set.
func recordAll(set []*Capture, clock Clock, frame []byte) {
	t := clock.Now()
	for _, c := range set {
		c.record(t, frame)
	}
}

// record queues frame for the writer, unless the queue is full in frames
// or bytes, or the writer failed: a frame not captured costs no copy.
func (c *Capture) record(t time.Time, frame []byte) {
	incl := min(len(frame), c.snaplen)
	size := int64(pcapRecordHeader + incl)
	if len(c.q) == cap(c.q) || c.failed.Load() {
		c.dropped.Add(1)
		return
	}
	// One record is taken whatever its size, when none waits: a MaxBytes
	// below the frames' size slows the capture, and does not stop it.
	if q := c.queued.Add(size); q > c.max && q != size {
		c.queued.Add(-size)
		c.dropped.Add(1)
		return
	}
	rec := make([]byte, size)
	binary.LittleEndian.PutUint32(rec[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(rec[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(rec[8:], uint32(incl))
	binary.LittleEndian.PutUint32(rec[12:], uint32(len(frame)))
	copy(rec[pcapRecordHeader:], frame)
	select {
	case c.q <- rec:
		c.captured.Add(1)
	default: // filled meanwhile by another port's goroutine
		c.queued.Add(-size)
		c.dropped.Add(1)
	}
}

func (c *Capture) run() {
	defer c.wg.Done()
	write := func(rec []byte) {
		if c.err == nil {
			if _, c.err = c.w.Write(rec); c.err != nil {
				c.failed.Store(true)
			}
		}
		c.queued.Add(-int64(len(rec)))
	}
	for {
		select {
		case rec := <-c.q:
			write(rec)
			if len(c.q) == 0 && c.err == nil {
				if c.err = c.w.Flush(); c.err != nil {
					c.failed.Store(true)
				}
			}
		case <-c.done:
			for {
				select {
				case rec := <-c.q:
					write(rec)
				default:
					if c.err == nil {
						c.err = c.w.Flush()
					}
					return
				}
			}
		}
	}
}

// Captured is the number of frames queued for the writer so far.
func (c *Capture) Captured() uint64 { return c.captured.Load() }

// Dropped is the number of frames not captured because the writer was
// behind, or had failed (Close returns its error).
func (c *Capture) Dropped() uint64 { return c.dropped.Load() }

// Close stops the capture, writes out the frames already queued, and
// returns the first error the writer met. It does not close the writer.
// Closing twice is harmless.
func (c *Capture) Close() error {
	c.once.Do(func() {
		c.remove(c)
		close(c.done)
	})
	c.wg.Wait()
	if c.err != nil {
		return fmt.Errorf("bridge: capture: %w", c.err)
	}
	return nil
}
