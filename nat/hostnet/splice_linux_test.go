package hostnet_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/nat/hostnet"
)

// Tests of the splice's own mechanics, through a published port: the
// peek without SO_PEEK_OFF of older kernels, sequence numbers crossing
// 2³², keep-alive probes of an idle container, frames lost between the
// splice and the gateway.

// converse exchanges rounds of requests and answers between client and
// srv, pausing between rounds (so each round finds the host socket empty
// and waits for it), then closes the client's side and checks the
// container sees the end of stream.
func converse(t *testing.T, client, srv *net.TCPConn, rounds int, pause time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for i := range rounds {
			want := fmt.Sprintf("request %d", i)
			if _, err := io.ReadFull(srv, buf[:len(want)]); err != nil || string(buf[:len(want)]) != want {
				done <- fmt.Errorf("the container read %q, %v; want %q", buf[:len(want)], err, want)
				return
			}
			if _, err := fmt.Fprintf(srv, "answer %d", i); err != nil {
				done <- err
				return
			}
		}
		n, err := srv.Read(buf)
		if n != 0 || err != io.EOF {
			done <- fmt.Errorf("after the last request the container read %d bytes, %v; want the end of stream", n, err)
			return
		}
		done <- nil
	}()
	buf := make([]byte, 64)
	for i := range rounds {
		if _, err := fmt.Fprintf(client, "request %d", i); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("answer %d", i)
		if _, err := io.ReadFull(client, buf[:len(want)]); err != nil || string(buf[:len(want)]) != want {
			t.Fatalf("the client read %q, %v; want %q", buf[:len(want)], err, want)
		}
		time.Sleep(pause)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Without SO_PEEK_OFF, each peek skips the bytes in flight: requests
// after pauses (each finding the socket holding only bytes sent already,
// which is not the end of the stream), and bulk both ways.
func TestIntegrationPublishedTCPSkippingPeek(t *testing.T) {
	t.Cleanup(hostnet.SetPeekOffset(false)) // after the gateway closes
	skipped := hostnet.SkippingPeeks()
	p := newPubTCP(t, envConfig{}, true)
	client, srv := p.pair(t)
	converse(t, client, srv, 10, 20*time.Millisecond)
	client, srv = p.pair(t)
	bothWays(t, client, srv, 8<<20)
	if hostnet.SkippingPeeks() == skipped {
		t.Error("no peek skipped bytes in flight: the test did not test the way without SO_PEEK_OFF")
	}
}

// Sequence numbers that cross 2³² early in the stream, and a FIN after.
func TestIntegrationPublishedTCPWraparound(t *testing.T) {
	restore, uses := hostnet.SetISN(0xffffffff - 100_000)
	t.Cleanup(restore) // after the gateway closes
	p := newPubTCP(t, envConfig{}, true)
	client, srv := p.pair(t)
	bothWays(t, client, srv, 8<<20)
	client, srv = p.pair(t)
	converse(t, client, srv, 5, 0)
	// Nothing is lost on the way: a byte sent again is a byte sent
	// outside the container's window, which a wrong comparison does.
	if r := p.up.Counters()["inbound_retransmits"]; r != 0 {
		t.Errorf("%d retransmissions, want none", r)
	}
	if n := uses.Load(); n != 2 {
		t.Errorf("%d splices started near 2³², want both", n)
	}
}

// A container that probes an idle connection with keep-alives (an old
// sequence number, no data) gets answers, and the connection lives on;
// its probes reach the other end as through the kernel's NAT (the host
// socket probes its peer for each), so the NATs and firewalls on the way
// see the connection alive too. The other end's own keep-alives are off:
// what reaches it is the container's.
func TestIntegrationTCPKeepAlive(t *testing.T) {
	for _, out := range []bool{false, true} {
		t.Run(fmt.Sprintf("outbound=%v", out), func(t *testing.T) {
			e, client, srv := tcpPair(t, out)
			client.SetKeepAlive(false)
			inputRule(t, e.remote, "probes", "meta", "l4proto", "tcp", "counter")
			// Unanswered, the probes would end it after 1 + 2×1 s.
			if err := srv.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 2}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(4 * time.Second)
			if n := inputCount(t, e.remote, "probes"); n == 0 {
				t.Errorf("the other end received nothing while the container probed the connection")
			}
			client.SetDeadline(time.Now().Add(connDeadline))
			srv.SetDeadline(time.Now().Add(connDeadline))
			converse(t, client, srv, 3, 0)
		})
	}
}

// keepAlivePair is tcpPair whose container end keeps alive (after 1 s
// idle, 3 probes 1 s apart) and whose other end does not.
func keepAlivePair(t *testing.T, out bool) (e *env, client, srv *net.TCPConn) {
	t.Helper()
	e, client, srv = tcpPair(t, out)
	client.SetKeepAlive(false)
	if err := srv.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3}); err != nil {
		t.Fatal(err)
	}
	return e, client, srv
}

// A container's keep-alive finds out that the other end vanished without
// a word (its machine drops everything now): its probes go unanswered
// once the host socket's probes of its peer do, and the container's read
// fails with ETIMEDOUT when its count runs out, as through the kernel's
// NAT; the splice answered every probe itself, and the connection stayed
// open for ever.
func TestIntegrationTCPKeepAliveVanishedPeer(t *testing.T) {
	for _, out := range []bool{false, true} {
		t.Run(fmt.Sprintf("outbound=%v", out), func(t *testing.T) {
			e, _, srv := keepAlivePair(t, out)
			inputRule(t, e.remote, "gone", "meta", "l4proto", "tcp", "counter", "drop")
			// 1 + 3×1 s through the kernel's NAT; a probe more here,
			// the first one being answered before the host's answer
			// to it is known.
			srv.SetDeadline(time.Now().Add(15 * time.Second))
			start := time.Now()
			_, err := srv.Read(make([]byte, 1))
			took := time.Since(start)
			if !errors.Is(err, syscall.ETIMEDOUT) {
				t.Fatalf("after %v the container's read says %v, want ETIMEDOUT (its keep-alive gave up)", took.Round(time.Millisecond), err)
			}
			t.Logf("the container's keep-alive gave up after %v", took.Round(time.Millisecond))
			if n := inputCount(t, e.remote, "gone"); n == 0 {
				t.Errorf("no probe reached the other end's machine")
			}
			if !waitFor(5*time.Second, func() bool { return e.up.Flows() == 0 }) {
				t.Errorf("%d flows left after the container reset the connection", e.up.Flows())
			}
		})
	}
}

// A container's keep-alive does not end a connection whose path is gone
// for a while (5 s, its keep-alive giving up after 4) just after the
// container wrote: through the kernel's NAT its bytes would be in flight,
// and it would send them again rather than probe; here the splice took
// them, and the host socket sends them again. Its probes are answered
// meanwhile, and the bytes reach the other end once the path is back.
// They went unanswered while the host socket's retransmission was
// outstanding, and the container's read failed with ETIMEDOUT after
// about 4 s.
func TestIntegrationTCPKeepAliveOutage(t *testing.T) {
	for _, out := range []bool{false, true} {
		t.Run(fmt.Sprintf("outbound=%v", out), func(t *testing.T) {
			e, client, srv := keepAlivePair(t, out)
			inputRule(t, e.remote, "outage", "meta", "l4proto", "tcp", "drop")
			if _, err := srv.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := srv.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("during the outage the container's read says %v, want its deadline", err)
			}
			if out, err := e.remote.Run(ctx(t), "nft", "delete", "table", "inet", "outage"); err != nil {
				t.Fatalf("nft delete: %v %s", err, out)
			}
			// The host socket's next retransmission is some 6 s after
			// the first send.
			client.SetDeadline(time.Now().Add(15 * time.Second))
			buf := make([]byte, len("request"))
			if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "request" {
				t.Fatalf("after the outage the other end read %q, %v; want %q", buf, err, "request")
			}
			srv.SetDeadline(time.Now().Add(connDeadline))
			if _, err := srv.Write([]byte("answer")); err != nil {
				t.Fatalf("after the outage the container's write says %v", err)
			}
			if _, err := io.ReadFull(client, buf[:len("answer")]); err != nil || string(buf[:len("answer")]) != "answer" {
				t.Fatalf("after the outage the other end read %q, %v; want %q", buf[:len("answer")], err, "answer")
			}
		})
	}
}

// inputRule has the namespace ns apply rule (nft's words) to every packet
// it receives, in a table of its own named table (and its chain "in").
func inputRule(t *testing.T, ns *netns.NS, table string, rule ...string) {
	t.Helper()
	for _, args := range [][]string{
		{"add", "table", "inet", table},
		{"add", "chain", "inet", table, "in", "{ type filter hook input priority 0; }"},
		append([]string{"add", "rule", "inet", table, "in"}, rule...),
	} {
		if out, err := ns.Run(ctx(t), "nft", args...); err != nil {
			t.Fatalf("nft %v: %v %s", args, err, out)
		}
	}
}

// inputCount is the packets the counter of inputRule's rule in table
// counted.
func inputCount(t *testing.T, ns *netns.NS, table string) int {
	t.Helper()
	out, err := ns.Run(ctx(t), "nft", "list", "chain", "inet", table, "in")
	if err != nil {
		t.Fatalf("nft list: %v %s", err, out)
	}
	_, after, ok := strings.Cut(string(out), "counter packets ")
	var n int
	if !ok {
		t.Fatalf("no counter in table %s:\n%s", table, out)
	}
	fmt.Sscan(after, &n)
	return n
}

// Frames between the splices and the gateway dropped by a full queue
// (QueueLen 1, several flows at once) never left: the splice knows it,
// and sends them again from the bytes the host socket still holds after
// localRetry, not after a retransmission timeout (at least 200 ms, a
// second for a SYN). Every byte comes, in order, and no timeout fires:
// 2 to 11 did in each run when the splice took such frames as sent.
//
// The gateway is stalled for 2 ms every 10 ms, so the queue fills
// whatever the machine's speed.
func TestIntegrationPublishedTCPLostFrames(t *testing.T) {
	const flows, n = 8, 2 << 20
	// A timeout that fires is one the test counts: a frame the queue
	// refused and the splice took as sent still draws one (only later),
	// but the container's ACK delayed past 200 ms by a loaded machine
	// (the bridge's and gateway's goroutines not run) no longer does.
	// (Put back once the gateway is closed: cleanups run last first.)
	t.Cleanup(hostnet.SetMinRTO(2 * time.Second))
	p := newPubTCP(t, envConfig{uplink: hostnet.Config{QueueLen: 1}}, true)
	done := make(chan struct{})
	stalled := make(chan struct{})
	defer func() {
		close(done)
		<-stalled
	}()
	go func() {
		defer close(stalled)
		for {
			select {
			case <-done:
				return
			case <-time.After(8 * time.Millisecond):
				hostnet.StallLink(p.up, 2*time.Millisecond)
			}
		}
	}()
	var wg sync.WaitGroup
	for range flows {
		client, srv := p.pair(t)
		// 16 MiB each way through a queue of one frame, stalled a fifth
		// of the time, under -race: 2.2 to 3.4 s on a 2-CPU machine with
		// two other busy processes, 6.3 s with the rest of the suite
		// beside them. A bound on a hang, not a measure of speed.
		for _, c := range []*net.TCPConn{client, srv} {
			c.SetDeadline(time.Now().Add(6 * connDeadline))
		}
		wg.Go(func() { bothWays(t, client, srv, n) })
	}
	wg.Wait()
	c := p.up.Counters()
	t.Logf("%d frames dropped, %d segments of the splices sent again, %d timeouts, %d SYN-ACKs again", c["drop_queue_full"], c["inbound_requeued"], c["inbound_retransmits"], c["inbound_synack_again"])
	if c["inbound_requeued"] == 0 {
		t.Errorf("no segment of a splice was refused: the test did not test sending again")
	}
	// A frame the container's stack dropped (its backlog full, on a
	// loaded machine) is a real loss, which a timeout may rightly repair.
	kc, _ := p.br.Ports()[0].Port().(bridge.KernelCounter).KernelCounters()
	if c["inbound_retransmits"] != 0 && kc.RxDropped == 0 {
		t.Errorf("%d retransmission timeouts, with the frames the queue refused sent again", c["inbound_retransmits"])
	} else if c["inbound_retransmits"] != 0 {
		t.Logf("%d retransmission timeouts; the container's stack dropped %d frames", c["inbound_retransmits"], kc.RxDropped)
	}
	// A handshake's ACK the queue refused goes again at once too: the
	// container never waits a second to send its SYN-ACK again.
	if c["inbound_synack_again"] != 0 {
		t.Errorf("containers sent %d SYN-ACKs again: handshake ACKs the queue refused were not", c["inbound_synack_again"])
	}
}

// A splice acknowledges as a receiver with delayed ACKs does: in a
// request and answer exchange, each answer's acknowledgement rides on the
// next request, one frame to the container per round. And the container
// closing last has its FIN acknowledged at once, so its socket does not
// wait in LAST_ACK for a retransmission.
func TestIntegrationPublishedTCPAcks(t *testing.T) {
	const rounds = 200
	// The next request comes within the delay, on a busy machine too:
	// with 1 ms, one in three rounds could miss it, its ACK sent alone.
	// (Put back once the gateway is closed: cleanups run last first.)
	t.Cleanup(hostnet.SetAckDelay(100 * time.Millisecond))
	p := newPubTCP(t, envConfig{}, true)
	client, srv := p.pair(t)
	ctrPort := p.br.Ports()[0] // the container's eth0, the first port
	before := ctrPort.Counters().TxFrames
	converse(t, client, srv, rounds, 0)
	// The rounds, the client's FIN and a little slack.
	if n := ctrPort.Counters().TxFrames - before; n > rounds*11/10+5 {
		t.Errorf("%d frames to the container for %d rounds, want about one a round", n, rounds)
	}
	srv.Close()
	lastAck := func() (bool, error) {
		var found bool
		err := p.ctr.Do(func() error {
			b, err := os.ReadFile("/proc/thread-self/net/tcp")
			if err != nil {
				return err
			}
			for _, l := range strings.Split(string(b), "\n")[1:] {
				f := strings.Fields(l)
				// local address, then state: port 80 is 0050, LAST_ACK 09.
				if len(f) > 3 && strings.HasSuffix(f[1], ":0050") && f[3] == "09" {
					found = true
				}
			}
			return nil
		})
		return found, err
	}
	// The container's retransmission timeout is 200 ms at least.
	if !waitFor(50*time.Millisecond, func() bool { found, err := lastAck(); return err == nil && !found }) {
		t.Errorf("the container's socket is still in LAST_ACK: its FIN was not acknowledged")
	}
}

// Clients of a published port live as long as their entries: idle past
// the established timeout, or flushed, 100 spliced connections end, reset
// on both sides, and their sockets and the flows go.
func TestIntegrationPublishedTCPLifecycle(t *testing.T) {
	const n = 100
	for _, tc := range []struct {
		name  string
		flush bool
	}{{"idle", false}, {"flush", true}} {
		t.Run(tc.name, func(t *testing.T) {
			to := conntrack.Timeouts{TCPEstablished: 2 * time.Second}
			if tc.flush {
				to = conntrack.Timeouts{} // the defaults: only the flush ends them
			}
			p := newPubTCP(t, envConfig{timeouts: to}, true)
			time.Sleep(100 * time.Millisecond)
			fds0 := countFDs(t)
			clients := make([]*net.TCPConn, n)
			srvs := make([]*net.TCPConn, n)
			for i := range n {
				clients[i], srvs[i] = p.pair(t)
				// One byte each way: the flow is carried both ways.
				if _, err := clients[i].Write([]byte{1}); err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 1)
				if _, err := io.ReadFull(srvs[i], b); err != nil {
					t.Fatal(err)
				}
			}
			if got := p.up.Flows(); got != n {
				t.Fatalf("%d flows carried, want %d", got, n)
			}
			if tc.flush {
				p.gw.Table().Flush()
			}
			// Gone: each side's next read fails with a reset.
			for i := range n {
				for _, c := range []*net.TCPConn{clients[i], srvs[i]} {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
						t.Fatalf("connection %d, %v: read %v, want a reset", i, c.LocalAddr(), err)
					}
				}
			}
			if !waitFor(3*time.Second, func() bool { return p.up.Flows() == 0 }) {
				t.Errorf("%d flows left", p.up.Flows())
			}
			for _, c := range append(clients, srvs...) {
				c.Close()
			}
			if !waitFor(3*time.Second, func() bool { return countFDs(t) <= fds0 }) {
				t.Errorf("%d file descriptors, %d before", countFDs(t), fds0)
			}
		})
	}
}

// One client uploading as fast as it can does not starve another: while
// the first fills the container's window again and again, the second's
// round trips go on. (Before pumps took turns, the upload's pump on the
// poller's goroutine went on as long as acknowledgements kept opening the
// window, which on two CPUs was for ever, and the other socket's news
// waited behind it: the first round trip never came back.)
func TestIntegrationPublishedTCPNoStarvation(t *testing.T) {
	const rounds = 200
	p := newPubTCP(t, envConfig{}, true)
	upC, upS := p.pair(t)
	pingC, pingS := p.pair(t)
	// No deadlines but the client's, per round trip: the rounds may take
	// longer in all than the helpers' default, on a busy machine.
	upC.SetDeadline(time.Time{})
	upS.SetDeadline(time.Time{})
	pingS.SetDeadline(time.Time{})
	go io.Copy(io.Discard, upS)
	stop := make(chan struct{})
	uploaded := make(chan int64, 1)
	go func() {
		buf := make([]byte, 1<<20)
		var n int64
		defer func() { uploaded <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := upC.Write(buf)
			n += int64(m)
			if err != nil {
				return
			}
		}
	}()
	go func() { // the container echoes
		b := make([]byte, 1)
		for {
			if _, err := io.ReadFull(pingS, b); err != nil {
				return
			}
			if _, err := pingS.Write(b); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the upload is under way
	b := []byte{7}
	for i := range rounds {
		pingC.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := pingC.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(pingC, b); err != nil {
			t.Fatalf("round trip %d during the upload: %v (the container's port: %+v; the uplink: %v)",
				i, err, p.br.Ports()[0].Counters(), p.up.Counters())
		}
	}
	close(stop)
	upC.Close()
	if n := <-uploaded; n < 1<<20 {
		t.Errorf("the upload moved %d bytes: it was not under way", n)
	}
}

// Two clients on the host's loopback with the same port are both shown to
// the container as the gateway with that port: the same connection, to
// the container. The one carried already stays; the other is reset.
func TestIntegrationPublishedTCPLoopbackCollision(t *testing.T) {
	p := newPubTCP(t, envConfig{}, true)
	dialFrom := func(from string) (net.Conn, error) {
		var c net.Conn
		err := p.host.Do(func() error {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from))}
			var err error
			c, err = d.DialContext(ctx(t), "tcp", "127.0.0.1:8080")
			return err
		})
		if c != nil {
			t.Cleanup(func() { c.Close() })
			c.SetDeadline(time.Now().Add(connDeadline))
		}
		return c, err
	}
	first, err := dialFrom("127.0.0.1:40001")
	if err != nil {
		t.Fatal(err)
	}
	srv := p.accept(t)
	if got := srv.RemoteAddr().String(); got != gwAddr.Addr().String()+":40001" {
		t.Fatalf("the container sees %s, want the gateway at port 40001", got)
	}
	echo := func(what string) {
		t.Helper()
		b := make([]byte, 1)
		if _, err := first.Write([]byte{9}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, err := io.ReadFull(srv, b); err != nil {
			t.Fatalf("%s: the container read %v", what, err)
		}
		if _, err := srv.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(first, b); err != nil {
			t.Fatalf("%s: the first client read %v", what, err)
		}
	}
	echo("before")
	second, err := dialFrom("127.0.0.2:40001")
	if err == nil {
		second.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = second.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the second client: %v, want a reset", err)
	}
	echo("after")
	if n := p.up.Counters()["drop_collision"]; n != 1 {
		t.Errorf("drop_collision %d, want 1", n)
	}
}

// sendUrgent writes before, then urgent as urgent data (MSG_OOB), then
// after, to c.
func sendUrgent(c *net.TCPConn, before, urgent, after string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for _, part := range []struct {
		b     string
		flags int
	}{{before, 0}, {urgent, syscall.MSG_OOB}, {after, 0}} {
		if cerr := rc.Write(func(fd uintptr) bool {
			err = syscall.Sendto(int(fd), []byte(part.b), part.flags, nil)
			return err != syscall.EAGAIN
		}); cerr != nil {
			return cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Urgent data (MSG_OOB, as telnet and FTP send to interrupt) stays in the
// stream, where it was sent: the container sees every byte in order, from
// a published port's client or from the server of its own connection.
// The host socket takes it inline (SO_OOBINLINE), and a read stops at its
// mark, so the splice reads on past it (the poller tells of it).
func TestIntegrationTCPUrgent(t *testing.T) {
	for _, out := range []bool{false, true} {
		for _, peekOff := range []bool{true, false} {
			name := fmt.Sprintf("%s, peek offset %v", map[bool]string{false: "published", true: "outbound"}[out], peekOff)
			t.Run(name, func(t *testing.T) {
				t.Cleanup(hostnet.SetPeekOffset(peekOff)) // after the gateway closes
				_, client, srv := tcpPair(t, out)
				const want = "before ! after"
				if err := sendUrgent(client, "before ", "!", " after"); err != nil {
					t.Fatal(err)
				}
				// All of it before the client's FIN, whose news would
				// have the splice read on anyway.
				got := make([]byte, len(want))
				if _, err := io.ReadFull(srv, got); err != nil || string(got) != want {
					t.Fatalf("the container read %q, %v; want %q", got, err, want)
				}
				if err := client.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if rest, err := io.ReadAll(srv); err != nil || len(rest) > 0 {
					t.Errorf("after the bytes sent the container read %q, %v; want the end of stream", rest, err)
				}
			})
		}
	}
}

// A read of the host socket that took less than it asked for took all the
// socket held: the splice waits for the poller then, rather than read
// again to find nothing (a system call per request in an exchange of
// requests and answers).
func TestIntegrationPublishedTCPShortReads(t *testing.T) {
	const rounds = 200
	p := newPubTCP(t, envConfig{}, true)
	client, srv := p.pair(t)
	before := hostnet.EmptyPeeks()
	converse(t, client, srv, rounds, 0)
	// Some wake-ups find nothing: bytes that came between the poller's
	// word and the read are read then, and their own word comes after.
	if n := hostnet.EmptyPeeks() - before; n > rounds/4 {
		t.Errorf("%d reads of the host socket found nothing in %d rounds, want few", n, rounds)
	}
}

// A client that speaks MPTCP reaches the container through a published
// port as any other (the port listens on TCP, and the client falls back
// to it), and the splices after it still peek from their offset. With
// Go's default MPTCP listener, its socket refused SO_PEEK_OFF (which
// turned the peek offset off for every splice after it) and a discarding
// read (which reset the flow).
func TestIntegrationPublishedTCPMultipathClient(t *testing.T) {
	t.Cleanup(hostnet.SetPeekOffset(true)) // found out again; after the gateway closes
	p := newPubTCP(t, envConfig{}, true)
	var client *net.TCPConn
	if err := p.remote.Do(func() error {
		var d net.Dialer
		d.SetMultipathTCP(true)
		c, err := d.DialContext(ctx(t), "tcp4", pubTCPDial)
		if err != nil {
			return err
		}
		client = c.(*net.TCPConn)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.SetDeadline(time.Now().Add(connDeadline))
	srv := p.accept(t)
	bothWays(t, client, srv, 1<<20)
	skipped := hostnet.SkippingPeeks()
	client, srv = p.pair(t)
	converse(t, client, srv, 5, 10*time.Millisecond)
	if hostnet.SkippingPeeks() != skipped {
		t.Error("after a client that speaks MPTCP, splices skip bytes in flight: the peek offset is off")
	}
}
