package hostnet_test

import (
	"net"
	"testing"
	"time"
)

// A container's datagram to the broadcast address of the host's own
// subnet (here 198.51.100.255: to the container, an address beyond its
// gateway like any other) must not be broadcast on the host's network.
// Through the kernel's NAT such a packet is the host's to take (a
// broadcast route of its local table) and is not forwarded (Linux
// forwards no directed broadcast unless bc_forwarding is set);
// slirp4netns's sockets, without SO_BROADCAST, may not send it; and the
// uplink sends echo requests there nowhere (TestIntegrationPingBroadcast).
// But Go's net package sets SO_BROADCAST on every UDP socket it makes,
// so the flow's host socket connected to the broadcast address, and
// every machine on the host's link heard the container.
func TestIntegrationUDPDirectedBroadcast(t *testing.T) {
	e := newEnv(t, envConfig{})
	// The remote machine, a neighbour on the host's link, hears
	// broadcasts to the port as well as unicast.
	srv, err := e.remote.ListenPacket("udp4", "0.0.0.0:5310")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	heard := make(chan string, 16)
	go func() {
		buf := make([]byte, 256)
		for {
			n, _, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			heard <- string(buf[:n])
		}
	}()
	c, err := e.ctr.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		c.WriteTo([]byte("broadcast"), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 255), Port: 5310})
	}
	// Then unicast, which the remote hears: what it heard before is
	// all the broadcast made it hear.
	c.WriteTo([]byte("unicast"), &net.UDPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 5310})
	for {
		select {
		case m := <-heard:
			if m == "unicast" {
				return
			}
			t.Errorf("the host's neighbour heard the container's datagram to the host subnet's broadcast address: %q", m)
		case <-time.After(3 * time.Second):
			t.Fatal("the remote heard nothing, not even the unicast datagram")
		}
	}
}
