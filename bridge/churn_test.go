package bridge

import (
	"sync"
	"testing"
	"time"
)

// Traffic from several ports while others are added and removed, then Close
// while busy: no race, no panic, no goroutine left (goleak in TestMain).
func TestChurnUnderTraffic(t *testing.T) {
	b, err := New(Config{QueueLen: 8})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	macs := []MAC{macA, macB, macC}
	var outs []*Pipe
	for i := range 3 {
		in, out := NewPipe(PipeConfig{BatchSize: 4})
		if _, err := b.AddPort(in, PortConfig{Hairpin: i == 0}); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
		wg.Add(2)
		go func() { // reader
			defer wg.Done()
			buf := make([]byte, 70000)
			for {
				if _, err := out.ReadFrame(buf); err != nil {
					return
				}
			}
		}()
		go func() { // writer
			defer wg.Done()
			dsts := []MAC{Broadcast, macA, macB, macC, macX}
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := out.WriteFrame(ether(dsts[k%len(dsts)], macs[i], 0x88b5, 60+k%1500, byte(k))); err != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		in, out := NewPipe(PipeConfig{BatchSize: 2})
		a, err := b.AddPort(in, PortConfig{})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			buf := make([]byte, 70000)
			for {
				if _, err := out.ReadFrame(buf); err != nil {
					return
				}
			}
		}()
		out.WriteFrame(ether(Broadcast, macD, 0x88b5, 60, 1))
		b.AddStatic(macX, a)
		if c, err := a.Capture(discard{}, CaptureConfig{}); err == nil {
			defer c.Close()
		}
		a.Close()
		out.Close()
	}
	close(stop)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, o := range outs {
		o.Close()
	}
	wg.Wait()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
