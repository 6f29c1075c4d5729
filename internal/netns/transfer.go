package netns

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
)

// Transfer sends n pseudo-random bytes over TCP from a client in from,
// dialling dial, to a server in to listening on listen (the same address,
// or another one a NAT leads to), checks that the same bytes arrived, and
// returns the client address the server saw. It gives up after a minute.
func Transfer(from *NS, dial string, to *NS, listen string, n int) (netip.AddrPort, error) {
	l, err := to.Listen("tcp", listen)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer l.Close()
	deadline := time.Now().Add(time.Minute)
	type result struct {
		sum  [32]byte
		n    int64
		peer netip.AddrPort
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		h := sha256.New()
		m, err := io.Copy(h, c)
		peer, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		resc <- result{[32]byte(h.Sum(nil)), m, peer, err}
	}()

	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", dial)
	if err != nil {
		l.Close()
		<-resc
		return netip.AddrPort{}, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		l.Close()
		return netip.AddrPort{}, fmt.Errorf("send to %s: %w", dial, err)
	}
	c.(*net.TCPConn).CloseWrite()
	r := <-resc
	if r.err != nil {
		return netip.AddrPort{}, fmt.Errorf("receive on %s: %w", listen, r.err)
	}
	if r.n != int64(n) || r.sum != sha256.Sum256(data) {
		return r.peer, fmt.Errorf("%s → %s: received %d bytes, same checksum %v; sent %d", dial, listen, r.n, r.sum == sha256.Sum256(data), n)
	}
	return r.peer, nil
}

// UDPEcho serves UDP on addr in ns until the returned closer is closed:
// it answers each datagram with the address it came from, a space, and
// the datagram, so a test learns both what arrived and who the server saw.
func UDPEcho(ns *NS, addr string) (io.Closer, error) {
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()+" "+string(buf[:n])), from)
		}
	}()
	return pc, nil
}

// SendUDP sends n one-byte datagrams from a socket in ns to to, as fast
// as they go: traffic for a test that counts packets (a link's counters,
// a queue that overflows), not one that expects answers.
func SendUDP(ns *NS, to netip.AddrPort, n int) error {
	pc, err := ns.ListenPacket("udp4", ":0")
	if err != nil {
		return err
	}
	defer pc.Close()
	dst := net.UDPAddrFromAddrPort(to)
	for range n {
		if _, err := pc.WriteTo([]byte("x"), dst); err != nil {
			return err
		}
	}
	return nil
}
