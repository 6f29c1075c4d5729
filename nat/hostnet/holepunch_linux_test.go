package hostnet

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// punchEnv is an uplink with a UDP port published on the host's loopback
// for a container at 10.0.0.2:7000, a client on the loopback (shown to
// the container as the gateway, 10.0.0.1, which is also the host-loopback
// address, so the container's own flow to the client goes to it too),
// and the tuple both flows share on the container's side.
type punchEnv struct {
	u       *Uplink
	pub     *net.UDPConn
	pubAddr netip.AddrPort
	client  *net.UDPConn
	ctr     netip.AddrPort
	near    conntrack.Tuple
}

// newPunchEnv makes a punchEnv whose uplink, attached to a table of its
// own, makes its sockets through hold: the test can stop the container's
// own flow's open there.
func newPunchEnv(t *testing.T, hold func()) *punchEnv {
	t.Helper()
	gw := netip.MustParseAddr("10.0.0.1")
	u, err := New(Config{Gateway: gw, HostLoopback: gw, Namespace: func(fn func() error) error {
		hold()
		return fn()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	tbl, err := conntrack.New(conntrack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tbl.Close() })
	if err := u.Attach(tbl, nil); err != nil {
		t.Fatal(err)
	}
	if err := u.Start(func([]byte, bridge.Offload) {}); err != nil {
		t.Fatal(err)
	}
	e := &punchEnv{u: u, ctr: netip.MustParseAddrPort("10.0.0.2:7000")}
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	e.pub, e.client = listen(), listen()
	e.pubAddr = e.pub.LocalAddr().(*net.UDPAddr).AddrPort()
	p, err := u.newPublishedUDP(e.pub, e.pubAddr, e.ctr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	cport := e.client.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	e.near = conntrack.Tuple{Src: e.ctr.Addr(), Dst: gw, SrcPort: e.ctr.Port(), DstPort: cport, Proto: conntrack.ProtoUDP}
	return e
}

// send has the container send payload to the client, as it sees it.
func (e *punchEnv) send(payload string) {
	buf := make([]byte, 28+len(payload))
	copy(buf[28:], payload)
	shown := netip.AddrPortFrom(e.near.Dst, e.near.DstPort)
	pkt := udpPacket(buf, e.ctr, shown, len(payload))
	e.u.Send(append(make([]byte, nat.Headroom), pkt...), e.near.Dst, bridge.Offload{})
}

// flowAt is the flow the container's datagrams to the client take, and
// whether it is the client's own (its published port's).
func (e *punchEnv) flowAt() (fl *udpFlow, clients bool) {
	e.u.mu.Lock()
	defer e.u.mu.Unlock()
	fl = e.u.udp[e.near]
	return fl, fl != nil && fl.client.IsValid()
}

// answeredFromPublished has the container answer the client, after what
// the client had was read, and checks that the answer comes from the
// published port.
func (e *punchEnv) answeredFromPublished(t *testing.T) {
	t.Helper()
	b := make([]byte, 100)
	for {
		e.client.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := e.client.ReadFromUDPAddrPort(b); err != nil {
			break
		}
	}
	e.send("answer")
	e.client.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := e.client.ReadFromUDPAddrPort(b)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	if string(b[:n]) != "answer" || from.Port() != e.pubAddr.Port() {
		t.Errorf("the container's answer %q came from %v, want it from the published port %v", b[:n], from, e.pubAddr)
	}
}

// A client's first datagram to a published UDP port and the container's
// own first datagram to that client, as the container sees it, opened at
// once (a hole punch): the client's flow registers while the container's
// is still being opened, which then finds the place taken and is
// refused, its datagram dropped. The container's answers go through the
// client's flow, from the published port.
func TestIntegrationUDPHolePunchClientFirst(t *testing.T) {
	var block atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	e := newPunchEnv(t, func() {
		if block.CompareAndSwap(true, false) {
			entered <- struct{}{}
			<-release
		}
	})
	block.Store(true)
	done := make(chan struct{})
	go func() { e.send("out"); close(done) }() // held in its socket's making
	<-entered
	if _, err := e.client.WriteToUDPAddrPort([]byte("in"), e.pubAddr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.u.Flows() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	<-done
	if _, clients := e.flowAt(); !clients {
		t.Fatal("the container's own flow took the client's place")
	}
	if n := e.u.Flows(); n != 1 {
		t.Errorf("%d flows, want the client's alone", n)
	}
	e.answeredFromPublished(t)
}

// The other order: the container's own flow registers after the client's
// flow found its place free (inboundNear) and before the client's
// registers. The client's takes the place, and the container's flow
// ends, with its entry, whose tuple the client's flow's entry needs.
func TestIntegrationUDPHolePunchContainerFirst(t *testing.T) {
	e := newPunchEnv(t, func() {})
	e.send("out")
	own, clients := e.flowAt()
	if own == nil || clients {
		t.Fatal("the container's own flow was not opened")
	}
	// The client's flow, as openInboundUDP makes it once inboundNear
	// found the place free.
	client := e.client.LocalAddr().(*net.UDPAddr).AddrPort()
	shown := e.u.presented(client)
	orig := conntrack.Tuple{Src: shown.Addr(), Dst: e.pubAddr.Addr(), SrcPort: shown.Port(), DstPort: e.pubAddr.Port(), Proto: conntrack.ProtoUDP}
	seen, _ := e.near.Reverse()
	if !e.u.reserve(e.ctr.Addr()) {
		t.Fatal("no place for the client's flow")
	}
	if err := e.u.expect(seen, orig, e.near); err != nil {
		t.Fatal(err)
	}
	fl := e.u.inboundUDPFlow(e.pub, rawConn(e.pub), inKey{c: e.pub, to: e.pubAddr.Addr(), client: client}, e.near, e.pubAddr, false)
	if !e.u.startUDP(fl, orig, e.ctr.Addr(), 0) {
		t.Fatal("the client's flow was refused")
	}
	if got, _ := e.flowAt(); got != fl {
		t.Fatal("the container's own flow kept the client's place")
	}
	if n := e.u.Flows(); n != 1 {
		t.Errorf("%d flows, want the client's alone", n)
	}
	if _, _, ok := e.u.tbl.Load().Get(0, e.near); ok {
		t.Error("the container's own flow's entry is left")
	}
	e.answeredFromPublished(t)
}
