package bridge

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

func TestInject(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	// Port 1's station makes itself known.
	tb.send(1, ether(Broadcast, macB, 0x0800, 10, 1))
	tb.expect(0, 1)
	// Frames injected on port 0 are forwarded as if port 0 had read them:
	// to the known MAC only, and their source learned on port 0.
	small := ether(macB, macA, 0x0800, 100, 2)
	large := ether(macB, macA, 0x0800, 9000, 3)
	want := bytes.Clone(small)
	if err := tb.ports[0].Inject([][]byte{small, large}); err != nil {
		t.Fatal(err)
	}
	small[14] = 99 // the bridge copied: the caller's buffer is its own again
	if got := tb.recv(1); !bytes.Equal(got, want) {
		t.Fatalf("small frame: got %d bytes", len(got))
	}
	if got := tb.recv(1); !bytes.Equal(got, large) {
		t.Fatalf("large frame: got %d bytes", len(got))
	}
	tb.send(1, ether(macA, macB, 0x0800, 10, 4))
	tb.expect(0, 4)
	if c := tb.ports[0].Counters(); c.RxFrames != 2 {
		t.Fatalf("rx frames %d, want 2", c.RxFrames)
	}
	tb.ports[0].Close()
	if err := tb.ports[0].Inject([][]byte{small}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Inject after Close: %v", err)
	}
}

// A frame InjectOffload drops as longer than its largest buffer is
// counted received, then dropped, as Counters says of every frame a port
// reads.
func TestInjectOversizeCountedReceived(t *testing.T) {
	tb := newTestBridge(t, Config{}, 2)
	big := ether(Broadcast, macA, etherTypeTest, MaxGSOFrame, 1)
	if err := tb.ports[0].Inject([][]byte{big}); err != nil {
		t.Fatal(err)
	}
	c := tb.ports[0].Counters()
	if c.DropOversize != 1 || c.RxFrames != 1 || c.RxBytes != uint64(len(big)) {
		t.Errorf("counters %+v; want the oversize frame counted in RxFrames, RxBytes and DropOversize", c)
	}
}
