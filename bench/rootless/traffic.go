package main

// The clients and servers are bench/nat's (traffic.go there), on any
// place rather than only a *netns.NS, returning how much they moved, and
// with a UDP server that reports the peer it saw.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The first byte a client sends picks what the server does with the
// connection; one published port carries every measurement. The client
// always speaks first: this pasta does not finish an inbound handshake
// until the client sends (see README.md).
const (
	modePeer    = 'P' // reply with the address the server sees the client at, then close
	modeRequest = 'R' // reply with one byte, then close (server first, as HTTP/1.0 does)
	modeEcho    = 'E' // echo one byte at a time
	modeSink    = 'S' // read to EOF, then reply with the byte count and the time taken
)

// Bounds on every loop, besides the time each runs for.
const (
	streamBuf       = 256 << 10
	maxStreamBytes  = 1 << 40
	maxPings        = 1 << 20
	warmupPings     = 100
	maxConns        = 200_000
	dialTimeout     = 5 * time.Second
	ioGrace         = 30 * time.Second // beyond -duration, for a connection's deadline
	probeTimeout    = 10 * time.Second
	probeInterval   = 250 * time.Millisecond
	udpReplyTimeout = 500 * time.Millisecond
)

func listen(in place, network, addr string) (l net.Listener, err error) {
	err = in.Do(func() error {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// server answers the clients of this file on one listener until Close.
type server struct {
	l     net.Listener
	limit time.Duration // deadline of each connection
	wg    sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func serve(in place, addr string, limit time.Duration) (*server, error) {
	l, err := listen(in, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &server{l: l, limit: limit, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// EMFILE and the like: back off instead of spinning.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the server and its connections and waits for them.
func (s *server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.l.Close()
	s.wg.Wait()
}

func (s *server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.limit))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	switch b[0] {
	case modePeer:
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		io.WriteString(c, peer.String()+"\n")
	case modeRequest:
		c.Write(b[:])
	case modeEcho:
		for range warmupPings + maxPings + 1 {
			if _, err := c.Write(b[:]); err != nil {
				return
			}
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
		}
	case modeSink:
		sink(c)
	}
}

// sink counts what arrives until EOF and replies with the count and the
// time from the first byte to EOF: the rate the receiver saw.
func sink(c net.Conn) {
	buf := make([]byte, streamBuf)
	start := time.Now()
	var n int64
	for n <= maxStreamBytes {
		m, err := c.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	var res [16]byte
	binary.BigEndian.PutUint64(res[:8], uint64(n))
	binary.BigEndian.PutUint64(res[8:], uint64(time.Since(start)))
	c.Write(res[:])
}

// udpServer answers every datagram with the address it came from, until
// Close.
type udpServer struct {
	c    net.PacketConn
	done chan struct{}
}

func serveUDP(in place, addr string) (*udpServer, error) {
	var c net.PacketConn
	err := in.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &udpServer{c: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			_, from, err := c.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			peer := from.(*net.UDPAddr).AddrPort().Addr().Unmap()
			c.WriteTo([]byte(peer.String()+"\n"), from)
		}
	}()
	return s, nil
}

func (s *udpServer) Close() {
	s.c.Close()
	<-s.done
}

// dial connects from inside a place.
func dial(ctx context.Context, from place, dst netip.AddrPort) (c net.Conn, err error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	err = from.Do(func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", dst.String())
		return err
	})
	return c, err
}

// interruptible makes ctx's cancellation end c's blocked reads and
// writes; call the returned function when done.
func interruptible(ctx context.Context, c net.Conn) func() bool {
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

// ctxErr prefers the context's error, which explains an I/O error that
// its cancellation caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// probe asks the server at dst, from inside from, which address it sees
// the client at, over TCP or UDP, retrying while the path settles. It
// also warms up the path before anything is timed.
func probe(ctx context.Context, from place, network string, dst netip.AddrPort) (netip.Addr, error) {
	ask := askPeer
	if network == "udp" {
		ask = askPeerUDP
	}
	deadline := time.Now().Add(probeTimeout)
	var err error
	for {
		var peer string
		peer, err = ask(ctx, from, dst)
		if err == nil {
			a, perr := netip.ParseAddr(peer)
			if perr != nil {
				return netip.Addr{}, fmt.Errorf("%s server at %s answered %q", network, dst, peer)
			}
			return a, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(probeInterval)
	}
	return netip.Addr{}, fmt.Errorf("%s %s unreachable: %w", network, dst, ctxErr(ctx, err))
}

func askPeer(ctx context.Context, from place, dst netip.AddrPort) (string, error) {
	c, err := dial(ctx, from, dst)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := c.Write([]byte{modePeer}); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

func askPeerUDP(ctx context.Context, from place, dst netip.AddrPort) (string, error) {
	var c *net.UDPConn
	err := from.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	defer interruptible(ctx, c)()
	c.SetDeadline(time.Now().Add(udpReplyTimeout))
	if _, err := c.Write([]byte{modePeer}); err != nil {
		return "", err
	}
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// stream sends TCP data from inside from to dst for d, and returns the
// rate the receiver saw, in Gbit/s, and the bytes it counted.
func stream(ctx context.Context, from place, dst netip.AddrPort, d time.Duration) (float64, int64, error) {
	c, err := dial(ctx, from, dst)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	defer interruptible(ctx, c)()
	end := time.Now().Add(d)
	c.SetDeadline(end.Add(ioGrace))
	buf := make([]byte, streamBuf)
	buf[0] = modeSink // the server counts the rest
	for sent := int64(0); sent < maxStreamBytes && (sent == 0 || time.Now().Before(end)); sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			return 0, 0, ctxErr(ctx, err)
		}
		buf[0] = 0
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, 0, ctxErr(ctx, err)
	}
	var res [16]byte
	if _, err := io.ReadFull(c, res[:]); err != nil {
		return 0, 0, fmt.Errorf("reading the receiver's count: %w", ctxErr(ctx, err))
	}
	n, elapsed := int64(binary.BigEndian.Uint64(res[:8])), time.Duration(binary.BigEndian.Uint64(res[8:]))
	if n <= 0 || elapsed <= 0 {
		return 0, 0, fmt.Errorf("receiver counted %d bytes in %v", n, elapsed)
	}
	return float64(n) * 8 / elapsed.Seconds() / 1e9, n, nil
}

// pingPong sends one byte and waits for it back, over one connection, for
// d, and returns the median and 99th percentile round trip and how many
// round trips it timed.
func pingPong(ctx context.Context, from place, dst netip.AddrPort, d time.Duration) (p50, p99 time.Duration, n int, err error) {
	c, err := dial(ctx, from, dst)
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	defer interruptible(ctx, c)()
	c.SetDeadline(time.Now().Add(d + ioGrace))
	b := []byte{modeEcho}
	if _, err := c.Write(b); err != nil {
		return 0, 0, 0, ctxErr(ctx, err)
	}
	if _, err := io.ReadFull(c, b); err != nil { // the server echoes the mode byte
		return 0, 0, 0, ctxErr(ctx, err)
	}
	samples := make([]time.Duration, 0, 1<<16)
	var end time.Time
	for i := range warmupPings + maxPings {
		if i == warmupPings {
			end = time.Now().Add(d)
		} else if i > warmupPings && !time.Now().Before(end) {
			break
		}
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return 0, 0, 0, ctxErr(ctx, err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, 0, 0, ctxErr(ctx, err)
		}
		if i >= warmupPings {
			samples = append(samples, time.Since(start))
		}
	}
	slices.Sort(samples)
	return percentile(samples, 0.50), percentile(samples, 0.99), len(samples), nil
}

// percentile is the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// connRate opens connections to dst from parallel clients inside from for
// d — connect, one byte each way, the server closes — and returns how
// many completed per second, and how many in all.
func connRate(parent context.Context, from place, dst netip.AddrPort, d time.Duration, parallel int) (float64, int64, error) {
	var done atomic.Int64
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	errc := make(chan error, parallel)
	start := time.Now()
	end := start.Add(d)
	for range parallel {
		// Each client runs on a thread inside the namespace, so its
		// sockets are made there without a namespace switch per dial.
		go func() {
			errc <- from.Do(func() error {
				d := net.Dialer{Timeout: dialTimeout}
				for done.Load() < maxConns && time.Now().Before(end) && ctx.Err() == nil {
					if err := request(ctx, &d, dst); err != nil {
						cancel() // stop the others: one failure fails the run
						return err
					}
					done.Add(1)
				}
				return nil
			})
		}()
	}
	var err error
	for range parallel {
		// The first failure cancels the others: keep it, not theirs.
		if e := <-errc; e != nil && (err == nil || errors.Is(err, context.Canceled)) {
			err = e
		}
	}
	elapsed := time.Since(start)
	if parent.Err() != nil {
		return 0, 0, parent.Err()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("after %d connections: %w", done.Load(), err)
	}
	return float64(done.Load()) / elapsed.Seconds(), done.Load(), nil
}

// request is one connection of connRate. The client reads to EOF before
// closing, so the server closes first and keeps the TIME_WAIT state; the
// client's ports are free again at once, as with an HTTP/1.0 server.
func request(ctx context.Context, d *net.Dialer, dst netip.AddrPort) error {
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return ctxErr(ctx, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(dialTimeout))
	b := []byte{modeRequest}
	if _, err := c.Write(b); err != nil {
		return ctxErr(ctx, err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return ctxErr(ctx, err)
	}
	if _, err := c.Read(b); err != io.EOF {
		return fmt.Errorf("want EOF after the reply, got %v", ctxErr(ctx, err))
	}
	return nil
}
