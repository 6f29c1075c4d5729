package benchkit

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
	"sync/atomic"
	"time"
)

// Interruptible makes ctx's cancellation end c's blocked reads and
// writes; call the returned function when done.
func Interruptible(ctx context.Context, c net.Conn) func() bool {
	return context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

// CtxErr prefers the context's error, which explains an I/O error that
// its cancellation caused.
func CtxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// AskPeer asks the Server at dst, over TCP from inside from, which
// address it sees the client at.
func AskPeer(ctx context.Context, from Place, dst netip.AddrPort) (string, error) {
	c, err := Dial(ctx, from, dst)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(DialTimeout))
	if _, err := c.Write([]byte{modePeer}); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// AskPeerUDP asks the UDPServer at dst, from inside from, which address
// it sees the client at; one datagram each way.
func AskPeerUDP(ctx context.Context, from Place, dst netip.AddrPort) (string, error) {
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
	defer Interruptible(ctx, c)()
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

// Stream sends TCP data from inside from to dst for d, and returns the
// rate the receiver saw, in Gbit/s, and the bytes it counted.
func Stream(ctx context.Context, from Place, dst netip.AddrPort, d time.Duration) (float64, int64, error) {
	c, err := Dial(ctx, from, dst)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	defer Interruptible(ctx, c)()
	end := time.Now().Add(d)
	c.SetDeadline(end.Add(IOGrace))
	buf := make([]byte, streamBuf)
	buf[0] = modeSink // the server counts the rest
	for sent := int64(0); sent < maxStreamBytes && (sent == 0 || time.Now().Before(end)); sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			return 0, 0, CtxErr(ctx, err)
		}
		buf[0] = 0
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, 0, CtxErr(ctx, err)
	}
	var res [16]byte
	if _, err := io.ReadFull(c, res[:]); err != nil {
		return 0, 0, fmt.Errorf("reading the receiver's count: %w", CtxErr(ctx, err))
	}
	n, elapsed := int64(binary.BigEndian.Uint64(res[:8])), time.Duration(binary.BigEndian.Uint64(res[8:]))
	if n <= 0 || elapsed <= 0 {
		return 0, 0, fmt.Errorf("receiver counted %d bytes in %v", n, elapsed)
	}
	return float64(n) * 8 / elapsed.Seconds() / 1e9, n, nil
}

// PingPong sends one byte and waits for it back, over one connection, for
// d, and returns the median and 99th percentile round trip and how many
// round trips it timed (after WarmupPings untimed ones).
func PingPong(ctx context.Context, from Place, dst netip.AddrPort, d time.Duration) (p50, p99 time.Duration, n int, err error) {
	c, err := Dial(ctx, from, dst)
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	defer Interruptible(ctx, c)()
	c.SetDeadline(time.Now().Add(d + IOGrace))
	b := []byte{modeEcho}
	if _, err := c.Write(b); err != nil {
		return 0, 0, 0, CtxErr(ctx, err)
	}
	if _, err := io.ReadFull(c, b); err != nil { // the server echoes the mode byte
		return 0, 0, 0, CtxErr(ctx, err)
	}
	return roundTrips(d, func() error {
		if _, err := c.Write(b); err != nil {
			return CtxErr(ctx, err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return CtxErr(ctx, err)
		}
		return nil
	})
}

// PingPongUDP is PingPong over UDP, to a UDPServer: a 1-byte datagram,
// and the server's answer (the client's address, a line). A datagram
// lost either way is an error: nothing on the benchmark's path should
// lose one while a single one is in flight.
func PingPongUDP(ctx context.Context, from Place, dst netip.AddrPort, d time.Duration) (p50, p99 time.Duration, n int, err error) {
	var c *net.UDPConn
	err = from.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	defer Interruptible(ctx, c)()
	b, answer := []byte{modePeer}, make([]byte, 128)
	return roundTrips(d, func() error {
		c.SetDeadline(time.Now().Add(udpReplyTimeout))
		if _, err := c.Write(b); err != nil {
			return CtxErr(ctx, err)
		}
		if _, err := c.Read(answer); err != nil {
			return fmt.Errorf("no answer from %s: %w", dst, CtxErr(ctx, err))
		}
		return nil
	})
}

// roundTrips runs one round trip after another, WarmupPings untimed and
// then timed for d, and returns the median and 99th percentile and how
// many it timed.
func roundTrips(d time.Duration, once func() error) (p50, p99 time.Duration, n int, err error) {
	samples := make([]time.Duration, 0, 1<<16)
	var end time.Time
	for i := range WarmupPings + maxPings {
		if i == WarmupPings {
			end = time.Now().Add(d)
		} else if i > WarmupPings && !time.Now().Before(end) {
			break
		}
		start := time.Now()
		if err := once(); err != nil {
			return 0, 0, 0, err
		}
		if i >= WarmupPings {
			samples = append(samples, time.Since(start))
		}
	}
	slices.Sort(samples)
	return Percentile(samples, 0.50), Percentile(samples, 0.99), len(samples), nil
}

// Percentile is the nearest-rank percentile p (0 to 1) of sorted samples;
// zero when there are none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// ConnRate opens connections to dst from parallel clients inside from for
// d — connect, one byte each way, the server closes — and returns how
// many completed per second, and how many in all.
func ConnRate(parent context.Context, from Place, dst netip.AddrPort, d time.Duration, parallel int) (float64, int64, error) {
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
				d := net.Dialer{Timeout: DialTimeout}
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

// request is one connection of ConnRate. The client reads to EOF before
// closing, so the server closes first and keeps the TIME_WAIT state; the
// client's ports are free again at once, as with an HTTP/1.0 server.
func request(ctx context.Context, d *net.Dialer, dst netip.AddrPort) error {
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return CtxErr(ctx, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(DialTimeout))
	b := []byte{modeRequest}
	if _, err := c.Write(b); err != nil {
		return CtxErr(ctx, err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return CtxErr(ctx, err)
	}
	if _, err := c.Read(b); err != io.EOF {
		return fmt.Errorf("want EOF after the reply, got %v", CtxErr(ctx, err))
	}
	return nil
}

// Micros is d in microseconds, as the reports print latency.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
