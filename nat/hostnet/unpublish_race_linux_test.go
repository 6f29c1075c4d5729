package hostnet_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/usernat/usernat/nat"
)

// Unpublished while clients keep sending, a UDP port leaves no flow
// behind: Unpublish ends the port's flows, and a flow its reader opens
// for a datagram read just before the socket closed (after Unpublish
// looked) must end too. Left, such a flow kept the closed socket and an
// entry naming it, unreplied, for 30 s: the container's datagrams to
// that client went into the closed socket, not out through a flow of
// their own as after Unpublish they should (TestIntegrationPublishedUDPUnpublish).
func TestIntegrationUnpublishUDPWhileBusy(t *testing.T) {
	e := newEnv(t, envConfig{})
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	p, err := nat.ParsePublish("5353:172.17.0.4:53/udp")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 5353}
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A new client each time: a new flow for each.
				pc, err := e.remote.ListenPacket("udp4", ":0")
				if err != nil {
					return
				}
				for range 5 {
					pc.WriteTo([]byte("x"), to)
				}
				pc.Close()
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for round := range 30 {
		id, err := e.up.Publish(p)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if err := e.up.Unpublish(id); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		for _, en := range e.gw.Table().List() {
			if en.Orig.DstPort == 5353 {
				t.Fatalf("round %d: entry %v of the unpublished port left", round, en)
			}
		}
	}
}
