package bridge

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkForward moves frames between two pipe ports through the bridge,
// to a known MAC, and reports frames/s and Gbit/s of frames delivered.
func BenchmarkForward(b *testing.B) {
	for _, size := range []int{64, 1500, 65520} {
		b.Run(fmt.Sprint(size), func(b *testing.B) { benchForward(b, size) })
	}
}

func benchForward(b *testing.B, size int) {
	br, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	innerA, endA := NewPipe(PipeConfig{})
	innerB, endB := NewPipe(PipeConfig{})
	defer endA.Close()
	defer endB.Close()
	if _, err := br.AddPort(innerA, PortConfig{}); err != nil {
		b.Fatal(err)
	}
	pb, err := br.AddPort(innerB, PortConfig{})
	if err != nil {
		b.Fatal(err)
	}
	// Teach the bridge where macB is.
	if _, err := endB.WriteFrames([][]byte{ether(Broadcast, macB, etherTypeTest, 50, 0)}); err != nil {
		b.Fatal(err)
	}
	if _, err := endA.ReadFrame(make([]byte, 100)); err != nil {
		b.Fatal(err)
	}

	const batch = 32
	out := make([][]byte, batch)
	for i := range out {
		out[i] = ether(macB, macA, etherTypeTest, size-etherHeader, 0)
	}
	// The sender keeps at most window frames in flight, so that it
	// measures forwarding rather than how fast a full queue drops.
	const window = DefaultQueueLen / 2
	credits := make(chan int, window)
	done := make(chan int)
	go func() {
		bufs, sizes := make([][]byte, batch), make([]int, batch)
		for i := range bufs {
			bufs[i] = make([]byte, size)
		}
		got := 0
		for {
			n, err := endB.ReadFrames(bufs, sizes)
			got += n
			if n > 0 {
				credits <- n
			}
			if err != nil {
				done <- got
				return
			}
		}
	}()

	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	credit := window
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		for credit < n {
			credit += <-credits
		}
		credit -= n
		if _, err := endA.WriteFrames(out[:n]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := pb.Counters()
		if c.TxFrames+c.DropQueueFull >= uint64(b.N) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	endB.Close()
	<-done
	c := pb.Counters()
	b.ReportMetric(float64(c.TxFrames)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(c.TxFrames)*float64(size)*8/elapsed.Seconds()/1e9, "Gbit/s")
	b.ReportMetric(float64(c.DropQueueFull), "drops")
}
