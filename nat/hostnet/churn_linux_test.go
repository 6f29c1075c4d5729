package hostnet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/nat/hostnet"
)

// churnKinds names the kinds of flow a churn opens, in turn.
var churnKinds = [...]string{"outbound TCP", "published TCP", "outbound UDP", "published UDP"}

// churn is an env whose clients open and close flows of every kind at
// once until stopped: the container's own to the remote's echo servers,
// and the remote's through published ports to the container's. Every end
// it opens is tracked, so that stop can close what a gateway's Close
// leaves hanging.
type churn struct {
	e        *env
	watches0 int  // the poller's watches with no flow: the published ports'
	cuts     bool // flows are cut (reset, or left to their deadlines), as Close cuts them: no error
	ctx      context.Context
	cancel   context.CancelFunc // ends the clients' dials
	stopOnce sync.Once
	wg       sync.WaitGroup // the clients

	mu      sync.Mutex
	open    map[io.Closer]bool // nil once stopped
	errs    []error            // flows that carried wrong bytes
	carried [len(churnKinds)]atomic.Int64
}

// newChurn makes a churn's env and servers. Its own check runs after the
// env's cleanup: every goroutine started and socket opened since newChurn
// was called is gone. (Sockets, not every descriptor: busypoll's epoll
// set is made once, by the first uplink.)
func newChurn(t *testing.T) *churn {
	t.Helper()
	socks0, ignore := countSockets(t), goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(ignore); err != nil {
			t.Error(err)
		}
		if !waitFor(10*time.Second, func() bool { return countSockets(t) <= socks0 }) {
			t.Errorf("%d sockets open, were %d", countSockets(t), socks0)
		}
	})
	e := newEnv(t, envConfig{timeouts: conntrack.Timeouts{UDP: 2 * time.Second, UDPStream: 2 * time.Second}})
	c := &churn{e: e, open: map[io.Closer]bool{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	publish(t, e.up, "8080:172.17.0.4:80/tcp", "5353:172.17.0.4:53/udp")
	c.echo(t, e.remote, "198.51.100.2:7000")
	c.echo(t, e.ctr, "172.17.0.4:80")
	udpWhoServer(t, e.remote, "198.51.100.2:5300")
	udpWhoServer(t, e.ctr, "172.17.0.4:53")
	c.watches0 = hostnet.PollerWatches(e.up)
	t.Cleanup(func() { c.stop(t) })
	return c
}

// echo serves TCP on addr in ns until the test ends, sending back what
// it reads, then closing.
func (c *churn) echo(t *testing.T, ns *netns.NS, addr string) {
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				return
			}
			if !c.track(s) {
				continue
			}
			go func() {
				defer c.untrack(s)
				s.SetDeadline(time.Now().Add(connDeadline))
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if _, werr := s.Write(buf[:n]); err != nil || werr != nil {
						return
					}
				}
			}()
		}
	}()
}

// track counts x among the ends open, or closes it once stopped.
func (c *churn) track(x io.Closer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open == nil {
		x.Close()
		return false
	}
	c.open[x] = true
	return true
}

func (c *churn) untrack(x io.Closer) {
	c.mu.Lock()
	delete(c.open, x)
	c.mu.Unlock()
	x.Close()
}

// run starts workers clients, each opening one flow after another, of
// each kind in turn; one TCP flow in three is reset mid-stream.
func (c *churn) run(workers int) {
	e := c.e
	for w := range workers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for i := w; ; i++ {
				if c.ctx.Err() != nil {
					return
				}
				seed, kind, reset := uint64(w)<<32|uint64(i), i%len(churnKinds), i/len(churnKinds)%3 == 2
				var ok bool
				var err error
				switch kind {
				case 0:
					ok, err = c.tcp(e.ctr, "198.51.100.2:7000", seed, reset)
				case 1:
					ok, err = c.tcp(e.remote, "198.51.100.1:8080", seed, reset)
				case 2:
					ok, err = c.udp(e.ctr, "198.51.100.2:5300", seed)
				case 3:
					ok, err = c.udp(e.remote, "198.51.100.1:5353", seed)
				}
				c.mu.Lock()
				if c.open != nil { // what stop cut short is no flow's fault
					if err != nil {
						c.errs = append(c.errs, fmt.Errorf("%s, seed %#x: %w", churnKinds[kind], seed, err))
					}
					if ok {
						c.carried[kind].Add(1)
					}
				}
				c.mu.Unlock()
			}
		}()
	}
}

// tcp sends the stream seed, of a length of its own, through the echo
// server at addr, and checks what comes back; ok is whether all of it
// did. When reset, it resets the connection after the first KiB back.
// Unless c.cuts, nothing else may end a connection: a failed dial, a
// reset or a deadline is an error. With c.cuts, only bytes lost or wrong
// are. A reset may read as a clean end: the writer, still sending, took
// its error (ECONNRESET), and Linux's reads find only the end of stream
// after it (tcp_recvmsg: RCV_SHUTDOWN, sk_err gone). A FIN that came
// first would have made the writer's error EPIPE (tcp_reset in
// CLOSE_WAIT), so a stream cut short by one still counts.
func (c *churn) tcp(ns *netns.NS, addr string, seed uint64, reset bool) (ok bool, err error) {
	dctx, cancel := context.WithTimeout(c.ctx, connDeadline)
	defer cancel()
	x, err := ns.Dial(dctx, "tcp", addr)
	if err != nil && !c.cuts {
		return false, err
	}
	if err != nil || !c.track(x) {
		return false, nil
	}
	defer c.untrack(x)
	x.SetDeadline(time.Now().Add(connDeadline))
	n := int64(1 + seed*7919%(64<<10))
	sent := make(chan struct{})
	var werr error // read once sent is closed
	go func() {
		defer close(sent)
		if werr = sendStream(x, seed, n); werr == nil {
			x.(*net.TCPConn).CloseWrite()
		}
	}()
	r, want := io.Reader(x), n
	if reset {
		r, want = io.LimitReader(x, 1024), min(n, 1024)
	}
	got, err := checkStream(r, seed)
	if reset {
		x.(*net.TCPConn).SetLinger(0)
		x.Close()
	}
	<-sent
	var op *net.OpError
	switch {
	case errors.As(err, &op) && c.cuts:
		return false, nil
	case err != nil:
		return false, err
	case got != want && errors.Is(werr, syscall.ECONNRESET) && c.cuts:
		return false, nil
	case got != want && errors.Is(werr, syscall.ECONNRESET):
		return false, fmt.Errorf("reset after %d bytes of %d", got, want)
	case got != want:
		return false, fmt.Errorf("the stream ended after %d bytes of %d", got, want)
	}
	return true, nil
}

// udp sends a datagram of the stream seed to the echo server at addr, up
// to three times, and checks the answer.
func (c *churn) udp(ns *netns.NS, addr string, seed uint64) (ok bool, err error) {
	pc, err := ns.ListenPacket("udp", ":0")
	if err != nil || !c.track(pc) {
		return false, nil
	}
	defer c.untrack(pc)
	to, _ := net.ResolveUDPAddr("udp", addr)
	msg := make([]byte, 1+seed*7919%1400)
	stream(seed).Read(msg)
	buf := make([]byte, 2048)
	for range 3 {
		pc.WriteTo(msg, to)
		pc.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		if from.String() != addr || !bytes.HasSuffix(buf[:n], msg) {
			return false, fmt.Errorf("an answer of %d bytes from %v, not the %d sent", n, from, len(msg))
		}
		return true, nil
	}
	return false, nil
}

// stop stops the clients, closing every end still open, and fails the
// test for each flow that carried wrong bytes.
func (c *churn) stop(t *testing.T) {
	c.stopOnce.Do(func() {
		c.cancel()
		c.mu.Lock()
		for x := range c.open {
			x.Close()
		}
		c.open = nil
		c.mu.Unlock()
		done := make(chan struct{})
		go func() { c.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the churn's clients did not end")
		}
		for _, err := range c.errs {
			t.Error(err)
		}
	})
}

// countSockets counts this process's open sockets.
func countSockets(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, en := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + en.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// hostnetStacks returns the stacks of the goroutines running the
// uplink's code, but not the tests'.
func hostnetStacks() string {
	buf := make([]byte, 4<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "usernat/nat/hostnet.") && !strings.Contains(g, "hostnet_test.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// Twelve clients at once open and close flows of every kind for 3 s,
// some TCP ones reset mid-stream by the client: every byte that arrives
// is the right one of its stream, and every other TCP stream arrives
// whole, neither reset nor ended early. Once they stop, the uplink lets
// every flow go (the TCP ones as their ends close, the UDP ones as their
// entries expire), each opened flow released, and its tables are empty
// again.
func TestIntegrationChurnSettles(t *testing.T) {
	c := newChurn(t)
	e := c.e
	c.run(12)
	time.Sleep(3 * time.Second)
	c.stop(t)
	for i := range c.carried {
		if c.carried[i].Load() == 0 {
			t.Errorf("no %s flow carried all its bytes", churnKinds[i])
		}
	}
	settled := func() bool {
		for k, v := range hostnet.InternalState(e.up) {
			if k == "pollerWatches" && v != c.watches0 || k != "pollerWatches" && v != 0 {
				return false
			}
		}
		return true
	}
	if !waitFor(20*time.Second, settled) {
		t.Errorf("the uplink's state once the clients stopped: %v (the published ports' watches: %d)", hostnet.InternalState(e.up), c.watches0)
	}
	n := e.up.Counters()
	// Released counts the flows that failed while being opened too (the
	// dials stop cut short).
	if opened := n["tcp_opened"] + n["udp_opened"] + n["inbound_opened"]; n["released"] < opened {
		t.Errorf("%d flows opened, %d released; counters %v", opened, n["released"], n)
	}
	t.Logf("carried %d %d %d %d; counters %v", c.carried[0].Load(), c.carried[1].Load(), c.carried[2].Load(), c.carried[3].Load(), n)
}

// Gateway.Close (twice at once, and the uplink's own Close with them) in
// the middle of the churn, early or late, returns having stopped every
// goroutine of the uplink's; once the test's own ends close, no socket
// and no goroutine is left. No flow carried wrong bytes meanwhile.
func TestIntegrationChurnClose(t *testing.T) {
	for _, after := range []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond} {
		t.Run(after.String(), func(t *testing.T) {
			c := newChurn(t)
			c.cuts = true
			c.run(12)
			time.Sleep(after)
			var wg sync.WaitGroup
			for _, cl := range []func() error{c.e.gw.Close, c.e.gw.Close, c.e.up.Close} {
				wg.Add(1)
				go func() { defer wg.Done(); cl() }()
			}
			closed := make(chan struct{})
			go func() { wg.Wait(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(20 * time.Second):
				t.Fatalf("Close has not returned after 20 s:\n%s", hostnetStacks())
			}
			if s := hostnetStacks(); s != "" {
				t.Errorf("goroutines of the uplink's left after Close:\n%s", s)
			}
			c.stop(t)
		})
	}
}
