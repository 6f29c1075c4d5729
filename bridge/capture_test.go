package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

type pcapRecord struct {
	t    time.Time
	orig int
	data []byte
}

// readPcap parses a classic pcap stream as libpcap would, checking the
// file header.
func readPcap(t *testing.T, b []byte) (snaplen int, recs []pcapRecord) {
	t.Helper()
	if len(b) < 24 {
		t.Fatalf("pcap: %d bytes, no header", len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != 0xa1b2c3d4 || le.Uint16(b[4:]) != 2 || le.Uint16(b[6:]) != 4 || le.Uint32(b[20:]) != 1 {
		t.Fatalf("pcap header %x", b[:24])
	}
	snaplen = int(le.Uint32(b[16:]))
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("pcap: truncated record header")
		}
		incl, orig := int(le.Uint32(b[8:])), int(le.Uint32(b[12:]))
		if incl > len(b)-16 || incl > orig || incl > snaplen {
			t.Fatalf("pcap: bad record lengths incl=%d orig=%d", incl, orig)
		}
		ts := time.Unix(int64(le.Uint32(b[0:])), int64(le.Uint32(b[4:]))*1000)
		recs = append(recs, pcapRecord{ts, orig, b[16 : 16+incl]})
		b = b[16+incl:]
	}
	return snaplen, recs
}

func TestCapture(t *testing.T) {
	tb := newTestBridge(t, Config{}, 3)
	var whole, port1 bytes.Buffer
	cb, err := tb.b.Capture(&whole, CaptureConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tb.ports[1].Capture(&port1, CaptureConfig{Snaplen: 20})
	if err != nil {
		t.Fatal(err)
	}

	f1 := ether(Broadcast, macA, etherTypeTest, 100, 1) // in on 0, out on 1 and 2
	f2 := ether(macA, macB, etherTypeTest, 50, 2)       // in on 1, out on 0
	f3 := ether(macB, macC, etherTypeTest, 30, 3)       // in on 2, out on 1
	tb.send(0, f1)
	tb.expect(1, 1)
	tb.expect(2, 1)
	tb.send(1, f2)
	tb.expect(0, 2)
	tb.send(2, f3)
	tb.expect(1, 3)
	waitFor(t, "tx counted", func() bool { return tb.ports[1].Counters().TxFrames == 2 })

	if err := cb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cp.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// The bridge capture has each frame once, as received.
	_, recs := readPcap(t, whole.Bytes())
	want := [][]byte{f1, f2, f3}
	if len(recs) != len(want) {
		t.Fatalf("bridge capture: %d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if !bytes.Equal(r.data, want[i]) || r.orig != len(want[i]) {
			t.Errorf("bridge capture record %d = %x, want %x", i, r.data, want[i])
		}
		if !r.t.Equal(tb.clock.Now().Truncate(time.Microsecond)) {
			t.Errorf("record %d time %v, want the bridge clock's %v", i, r.t, tb.clock.Now())
		}
	}

	// The port capture has what went out of port 1 and what came in, cut
	// at the snaplen. Rx and tx run on different goroutines, so compare as
	// a set.
	snap, recs := readPcap(t, port1.Bytes())
	if snap != 20 || len(recs) != 3 {
		t.Fatalf("port capture: snaplen %d, %d records, want 20 and 3", snap, len(recs))
	}
	seen := map[byte]int{}
	for _, r := range recs {
		if len(r.data) != 20 {
			t.Errorf("record of %d bytes, want 20", len(r.data))
		}
		seen[r.data[etherHeader]] = r.orig
	}
	for _, f := range want {
		if seen[f[etherHeader]] != len(f) {
			t.Errorf("port capture lacks frame %d: %v", f[etherHeader], seen)
		}
	}

	// Stopped captures are off the path again.
	if tb.b.capture.Load() != nil || tb.ports[1].capture.Load() != nil {
		t.Error("capture set not cleared after Close")
	}
}

// blockingWriter blocks every Write until released.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

// A writer that cannot keep up loses frames, not forwarding.
func TestCaptureSlowWriter(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	w := blockingWriter{release: make(chan struct{})}
	go func() {
		// Only the file header gets through until the end.
		w.release <- struct{}{}
	}()
	c, err := tb.b.Capture(w, CaptureConfig{QueueLen: 2})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		tb.send(0, ether(Broadcast, macA, etherTypeTest, 10, byte(i)))
		tb.expect(1, byte(i))
	}
	if c.Dropped() == 0 || c.Captured()+c.Dropped() != n {
		t.Errorf("captured %d dropped %d, want some dropped and %d in all", c.Captured(), c.Dropped(), n)
	}
	close(w.release)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// A stalled writer holds at most MaxBytes of frames (16 MiB by default),
// not QueueLen of the largest, and a frame it has no room for is dropped
// without a copy; a MaxBytes below one frame still captures, a frame at a
// time.
func TestCaptureBoundedBytes(t *testing.T) {
	const size, n = 60000, 600 // 36 MB, well within the default QueueLen
	frame := ether(Broadcast, macA, etherTypeTest, size, 1)
	rec := uint64(pcapRecordHeader + len(frame))
	for _, tc := range []struct {
		name     string
		maxBytes int
		want     uint64 // frames held; one more may have gone to the writer's buffer
	}{
		{"default", 0, (16 << 20) / rec},
		{"below one frame", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTestBridge(t, Config{}, 1)
			w := blockingWriter{release: make(chan struct{})}
			go func() { w.release <- struct{}{} }() // the file header
			c, err := tb.b.Capture(w, CaptureConfig{MaxBytes: tc.maxBytes})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				close(w.release)
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			}()
			for range n {
				if err := tb.ports[0].Inject([][]byte{frame}); err != nil {
					t.Fatal(err)
				}
			}
			if got := c.Captured(); got < tc.want || got > tc.want+1 || got+c.Dropped() != n {
				t.Errorf("captured %d (%d bytes) and dropped %d of %d frames; want %d captured, or one more", got, got*rec, c.Dropped(), n, tc.want)
			}
			if allocs := testing.AllocsPerRun(20, func() { c.record(time.Time{}, frame) }); allocs != 0 {
				t.Errorf("a frame not captured costs %v allocations, want 0", allocs)
			}
		})
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		return 0, io.ErrShortWrite
	}
	w.n--
	return len(p), nil
}

func TestCaptureWriteError(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	if _, err := tb.b.Capture(&failingWriter{}, CaptureConfig{}); err == nil {
		t.Fatal("Capture with a failing writer succeeded")
	}
	c, err := tb.b.Capture(&failingWriter{n: 1}, CaptureConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tb.barrier(0, 1, macA)
	waitFor(t, "capture", func() bool { return c.Captured() == 1 })
	// A failed writer gets nothing more, and its frames cost no copy:
	// such a capture (its reader gone) lived on until Close, copying
	// every frame to throw it away.
	waitFor(t, "the writer's failure", c.failed.Load)
	frame := ether(Broadcast, macA, etherTypeTest, 1000, 2)
	for range 100 {
		tb.ports[0].Inject([][]byte{frame})
	}
	if c.Captured() != 1 || c.Dropped() != 100 {
		t.Errorf("after the writer failed: captured %d, dropped %d; want 1 and 100", c.Captured(), c.Dropped())
	}
	if allocs := testing.AllocsPerRun(20, func() { c.record(time.Time{}, frame) }); allocs != 0 {
		t.Errorf("a frame for a failed writer costs %v allocations, want 0", allocs)
	}
	if err := c.Close(); err == nil {
		t.Error("Close did not report the write error")
	}
}

// TestCaptureAfterClose: a closed port or bridge refuses new captures, and
// Close stops the captures it finds, so none outlives its owner.
func TestCaptureAfterClose(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	var buf bytes.Buffer
	live, err := tb.b.Capture(&buf, CaptureConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tb.ports[0].Close()
	if _, err := tb.ports[0].Capture(&buf, CaptureConfig{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("capture on a closed port: %v", err)
	}
	tb.b.Close()
	if _, err := tb.b.Capture(&buf, CaptureConfig{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("capture on a closed bridge: %v", err)
	}
	select {
	case <-live.done:
	default:
		t.Fatal("Bridge.Close left a capture running")
	}
}
