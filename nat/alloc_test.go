package nat

import (
	"net"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// sink is a bridge.Port that counts the frames written to it, keeps a copy
// of the last, and has nothing to read until it is closed.
type sink struct {
	sent int
	last []byte
	done chan struct{}
}

func (s *sink) ReadFrames([][]byte, []int) (int, error) { <-s.done; return 0, net.ErrClosed }
func (s *sink) WriteFrames(b [][]byte) (int, error) {
	s.sent += len(b)
	s.last = append(s.last[:0], b[len(b)-1]...)
	return len(b), nil
}
func (s *sink) BatchSize() int { return 1 }
func (s *sink) Close() error   { close(s.done); return nil }

// TestForwardDoesNotAllocate forwards packets of an established,
// masqueraded flow, the per-packet path from the bridge through a link
// uplink, and counts allocations.
func TestForwardDoesNotAllocate(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	up := gw.uplink.(*LinkUplink)
	pkt := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 100))
	tmpl := frame(gw.MAC(), ctrMAC, etherTypeIP4, pkt)
	f := make([]byte, len(tmpl))
	forward := func() {
		copy(f, tmpl)
		gw.forward(f, true, bridge.Offload{})
	}
	forward() // creates the entry
	if port.sent != 1 || netip.AddrFrom4([4]byte(port.last[Headroom+12:Headroom+16])) != hostIP {
		t.Fatalf("first packet not masqueraded: sent %d", port.sent)
	}
	if n := testing.AllocsPerRun(1000, forward); n != 0 {
		t.Fatalf("%v allocations per forwarded packet", n)
	}
	if port.sent != 1002 {
		t.Fatalf("sent %d packets, want 1002", port.sent)
	}

	// And back: the server's answers, translated and injected into the
	// bridge.
	gw.inside.neigh.learn(ctrIP, ctrMAC, gw.now(), true)
	back := ipPacket(clientIP, hostIP, conntrack.ProtoUDP, udpHeader(53, 5000, 100))
	tmplBack := frame(up.MAC(), clientMAC, etherTypeIP4, back)
	before := gw.Stats().Forwarded
	backward := func() {
		copy(f, tmplBack)
		gw.forward(f, false, bridge.Offload{})
	}
	if n := testing.AllocsPerRun(1000, backward); n != 0 {
		t.Fatalf("%v allocations per packet forwarded back", n)
	}
	if got := gw.Stats().Forwarded - before; got != 1001 {
		t.Fatalf("forwarded %d answers, want 1001", got)
	}
}
