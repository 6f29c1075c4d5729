package hostnet_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/usernat/usernat/nat/hostnet"
)

// The poller reads the socket of every UDP and echo flow and of every
// published UDP port while it lives, and leaves it when the flow ends
// (its entry flushed) or the port is unpublished: a socket left
// subscribed would keep its flow's memory, and its callback, for the
// uplink's life.
func TestIntegrationDatagramReadersLeavePoller(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	base := hostnet.PollerWatches(e.up)
	udpWhoServer(t, e.remote, "198.51.100.2:5300")
	to, _ := net.ResolveUDPAddr("udp", "198.51.100.2:5300")
	const n = 5
	for range n {
		c := openUDPFlow(t, e.ctr, to)
		defer c.Close()
	}
	if out, err := e.ctr.Run(ctx(t), "ping", "-c", "1", "-W", "3", "198.51.100.2"); err != nil || !strings.Contains(string(out), "1 received") {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	const ports = 4
	id := publish(t, e.up, "20000-20003:172.17.0.4:20000-20003/udp")[0]
	if got, want := hostnet.PollerWatches(e.up), base+n+1+ports; got != want {
		t.Errorf("%d flows and %d published ports: %d sockets watched, want %d", n+1, ports, got-base, want-base)
	}
	e.gw.Table().Flush()
	if !waitFor(5*time.Second, func() bool { return e.up.Flows() == 0 }) {
		t.Fatalf("%d flows left after their entries were flushed", e.up.Flows())
	}
	if got := hostnet.PollerWatches(e.up) - base; got != ports {
		t.Errorf("the flows ended: %d sockets watched, want the %d published ports'", got, ports)
	}
	if err := e.up.Unpublish(id); err != nil {
		t.Fatal(err)
	}
	if got := hostnet.PollerWatches(e.up) - base; got != 0 {
		t.Errorf("unpublished: %d sockets still watched", got)
	}
}
