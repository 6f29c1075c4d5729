package benchkit

import (
	"context"
	"net"
	"testing"
	"time"
)

// PingPongUDP times a datagram's round trip to a UDPServer, after the
// untimed warm-up ones.
func TestPingPongUDP(t *testing.T) {
	s, err := ServeUDP(here{}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dst := s.c.LocalAddr().(*net.UDPAddr).AddrPort()
	p50, p99, n, err := PingPongUDP(context.Background(), here{}, dst, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d round trips: p50 %v, p99 %v", n, p50, p99)
	if n == 0 || p50 <= 0 || p99 < p50 {
		t.Errorf("%d round trips, p50 %v, p99 %v: want some, 0 < p50 <= p99", n, p50, p99)
	}
}

// A datagram that gets no answer fails the measurement, within the
// answer's timeout, rather than waiting on.
func TestPingPongUDPUnanswered(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // a socket that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, _, n, err := PingPongUDP(context.Background(), here{}, c.LocalAddr().(*net.UDPAddr).AddrPort(), time.Second)
	if err == nil {
		t.Fatalf("%d round trips timed to a socket that never answers", n)
	}
	if d := time.Since(start); d > udpReplyTimeout+time.Second {
		t.Errorf("failed after %v: %v", d, err)
	}
	t.Log(err)
}
