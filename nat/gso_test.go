package nat

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// offloadSink is a sink that passes offloads along and keeps the Offload
// of each frame written to it.
type offloadSink struct {
	sink
	frames [][]byte
	meta   []bridge.Offload
}

func (s *offloadSink) Offloading() bool { return true }
func (s *offloadSink) ReadFramesOffload([][]byte, []int, []bridge.Offload) (int, error) {
	<-s.done
	return 0, net.ErrClosed
}
func (s *offloadSink) WriteFramesOffload(b [][]byte, meta []bridge.Offload) (int, error) {
	for i := range b {
		s.frames = append(s.frames, append([]byte(nil), b[i]...))
		s.meta = append(s.meta, meta[i])
	}
	return s.sink.WriteFrames(b)
}

// gsoPacket is a frame from the container to the client carrying one
// TCP packet of payload bytes with DF set, its checksum pending, as an
// offloading kernel sends it, and its Offload with segments of mss.
func gsoPacket(dst bridge.MAC, payload, mss int) ([]byte, bridge.Offload) {
	pkt := ipPacket(ctrIP, clientIP, conntrack.ProtoTCP, tcpHeader(40000, 443, payload))
	pkt[6] = 0x40
	fillChecksums(pkt)
	h, _ := parseIP(pkt, false)
	putCksum(pkt, h.l4+16, pseudoSum(pkt, &h, h.end-h.l4))
	f := frame(dst, ctrMAC, etherTypeIP4, pkt)
	return f, bridge.Offload{
		Flags: bridge.OffloadNeedsCsum, GSO: bridge.GSOTCPv4, HdrLen: uint16(Headroom + h.l4 + 20),
		GSOSize: uint16(mss), CsumStart: uint16(Headroom + h.l4), CsumOffset: 16,
	}
}

// sinkGateway is a gateway whose uplink is port, with the client's MAC
// known on it, and no reaper (ExpireInterval -1).
func sinkGateway(t testing.TB, port bridge.Port, mtu int) *Gateway {
	t.Helper()
	br, err := bridge.New(bridge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	up, err := NewLinkUplink(LinkUplinkConfig{Port: port, Addr: netip.MustParsePrefix("192.168.2.116/24"), MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	up.l.neigh.learn(clientIP, clientMAC, up.now(), true)
	gw, err := New(Config{Bridge: br, Subnet: netip.MustParsePrefix("172.17.0.1/16"), Uplink: up,
		Conntrack: conntrack.Config{ExpireInterval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return gw
}

// checkMasqueraded checks that a segment left for the client from the
// host address, with every checksum right.
func checkMasqueraded(t *testing.T, f []byte) {
	t.Helper()
	pkt := f[Headroom:]
	if src := netip.AddrFrom4([4]byte(pkt[12:16])); src != hostIP {
		t.Fatalf("segment from %v, want %v", src, hostIP)
	}
	if err := verify(pkt); err != nil {
		t.Fatalf("segment: %v", err)
	}
}

// A GSO packet through masquerade to an uplink without offloads goes out
// as segments within the MTU, each rewritten with complete checksums, and
// costs no allocation.
func TestForwardGSOToPlainUplink(t *testing.T) {
	port := &sink{done: make(chan struct{})}
	gw := sinkGateway(t, port, 1500)
	tmpl, off := gsoPacket(gw.MAC(), 10*1448+100, 1448)
	f := make([]byte, len(tmpl))
	forward := func() {
		copy(f, tmpl)
		gw.forward(f, true, off)
	}
	forward()
	if port.sent != 11 {
		t.Fatalf("%d segments sent, want 11", port.sent)
	}
	checkMasqueraded(t, port.last)
	if n := len(port.last) - Headroom; n != 20+20+100 {
		t.Fatalf("last segment is %d bytes", n)
	}
	if st := gw.Stats(); st.GSO != 1 || st.Segmented != 1 {
		t.Fatalf("stats %+v, want 1 GSO packet cut", st)
	}
	if n := testing.AllocsPerRun(100, forward); n != 0 {
		t.Fatalf("%v allocations per GSO packet", n)
	}
}

// To an uplink with offloads, the GSO packet goes whole, rewritten with
// its checksum still pending; cut as the kernel would cut it, its
// segments are right.
func TestForwardGSOToOffloadingUplink(t *testing.T) {
	port := &offloadSink{sink: sink{done: make(chan struct{})}}
	gw := sinkGateway(t, port, 1500)
	f, off := gsoPacket(gw.MAC(), 10*1448+100, 1448)
	gw.forward(f, true, off)
	if len(port.frames) != 1 {
		t.Fatalf("%d frames sent, want the one GSO frame", len(port.frames))
	}
	if port.meta[0] != off {
		t.Fatalf("offload %+v, want %+v", port.meta[0], off)
	}
	n := 0
	err := bridge.Segment(port.frames[0], Headroom, port.meta[0], make([]byte, 65535), func(seg []byte) {
		checkMasqueraded(t, seg)
		n++
	})
	if err != nil || n != 11 {
		t.Fatalf("cut into %d segments: %v", n, err)
	}
	if st := gw.Stats(); st.GSO != 1 || st.Segmented != 0 {
		t.Fatalf("stats %+v, want 1 GSO packet passed whole", st)
	}
}

// A GSO packet whose segments (with DF) exceed the uplink's MTU is
// answered with fragmentation-needed giving the MTU, so the sender's
// kernel lowers its segment size.
func TestForwardGSOFragNeeded(t *testing.T) {
	port := &offloadSink{sink: sink{done: make(chan struct{})}}
	gw := sinkGateway(t, port, 1280)
	f, off := gsoPacket(gw.MAC(), 10*1448, 1448)
	gw.forward(f, true, off)
	if len(port.frames) != 0 {
		t.Fatalf("%d frames sent to the uplink, want none", len(port.frames))
	}
	st := gw.Stats()
	if st.DropTooBig != 1 || st.ICMPSent != 1 {
		t.Fatalf("stats %+v, want one packet too big answered", st)
	}
	msg := gw.scratch[1].msg[Headroom:]
	if msg[20] != 3 || msg[21] != 4 || binary.BigEndian.Uint16(msg[26:]) != 1280 {
		t.Fatalf("ICMP type %d code %d mtu %d, want fragmentation needed with 1280",
			msg[20], msg[21], binary.BigEndian.Uint16(msg[26:]))
	}
}

// A GSO packet whose payload is less than its GSOSize is one segment of
// its own size: within the MTU it goes on, not answered with
// fragmentation needed for a segment size no segment of it has.
func TestForwardGSOShortPayload(t *testing.T) {
	port := &offloadSink{sink: sink{done: make(chan struct{})}}
	gw := sinkGateway(t, port, 1280)
	f, off := gsoPacket(gw.MAC(), 1000, 1448)
	gw.forward(f, true, off)
	if st := gw.Stats(); len(port.frames) != 1 || st.DropTooBig != 0 || st.ICMPSent != 0 {
		t.Fatalf("%d frames sent, stats %+v; want the packet sent, nothing answered", len(port.frames), st)
	}
	n := 0
	err := bridge.Segment(port.frames[0], Headroom, port.meta[0], make([]byte, 65535), func(seg []byte) {
		checkMasqueraded(t, seg)
		n++
	})
	if err != nil || n != 1 {
		t.Fatalf("cut into %d segments: %v", n, err)
	}
}
