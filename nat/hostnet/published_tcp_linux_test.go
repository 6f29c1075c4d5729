package hostnet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/nat"
	"github.com/usernat/usernat/nat/hostnet"
)

// TCP through a published port, end to end: a client in the remote
// namespace connects to the host's address, and the uplink carries it to
// a server in the container. The test holds both ends, so each behaviour
// is asserted on the side that observes it: bytes, ends of stream,
// resets, and flow control.

// pubTCPDial is where the remote's clients connect: the host's port 8080,
// published to the container's port 80.
const pubTCPDial = "198.51.100.1:8080"

// connDeadline bounds every operation on a test's connections, so a hang
// fails the test rather than blocking it.
const connDeadline = 5 * time.Second

// pubTCP is a gateway whose host port 8080 is published to the
// container's port 80; l listens there, unless the test wants no server.
type pubTCP struct {
	*env
	l *net.TCPListener
}

func newPubTCP(t *testing.T, ec envConfig, listen bool) *pubTCP {
	t.Helper()
	p := &pubTCP{env: newEnv(t, ec)}
	publish(t, p.up, "8080:172.17.0.4:80/tcp")
	if listen {
		l, err := p.ctr.Listen("tcp", "172.17.0.4:80")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		p.l = l.(*net.TCPListener)
	}
	return p
}

// dial connects a client in the remote namespace to the published port.
func (p *pubTCP) dial(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := p.remote.Dial(ctx(t), "tcp", pubTCPDial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(connDeadline))
	return c.(*net.TCPConn)
}

// accept returns the container's end of the next connection.
func (p *pubTCP) accept(t *testing.T) *net.TCPConn {
	t.Helper()
	p.l.SetDeadline(time.Now().Add(2 * time.Second))
	c, err := p.l.AcceptTCP()
	if err != nil {
		t.Fatalf("the container's server accepted nothing: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(connDeadline))
	return c
}

// pair connects a client and returns both ends: the client's, and the
// container server's.
func (p *pubTCP) pair(t *testing.T) (client, srv *net.TCPConn) {
	t.Helper()
	client = p.dial(t)
	return client, p.accept(t)
}

// outPair connects the container to a server in the remote namespace,
// its own connection out, and returns both ends: the server's, and the
// container's.
func outPair(t *testing.T, e *env) (remote, ctr *net.TCPConn) {
	t.Helper()
	l, err := e.remote.Listen("tcp", "198.51.100.2:7010")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := e.ctr.Dial(ctx(t), "tcp", "198.51.100.2:7010")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("the remote server accepted nothing: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	for _, x := range []net.Conn{c, s} {
		x.SetDeadline(time.Now().Add(connDeadline))
	}
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// tcpPair is a connection through a new gateway, and its two ends: a
// published port's client's and the container server's, or when out the
// container's own connection's, the remote server's end and the
// container's.
func tcpPair(t *testing.T, out bool) (e *env, client, srv *net.TCPConn) {
	t.Helper()
	if out {
		e = newEnv(t, envConfig{})
		client, srv = outPair(t, e)
		return e, client, srv
	}
	p := newPubTCP(t, envConfig{}, true)
	client, srv = p.pair(t)
	return p.env, client, srv
}

// stream is the pseudo-random byte stream seed: what one end sends and
// the other checks.
func stream(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

// sendStream writes the first n bytes of the stream seed to w.
func sendStream(w io.Writer, seed uint64, n int64) error {
	_, err := io.CopyN(w, stream(seed), n)
	return err
}

// transfer sends the first n bytes of the stream seed from one end of a
// connection to the other, then closes its side, both ends given 20 s;
// it returns how long the arrival took, the sender's error (once it is
// done), and what checkStream says of what arrived.
func transfer(from, to *net.TCPConn, seed uint64, n int64) (took time.Duration, sent <-chan error, got int64, err error) {
	from.SetDeadline(time.Now().Add(20 * time.Second))
	to.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		err := sendStream(from, seed, n)
		if err == nil {
			err = from.CloseWrite()
		}
		done <- err
	}()
	got, err = checkStream(to, seed)
	return time.Since(start), done, got, err
}

// checkStream reads r to its end and returns how many bytes came; the
// error says where they first differ from the stream seed, or how r
// ended when it did not end cleanly.
func checkStream(r io.Reader, seed uint64) (int64, error) {
	want := stream(seed)
	got, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	var n int64
	for {
		m, err := r.Read(got)
		if m > 0 {
			want.Read(exp[:m])
			if !bytes.Equal(got[:m], exp[:m]) {
				i := 0
				for got[i] == exp[i] {
					i++
				}
				return n + int64(i), fmt.Errorf("byte %d differs from what was sent", n+int64(i))
			}
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// bothWays sends n bytes each way at once between client and srv, each
// followed by its end of stream, and checks what each side receives.
func bothWays(t *testing.T, client, srv *net.TCPConn, n int64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(c *net.TCPConn, seed uint64, who string) {
		defer wg.Done()
		if err := sendStream(c, seed, n); err != nil {
			errs <- fmt.Errorf("%s sending: %w", who, err)
			return
		}
		if err := c.CloseWrite(); err != nil {
			errs <- fmt.Errorf("%s closing its write side: %w", who, err)
		}
	}
	recv := func(c *net.TCPConn, seed uint64, who string) {
		defer wg.Done()
		if got, err := checkStream(c, seed); err != nil || got != n {
			errs <- fmt.Errorf("%s received %d bytes of %d, then %v", who, got, n, err)
		}
	}
	wg.Add(4)
	go send(client, 1, "the client")
	go send(srv, 2, "the container")
	go recv(srv, 1, "the container")
	go recv(client, 2, "the client")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// 32 MiB each way at once over one connection, checked byte for byte, and
// each end of stream seen after the last byte; the container sees the
// client's own address.
func TestIntegrationPublishedTCPBulk(t *testing.T) {
	const n = 32 << 20
	p := newPubTCP(t, envConfig{}, true)
	client, srv := p.pair(t)
	if got, want := srv.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Errorf("the container sees the client as %s, want %s", got, want)
	}
	if got := srv.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != remoteAddr.Addr() {
		t.Errorf("the container sees the client at %v, want the remote %v", got, remoteAddr.Addr())
	}
	start := time.Now()
	bothWays(t, client, srv, n)
	t.Logf("%d MiB each way in %v", n>>20, time.Since(start))
	if err := srv.Close(); err != nil {
		t.Errorf("the container closing: %v", err)
	}
	if err := client.Close(); err != nil {
		t.Errorf("the client closing: %v", err)
	}
}

// Either side may close its write side and go on receiving: the other
// reads the end of stream, and its answer still arrives whole, followed by
// its own end of stream.
func TestIntegrationPublishedTCPHalfClose(t *testing.T) {
	const n = 256 << 10
	for _, tc := range []struct {
		name string
		// first closes its write side first; second answers after
		// reading first's end of stream.
		clientFirst bool
	}{{"client first", true}, {"container first", false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPubTCP(t, envConfig{}, true)
			client, srv := p.pair(t)
			first, second := client, srv
			firstName, secondName := "client", "container"
			if !tc.clientFirst {
				first, second = srv, client
				firstName, secondName = "container", "client"
			}
			// The second side, in its goroutine: read to the end, then
			// answer, then close.
			done := make(chan error, 1)
			go func() {
				if got, err := checkStream(second, 1); err != nil || got != n {
					done <- fmt.Errorf("the %s received %d bytes of %d, then %v", secondName, got, n, err)
					return
				}
				if err := sendStream(second, 2, n); err != nil {
					done <- fmt.Errorf("the %s answering after the end of stream: %w", secondName, err)
					return
				}
				done <- second.Close()
			}()
			if err := sendStream(first, 1, n); err != nil {
				t.Fatalf("the %s sending: %v", firstName, err)
			}
			if err := first.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := checkStream(first, 2)
			if err != nil || got != n {
				t.Errorf("after closing its write side, the %s received %d bytes of %d, then %v", firstName, got, n, err)
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
}

// The container writes 1 MiB and closes while the client has read none
// of it: the client, reading late, still gets all of it, then a clean end
// of stream.
func TestIntegrationPublishedTCPContainerClosesFirst(t *testing.T) {
	const n = 1 << 20
	p := newPubTCP(t, envConfig{}, true)
	client, srv := p.pair(t)
	closed := make(chan error, 1)
	go func() {
		err := sendStream(srv, 3, n)
		if err == nil {
			err = srv.Close()
		}
		closed <- err
	}()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("the container writing and closing: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the container could not write 1 MiB and close in 2 s with the client not reading: the case under test did not happen")
	}
	time.Sleep(300 * time.Millisecond) // the client is slow to read
	if got, err := checkStream(client, 3); err != nil || got != n {
		t.Fatalf("the client received %d bytes of %d, then %v; want all, then the end of stream", got, n, err)
	}
}

// A reset on either side reaches the other as a reset, not as an end of
// stream, within 2 s, while it is blocked reading: through a published
// port, and on a container's own connection out (where the client is the
// remote server).
func TestIntegrationTCPReset(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fromClient bool
		out        bool
	}{
		{"from the client", true, false}, {"from the container", false, false},
		{"outbound, from the server", true, true}, {"outbound, from the container", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, client, srv := tcpPair(t, tc.out)
			// A byte each way first: the flow is carried end to end.
			b := make([]byte, 1)
			if _, err := client.Write([]byte("q")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(srv, b); err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Write([]byte("a")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(client, b); err != nil {
				t.Fatal(err)
			}
			resetter, reader, readerName := client, srv, "container"
			if !tc.fromClient {
				resetter, reader, readerName = srv, client, "client"
			}
			const wait = 100 * time.Millisecond // for the reader to block
			reader.SetReadDeadline(time.Now().Add(wait + 2*time.Second))
			type result struct {
				n   int
				err error
			}
			res := make(chan result, 1)
			go func() {
				n, err := reader.Read(make([]byte, 64))
				res <- result{n, err}
			}()
			time.Sleep(wait)
			resetter.SetLinger(0)
			if err := resetter.Close(); err != nil {
				t.Fatal(err)
			}
			r := <-res
			switch {
			case errors.Is(r.err, os.ErrDeadlineExceeded):
				t.Fatalf("the %s's read did not return within 2 s of the reset", readerName)
			case r.n != 0 || !errors.Is(r.err, syscall.ECONNRESET):
				t.Fatalf("the %s read %d bytes, %v; want a connection reset", readerName, r.n, r.err)
			}
			if !waitFor(2*time.Second, func() bool { return p.up.Flows() == 0 }) {
				t.Errorf("%d flows carried after the reset", p.up.Flows())
			}
		})
	}
}

// With nothing listening on the container's port, the container answers
// the uplink's SYN with a reset, and the client the host accepted is
// reset at once, with no data.
func TestIntegrationPublishedTCPNoServer(t *testing.T) {
	p := newPubTCP(t, envConfig{}, false)
	c, err := p.remote.Dial(ctx(t), "tcp", pubTCPDial)
	n := 0
	if err == nil {
		// The host accepted the client; the reset follows.
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err = c.Read(make([]byte, 64))
	} // else the reset came before connect(2) returned, as it may on a busy machine
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("the client was neither reset nor closed within 2 s")
	case n != 0 || !errors.Is(err, syscall.ECONNRESET):
		t.Fatalf("the client read %d bytes, %v; want a connection reset", n, err)
	}
	if c := p.up.Counters()["inbound_opened"]; c != 0 {
		t.Errorf("%d flows opened into the container, which has no server", c)
	}
	if !waitFor(2*time.Second, func() bool { return p.up.Flows() == 0 }) {
		t.Errorf("%d flows carried", p.up.Flows())
	}
}

// A reader that stops reading stops its writer: the writer's writes block
// once the path's buffers are full, well short of what an unbounded
// buffer would take in a second, no CPU spins meanwhile, and everything
// written arrives intact when the reader reads again. Both ways, through a published port and
// on a container's own connection out.
func TestIntegrationTCPBackPressure(t *testing.T) {
	const (
		// The reader reads nothing for stall, and longer if need be
		// (up to maxStall, on a busy machine), until no write of the
		// writer's has completed for idle: it is blocked, not slowed.
		stall    = time.Second
		idle     = 300 * time.Millisecond
		maxStall = 3 * time.Second
		// most is what the writer may get through meanwhile: the
		// buffers of two sockets and the splice's window between them
		// hold a few MiB; an unbounded buffer takes hundreds of MiB in
		// a second.
		most = 64 << 20
	)
	for _, tc := range []struct {
		name           string
		clientWrites   bool
		writer, reader string
		out            bool // the container's own connection to a server, not a published port's client
	}{
		{"container does not read", true, "client", "container", false},
		{"client does not read", false, "container", "client", false},
		{"outbound, container does not read", true, "server", "container", true},
		{"outbound, server does not read", false, "container", "server", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, client, srv := tcpPair(t, tc.out)
			w, r := client, srv
			if !tc.clientWrites {
				w, r = srv, client
			}
			w.SetDeadline(time.Now().Add(maxStall + connDeadline))
			r.SetDeadline(time.Now().Add(maxStall + connDeadline))
			var written atomic.Int64
			var stop atomic.Bool
			wdone := make(chan error, 1)
			go func() {
				src := stream(4)
				buf := make([]byte, 64<<10)
				for !stop.Load() {
					src.Read(buf)
					if _, err := w.Write(buf); err != nil {
						wdone <- err
						return
					}
					written.Add(int64(len(buf)))
				}
				wdone <- w.CloseWrite()
			}()
			start := time.Now()
			last, changed := int64(0), start
			for {
				time.Sleep(10 * time.Millisecond)
				now := time.Now()
				if n := written.Load(); n != last {
					last, changed = n, now
				}
				if now.Sub(start) >= stall && now.Sub(changed) >= idle || now.Sub(start) >= maxStall || last >= most {
					break
				}
			}
			blocked := time.Since(changed) >= idle
			if blocked {
				// Blocked, nothing spins: the process (the uplink
				// and the test's ends) uses a small part of a CPU
				// while the writer waits; a loop waiting for the
				// window to open would use all of one.
				before := cpuTime(t)
				time.Sleep(spinWindow)
				if used := cpuTime(t) - before; used > spinWindow/2 {
					t.Errorf("the process used %v of CPU in %v while the %s was blocked: something spins", used, spinWindow, tc.writer)
				}
			}
			stop.Store(true)
			t.Logf("the %s wrote %d KiB in %v while the %s did not read", tc.writer, last>>10, time.Since(start).Round(time.Millisecond), tc.reader)
			if last >= most {
				t.Errorf("the %s wrote %d MiB while the %s read nothing, want under %d MiB", tc.writer, last>>20, tc.reader, most>>20)
			} else if !blocked {
				t.Errorf("the %s's writes went on for %v (%d KiB) while the %s read nothing; want them blocked", tc.writer, maxStall, last>>10, tc.reader)
			}
			if last == 0 {
				t.Errorf("the %s wrote nothing", tc.writer)
			}
			got, err := checkStream(r, 4)
			if werr := <-wdone; werr != nil {
				t.Fatalf("the %s writing, once the %s read: %v", tc.writer, tc.reader, werr)
			}
			if err != nil || got != written.Load() {
				t.Fatalf("the %s received %d bytes of %d, then %v", tc.reader, got, written.Load(), err)
			}
		})
	}
}

// spinWindow is how long TestIntegrationTCPBackPressure watches the CPU
// the process uses while a writer is blocked.
const spinWindow = 500 * time.Millisecond

// cpuTime is the CPU time, user and system, the test process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// 200 clients connected at once each send a request and get its answer;
// once they have all closed, the uplink carries no flow, and has given
// back the sockets and goroutines it used, without waiting for the
// conntrack entries to expire.
func TestIntegrationPublishedTCPMany(t *testing.T) {
	const (
		clients = 200
		size    = 1 << 10
	)
	p := newPubTCP(t, envConfig{}, true)
	// answer is the container's reply to req: each byte inverted, so a
	// reply carried to the wrong client shows.
	answer := func(req []byte) []byte {
		a := make([]byte, len(req))
		for i, b := range req {
			a[i] = ^b
		}
		return a
	}
	srvErrs := make(chan error, clients)
	go func() {
		for {
			c, err := p.l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(connDeadline))
				req := make([]byte, size)
				if _, err := io.ReadFull(c, req); err != nil {
					srvErrs <- fmt.Errorf("the container reading a request: %w", err)
					return
				}
				if _, err := c.Write(answer(req)); err != nil {
					srvErrs <- fmt.Errorf("the container answering: %w", err)
					return
				}
				if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
					srvErrs <- fmt.Errorf("the container, after the request: %d more bytes, %v; want the end of stream", len(rest), err)
				}
			}()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	fds0, gor0 := countFDs(t), runtime.NumGoroutine()

	conns := make([]net.Conn, clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	dialErrs := make(chan error, clients)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.remote.Dial(ctx(t), "tcp", pubTCPDial)
			if err != nil {
				dialErrs <- err
				return
			}
			c.SetDeadline(time.Now().Add(connDeadline))
			conns[i] = c
		}()
	}
	wg.Wait()
	close(dialErrs)
	for err := range dialErrs {
		t.Fatalf("a client connecting: %v", err)
	}
	if !waitFor(3*time.Second, func() bool { return p.up.Flows() == clients }) {
		t.Fatalf("%d flows carried with %d clients connected", p.up.Flows(), clients)
	}

	cliErrs := make(chan error, clients)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := make([]byte, size)
			stream(uint64(100 + i)).Read(req)
			if _, err := c.Write(req); err != nil {
				cliErrs <- fmt.Errorf("client %d sending: %w", i, err)
				return
			}
			got := make([]byte, size)
			if _, err := io.ReadFull(c, got); err != nil {
				cliErrs <- fmt.Errorf("client %d reading the answer: %w", i, err)
				return
			}
			if !bytes.Equal(got, answer(req)) {
				cliErrs <- fmt.Errorf("client %d got an answer to another request", i)
				return
			}
			c.(*net.TCPConn).CloseWrite()
			if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
				cliErrs <- fmt.Errorf("client %d, after the answer: %d more bytes, %v; want the end of stream", i, len(rest), err)
			}
			c.Close()
		}()
	}
	wg.Wait()
	close(cliErrs)
	for err := range cliErrs {
		t.Error(err)
	}
	// Each server goroutine reports before it closes, so before its
	// client's end of stream.
	for len(srvErrs) > 0 {
		t.Error(<-srvErrs)
	}
	if t.Failed() {
		t.FailNow()
	}
	if !waitFor(3*time.Second, func() bool { return p.up.Flows() == 0 }) {
		t.Fatalf("%d flows carried after every client closed", p.up.Flows())
	}
	if !waitFor(5*time.Second, func() bool { return countFDs(t) <= fds0 && runtime.NumGoroutine() <= gor0 }) {
		t.Fatalf("file descriptors %d (were %d), goroutines %d (were %d)", countFDs(t), fds0, runtime.NumGoroutine(), gor0)
	}
}

// A server that speaks first (SMTP, SSH) is carried to a client that has
// sent nothing: the uplink opens the container's side at once, not on the
// client's first byte.
func TestIntegrationPublishedTCPServerSpeaksFirst(t *testing.T) {
	const banner = "220 ctr ESMTP ready\r\n"
	p := newPubTCP(t, envConfig{}, true)
	client := p.dial(t)
	srvDone := make(chan error, 1)
	go func() {
		p.l.SetDeadline(time.Now().Add(2 * time.Second))
		c, err := p.l.Accept()
		if err != nil {
			srvDone <- fmt.Errorf("the container's server accepted nothing: %w", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(connDeadline))
		if _, err := io.WriteString(c, banner); err != nil {
			srvDone <- err
			return
		}
		// Then the client's command, and the end of stream.
		b, err := io.ReadAll(c)
		if err == nil && string(b) != "QUIT\r\n" {
			err = fmt.Errorf("the container received %q, want QUIT", b)
		}
		srvDone <- err
	}()
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, len(banner))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != banner {
		t.Fatalf("the client read %q, %v; want the banner %q", got, err, banner)
	}
	if _, err := io.WriteString(client, "QUIT\r\n"); err != nil {
		t.Fatal(err)
	}
	client.CloseWrite()
	if err := <-srvDone; err != nil {
		t.Fatal(err)
	}
}

// A client that sends and resets at once (as a server closing with bytes
// unread does) is a reset to the container too, with a peek offset or
// without: not a clean end of stream after the bytes, which would make a
// stream cut short read as complete.
func TestIntegrationTCPResetAfterData(t *testing.T) {
	for _, peek := range []bool{true, false} {
		t.Run(map[bool]string{true: "peek offset", false: "skipping peek"}[peek], func(t *testing.T) {
			t.Cleanup(hostnet.SetPeekOffset(peek))
			p := newPubTCP(t, envConfig{}, true)
			const rounds = 20
			clean := 0
			for range rounds {
				client, srv := p.pair(t)
				client.Write([]byte(strings.Repeat("x", 3000)))
				client.SetLinger(0)
				client.Close()
				srv.SetReadDeadline(time.Now().Add(3 * time.Second))
				_, err := io.ReadAll(srv)
				switch {
				case err == nil:
					clean++
				case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
				default:
					t.Fatalf("the container read %v", err)
				}
				srv.Close()
			}
			if clean > 0 {
				t.Errorf("of %d clients that reset, %d reached the container as a clean end of stream", rounds, clean)
			}
		})
	}
}

// A container reaching a published port through the gateway's address on
// the bridge is carried by the gateway itself (hairpin, as Docker's DNAT
// takes any local address), not by the uplink: it reaches the service,
// which sees the gateway. Its answers went to the uplink untranslated, and
// the connection hung.
func TestIntegrationPublishedHairpin(t *testing.T) {
	e := newEnv(t, envConfig{})
	whoServer(t, e.ctr, "172.17.0.4:80")
	publish(t, e.up, "8080:172.17.0.4:80/tcp")
	seen, err := who(t, e.ctr, "172.17.0.1:8080")
	if err != nil || !strings.HasPrefix(seen, "172.17.0.1:") {
		t.Fatalf("the container through the gateway's address: saw %q (%v), want the gateway", seen, err)
	}
}

// A container sends 16 MiB to the other end of a spliced connection while
// its TAP's queue to the bridge is short (txqueuelen 8, or 2: bursts of
// loss, 100 frames and more): when the bridge falls behind, the TAP drops
// frames, as any link may, unseen by the container's TCP. Every byte must
// still arrive, and soon, as between two kernels (0.3 s): the splice
// keeps what comes after a hole (TestSpliceOutOfOrderKept) and says what
// it keeps in SACK blocks, so the container's TCP sends again only what
// was lost. Before, each upload stalled on timeouts that doubled, 16 MiB
// not done in 20 s; without SACK, bursts still stalled it.
func TestIntegrationContainerSendsThroughTapDrops(t *testing.T) {
	const n = 16 << 20
	for _, c := range []struct {
		out  bool
		qlen string
	}{{false, "8"}, {true, "8"}, {false, "2"}, {true, "2"}} {
		out, qlen := c.out, c.qlen
		t.Run(fmt.Sprintf("outbound=%v/txqueuelen=%s", out, qlen), func(t *testing.T) {
			e, client, srv := tcpPair(t, out)
			if err := e.ctr.IP("link", "set", "dev", "eth0", "txqueuelen", qlen); err != nil {
				t.Fatal(err)
			}
			took, errc, got, err := transfer(srv, client, 5, n)
			kc, _ := e.br.Ports()[0].Port().(bridge.KernelCounter).KernelCounters()
			t.Logf("%d of %d bytes in %v (%v); the TAP dropped %d frames", got, n, took.Round(time.Millisecond), err, kc.TxDropped)
			if err != nil || got != n {
				t.Errorf("the other end received %d bytes of %d in 20 s", got, n)
			}
			// A queue of 2 drops every time; one of 8 mostly. Recovery
			// as a kernel's takes well under a second (0.1-0.5 s
			// measured); by timeouts, seconds.
			if qlen == "2" && kc.TxDropped == 0 {
				t.Errorf("the TAP dropped nothing: the test tested no loss")
			}
			if kc.TxDropped > 0 && took > 5*time.Second {
				t.Errorf("%v for 16 MiB through %d drops: recovered by timeouts", took, kc.TxDropped)
			}
			<-errc
			client.Close()
			srv.Close()
			if !waitFor(5*time.Second, func() bool { return e.up.Flows() == 0 }) {
				t.Errorf("%d flows left", e.up.Flows())
			}
		})
	}
}

// The other way: 16 MiB to the container, which loses every 20th of the
// splice's data frames (a filter in its own input: a loss its TCP sees,
// after the TAP). Its TCP keeps what comes after each hole and names it
// in SACK blocks; the splice sends again only the holes, and the stream
// arrives whole, soon. (Going back N, each loss sent again everything
// after it, which lost its 20th frame again.)
func TestIntegrationContainerReceivesThroughDrops(t *testing.T) {
	const n = 16 << 20
	for _, out := range []bool{false, true} {
		t.Run(fmt.Sprintf("outbound=%v", out), func(t *testing.T) {
			e, client, srv := tcpPair(t, out)
			inputRule(t, e.ctr, "loss", "meta", "l4proto", "tcp", "meta", "length", "gt", "100", "numgen", "inc", "mod", "20", "0", "counter", "drop")
			took, errc, got, err := transfer(client, srv, 6, n)
			rules, _ := e.ctr.Run(ctx(t), "nft", "list", "chain", "inet", "loss", "in")
			t.Logf("%d of %d bytes in %v (%v); %s; counters %v", got, n, took.Round(time.Millisecond), err, bytes.TrimSpace(rules), e.up.Counters())
			if err != nil || got != n {
				t.Errorf("the container received %d bytes of %d in 20 s", got, n)
			}
			if err := <-errc; err != nil {
				t.Errorf("sending: %v", err)
			}
			if !bytes.Contains(rules, []byte("counter packets")) || bytes.Contains(rules, []byte("counter packets 0 ")) {
				t.Errorf("the filter dropped nothing: the test tested no loss\n%s", rules)
			}
		})
	}
}

// A client that reuses its port while the flow of its last connection
// is still closing on the container's side (here the container never
// receives the uplink's FIN: a filter in its input drops FINs) is carried
// in: the old flow ends, and the new connection works. The host accepted
// it, its own side of the last connection being done, so a reset here
// would be usernat's alone.
func TestIntegrationPublishedPortReusedWhileClosing(t *testing.T) {
	p := newPubTCP(t, envConfig{}, true)
	inputRule(t, p.ctr, "nofin", "tcp", "flags", "&", "fin", "==", "fin", "counter", "drop")
	from := netip.MustParseAddrPort("198.51.100.2:40500")
	dialFrom := func() *net.TCPConn {
		t.Helper()
		c := dialFromPort(t, p.remote, from, pubTCPDial, false)
		c.SetDeadline(time.Now().Add(connDeadline))
		return c
	}
	echo := func(client, srv *net.TCPConn, b byte) {
		t.Helper()
		buf := []byte{b}
		if _, err := client.Write(buf); err != nil {
			t.Fatalf("the client writing: %v", err)
		}
		if _, err := io.ReadFull(srv, buf); err != nil || buf[0] != b {
			t.Fatalf("the container read %q, %v; want %q", buf, err, b)
		}
		if _, err := srv.Write(buf); err != nil {
			t.Fatalf("the container writing: %v", err)
		}
		if _, err := io.ReadFull(client, buf); err != nil || buf[0] != b {
			t.Fatalf("the client read %q, %v; want %q", buf, err, b)
		}
	}

	client, srv := dialFrom(), p.accept(t)
	echo(client, srv, 'a')
	srv.Close() // the container closes first, as an HTTP/1.0 server does
	if n, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the client read %d bytes, %v; want the end of stream", n, err)
	}
	client.Close()
	time.Sleep(100 * time.Millisecond) // the uplink's FIN is sent, and dropped
	if n := p.up.Flows(); n != 1 {
		t.Fatalf("%d flows carried; want the first, still closing", n)
	}

	client, srv = dialFrom(), p.accept(t)
	echo(client, srv, 'b')
	c := p.up.Counters()
	if c["drop_collision"] != 0 || c["inbound_opened"] != 2 {
		t.Errorf("counters %v: want 2 inbound flows opened, none dropped as a collision", c)
	}
}

// A client port connecting to two published ports of one container port
// (two rules, 8080 and 8081, both to port 80) makes two connections to
// the container, as through the kernel's NAT: the second is shown with
// another port of the client port's class (its reply tuple being taken),
// its entry is marked SNAT as well as DNAT, and each connection carries
// its own bytes. The client reusing its port to 8081 while that flow is
// still closing on the container's side (a filter in the container's
// input drops FINs) replaces it, shown with the same port as before, as
// the entry still in the table names it: should the container not hear
// the last connection end, the new one's segments still match that
// entry, as they would through the kernel's NAT.
func TestIntegrationPublishedTCPTwoPortsOneContainerPort(t *testing.T) {
	e := newEnv(t, envConfig{})
	inputRule(t, e.ctr, "nofin", "tcp", "flags", "&", "fin", "==", "fin", "counter", "drop")
	l, err := e.ctr.Listen("tcp4", "172.17.0.4:80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	publish(t, e.up, "8080:172.17.0.4:80/tcp", "8081:172.17.0.4:80/tcp")
	client := netip.MustParseAddrPort("198.51.100.2:40080")
	// open connects the client's port to pub, and returns its conn, the
	// container's, and the client as the container saw it; each byte
	// the client sends is echoed back, with the port it came through.
	open := func(pub uint16) (c, sc net.Conn, shown netip.AddrPort) {
		t.Helper()
		c = dialFromPort(t, e.remote, client, fmt.Sprintf("198.51.100.1:%d", pub), true)
		l.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
		sc, err := l.Accept()
		if err != nil {
			t.Fatalf("the container accepted nothing for :%d: %v", pub, err)
		}
		t.Cleanup(func() { sc.Close() })
		go func() {
			b := make([]byte, 64)
			for {
				n, err := sc.Read(b)
				if err != nil {
					return
				}
				fmt.Fprintf(sc, "%s via %d", b[:n], pub)
			}
		}()
		return c, sc, sc.RemoteAddr().(*net.TCPAddr).AddrPort()
	}
	echo := func(c net.Conn, msg string, pub uint16) {
		t.Helper()
		fmt.Fprint(c, msg)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 64)
		n, err := c.Read(b)
		if want := fmt.Sprintf("%s via %d", msg, pub); string(b[:n]) != want {
			t.Errorf("the client read %q, %v through :%d; want %q", b[:n], err, pub, want)
		}
	}
	inClass := func(p uint16) bool {
		lo, size := nat.SourcePortRange(client.Port())
		return p != client.Port() && int(p) >= lo && int(p) < lo+size
	}

	c0, _, first := open(8080)
	c1, sc1, second := open(8081)
	if first != client {
		t.Errorf("the first connection's client was shown as %v, want its own address and port %v", first, client)
	}
	if second.Addr() != client.Addr() || !inClass(second.Port()) {
		t.Errorf("the second connection's client was shown as %v, want %v with another port of its class", second, client.Addr())
	}
	echo(c0, "hello0", 8080)
	echo(c1, "hello1", 8081)
	// The entries: a DNAT each, and the second a SNAT too.
	for pub, want := range map[uint16]conntrack.Status{8080: conntrack.DstNAT, 8081: conntrack.DstNAT | conntrack.SrcNAT} {
		orig := conntrack.Tuple{Src: client.Addr(), Dst: netip.MustParseAddr("198.51.100.1"), SrcPort: client.Port(), DstPort: pub, Proto: conntrack.ProtoTCP}
		en, _, ok := e.gw.Table().Get(0, orig)
		if !ok || en.Status&(conntrack.DstNAT|conntrack.SrcNAT) != want {
			t.Errorf("entry %v: %v (there %v), want NAT status %v", orig, en, ok, want)
		}
		if shown := map[uint16]netip.AddrPort{8080: first, 8081: second}[pub]; ok && en.Reply.DstPort != shown.Port() {
			t.Errorf("entry %v: reply %v, want it to the port the container saw, %d", orig, en.Reply, shown.Port())
		}
	}

	// The container closes the second first; the client closes too, and
	// the uplink's FIN never reaches the container.
	sc1.Close()
	c1.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c1.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the client read %d bytes, %v; want the end of stream", n, err)
	}
	c1.Close()
	time.Sleep(100 * time.Millisecond)
	if n := e.up.Flows(); n != 2 {
		t.Fatalf("%d flows carried; want 2, the second still closing", n)
	}
	c2, _, third := open(8081)
	if third != second {
		t.Errorf("the client's next connection to 8081 was shown as %v, want %v as its last one (the port its entry still names)", third, second)
	}
	echo(c2, "hello2", 8081)
	echo(c0, "again0", 8080)
	c := e.up.Counters()
	if c["drop_collision"] != 0 || c["inbound_opened"] != 3 {
		t.Errorf("counters %v: want 3 inbound flows opened, none dropped as a collision", c)
	}
}

// dialFromPort connects from the fixed address from, in ns, to the TCP
// address dst, with SO_REUSEADDR when reuse (one client port to two
// destinations at once), trying again for 2 s while the port's last
// connection holds it (its socket may wait for the last ACK of its close
// a moment longer). The conn is closed when the test ends.
func dialFromPort(t *testing.T, ns *netns.NS, from netip.AddrPort, dst string, reuse bool) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(from), Timeout: 3 * time.Second}
	if reuse {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(s uintptr) { unix.SetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		}
	}
	var c net.Conn
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := ns.Do(func() (err error) {
			c, err = d.DialContext(ctx(t), "tcp4", dst)
			return err
		})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("dialing %s from %v: %v", dst, from, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}
