package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/internal/netns"
)

// buildBinary builds the command, with the build tags of this test.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "usernat")
	args := []string{"build", "-o", bin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-tags" && s.Value != "" {
				args = append(args, "-tags", s.Value)
			}
		}
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func newNS(t *testing.T) *netns.NS {
	t.Helper()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// gatewayProc is a running `usernat gateway`.
type gatewayProc struct {
	cmd    *exec.Cmd
	stderr string // path of its stderr
	exited chan error
}

func (g *gatewayProc) log() string {
	b, _ := os.ReadFile(g.stderr)
	return string(b)
}

// startGatewayProc starts the binary with args and --ready-fd 3, and
// waits until it is ready or has exited.
func startGatewayProc(t *testing.T, bin string, args ...string) (*gatewayProc, error) {
	t.Helper()
	return startGatewayProcIn(t, nil, bin, args...)
}

// startGatewayProcIn is startGatewayProc with the process in network
// namespace ns; nil means the test's.
func startGatewayProcIn(t *testing.T, ns *netns.NS, bin string, args ...string) (*gatewayProc, error) {
	t.Helper()
	return startProcIn(t, ns, bin, nil, append([]string{"gateway", "--ready-fd", "3"}, args...)...)
}

// startProcIn starts the binary with args, which must name fd 3 as the
// ready fd, in network namespace ns (nil means the test's), with extra as
// its fds 4 and on, and waits until it is ready or has exited.
func startProcIn(t *testing.T, ns *netns.NS, bin string, extra []*os.File, args ...string) (*gatewayProc, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	errf, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	g := &gatewayProc{stderr: errf.Name(), exited: make(chan error, 1)}
	g.cmd = exec.Command(bin, args...)
	g.cmd.ExtraFiles = append([]*os.File{w}, extra...)
	g.cmd.Stderr = errf
	g.cmd.Stdout = errf
	start := g.cmd.Start
	if ns != nil {
		start = func() error { return ns.Start(g.cmd) }
	}
	if err := start(); err != nil {
		w.Close()
		t.Fatal(err)
	}
	w.Close()
	go func() { g.exited <- g.cmd.Wait() }()
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Kill()
			<-g.exited
		}
	})
	r.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 8)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "1" {
		select {
		case werr := <-g.exited:
			return g, errors.New("exited (" + werr.Error() + ") before ready:\n" + g.log())
		case <-time.After(5 * time.Second):
			return g, errors.New("not ready: " + errString(err) + "\n" + g.log())
		}
	}
	return g, nil
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// stop sends SIGTERM and returns the exit error.
func (g *gatewayProc) stop(t *testing.T) error {
	t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-g.exited:
		return err
	case <-time.After(20 * time.Second):
		g.cmd.Process.Kill()
		t.Fatalf("gateway did not exit on SIGTERM:\n%s", g.log())
		return nil
	}
}

func cli(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("usernat %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func mustContain(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

// TestIntegrationGateway runs the Docker experiment through the binary:
// a container at 172.17.0.4 published on 192.168.2.116:8080, a client at
// 192.168.2.104 on the uplink.
func TestIntegrationGateway(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	ctr, lan := newNS(t), newNS(t)
	sock := filepath.Join(t.TempDir(), "usernat.sock")

	g, err := startGatewayProc(t, bin,
		"--subnet", "172.17.0.1/16",
		"--port", ctr.Path()+":eth0=172.17.0.4/16",
		"--uplink", "tap:"+lan.Path()+":eth0",
		"--uplink-addr", "192.168.2.116/24",
		"-p", "8080:172.17.0.4:80",
		"--timeout", "icmp=10",
		"--api-socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("API socket: %v, %v", fi, err)
	}

	// The container side as usernat configured it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := ctr.Run(ctx, "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "container addresses", string(out), "inet 172.17.0.4/16")
	out, err = ctr.Run(ctx, "ip", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "container routes", string(out), "default via 172.17.0.1 dev eth0")

	// The client on the uplink's TAP.
	if err := lan.AddAddr("eth0", netip.MustParsePrefix("192.168.2.104/24")); err != nil {
		t.Fatal(err)
	}

	if out, err := ctr.Run(ctx, "ping", "-c", "1", "-W", "5", "172.17.0.1"); err != nil {
		t.Fatalf("ping the gateway: %v\n%s\n%s", err, out, g.log())
	}
	if out, err := ctr.Run(ctx, "ping", "-c", "1", "-W", "5", "192.168.2.104"); err != nil {
		t.Fatalf("ping the client through the gateway: %v\n%s\n%s", err, out, g.log())
	}

	// A connection to the published port: the container sees the client.
	l, err := ctr.Listen("tcp", "172.17.0.4:80")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			peer <- err.Error()
			return
		}
		defer c.Close()
		peer <- c.RemoteAddr().String()
		io.WriteString(c, "hello from 172.17.0.4")
	}()
	c, err := lan.Dial(ctx, "tcp", "192.168.2.116:8080")
	if err != nil {
		t.Fatalf("dial the published port: %v\n%s", err, g.log())
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	msg, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(msg) != "hello from 172.17.0.4" {
		t.Errorf("through the published port: %q, %v", msg, err)
	}
	if p := <-peer; !strings.HasPrefix(p, "192.168.2.104:") {
		t.Errorf("the container saw the connection from %s, want the client 192.168.2.104", p)
	}

	// Each flow is one whole line in conntrack's format: the ping,
	// masqueraded; the client's connection to the published port, answered
	// by the container to the client's own port.
	ct := cli(t, bin, "conntrack", "-L", "--api-socket", sock)
	icmp := regexp.MustCompile(`(?m)^icmp +1 \d+ src=172\.17\.0\.4 dst=192\.168\.2\.104 type=8 code=0 id=\d+ packets=\d+ bytes=\d+ src=192\.168\.2\.104 dst=192\.168\.2\.116 type=0 code=0 id=\d+ packets=[1-9]\d* bytes=\d+ mark=0 use=1$`)
	tcp := regexp.MustCompile(`(?m)^tcp +6 \d+ [A-Z_]+ src=192\.168\.2\.104 dst=192\.168\.2\.116 sport=(\d+) dport=8080 packets=\d+ bytes=\d+ src=172\.17\.0\.4 dst=192\.168\.2\.104 sport=80 dport=(\d+) packets=[1-9]\d* bytes=\d+ \[ASSURED\] mark=0 use=1$`)
	if !icmp.MatchString(ct) {
		t.Errorf("conntrack -L: no line for the masqueraded ping:\n%s", ct)
	}
	if m := tcp.FindStringSubmatch(ct); m == nil || m[1] != m[2] {
		t.Errorf("conntrack -L: no line for the published connection, answered to the client's port:\n%s", ct)
	}

	rules := cli(t, bin, "nat", "-L", "--api-socket", sock)
	mustContain(t, "nat -L", rules, "Chain PREROUTING", "Chain POSTROUTING", "MASQUERADE", "172.17.0.0/16",
		"Chain DOCKER", "DNAT", "dpt:8080 to:172.17.0.4:80")

	fdb := cli(t, bin, "fdb", "--api-socket", sock)
	mustContain(t, "fdb", fdb, "dev eth0 master usernat0")

	id := strings.TrimSpace(cli(t, bin, "publish", "192.168.2.116:8443:172.17.0.4:443", "--api-socket", sock))
	mustContain(t, "publish --list", cli(t, bin, "publish", "--list", "--api-socket", sock),
		"\t8080:172.17.0.4:80/tcp", id+"\t192.168.2.116:8443:172.17.0.4:443/tcp")
	mustContain(t, "nat -L after publish", cli(t, bin, "nat", "-L", "--api-socket", sock), "dpt:8443 to:172.17.0.4:443")
	cli(t, bin, "unpublish", id, "--api-socket", sock)
	if list := cli(t, bin, "publish", "--list", "--api-socket", sock); strings.Contains(list, "8443") {
		t.Errorf("unpublished rule still listed:\n%s", list)
	}
	// The slirp4netns protocol on the same socket.
	ac := &api.Client{Path: sock}
	sid, err := ac.AddHostFwd(ctx, api.HostFwd{Proto: "udp", HostPort: 5353, GuestAddr: netip.MustParseAddr("172.17.0.4"), GuestPort: 53})
	if err != nil {
		t.Fatal(err)
	}
	if err := ac.RemoveHostFwd(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.AddHostFwd(ctx, api.HostFwd{Proto: "tcp", HostPort: 80, GuestAddr: netip.MustParseAddr("10.0.2.100"), GuestPort: 80}); err == nil {
		t.Error("publishing to an address off the bridge was accepted")
	}

	stats := cli(t, bin, "stats", "--api-socket", sock)
	mustContain(t, "stats", stats, "gateway.forwarded ", "conntrack.entries ", "port.eth0.rx_frames ", "port.eth0.kernel.tx_dropped ")
	if m := regexp.MustCompile(`(?m)^gateway\.forwarded (\d+)$`).FindStringSubmatch(stats); m == nil || m[1] == "0" {
		t.Errorf("stats: the gateway forwarded nothing:\n%s", stats)
	}

	cli(t, bin, "conntrack", "-F", "--api-socket", sock)
	if ct := cli(t, bin, "conntrack", "-L", "--api-socket", sock); strings.Contains(ct, "192.168.2.104") {
		t.Errorf("conntrack -L after -F:\n%s", ct)
	}

	if err := g.stop(t); err != nil {
		t.Errorf("gateway exit: %v\n%s", err, g.log())
	}
	if log := g.log(); log != "" {
		t.Errorf("the gateway printed without -v:\n%s", log)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket left behind: %v", err)
	}
	for name, ns := range map[string]*netns.NS{"container": ctr, "client": lan} {
		if out, err := ns.Run(context.Background(), "ip", "link", "show", "eth0"); err == nil {
			t.Errorf("%s's eth0 left behind:\n%s", name, out)
		}
	}
}

// TestIntegrationGatewayUndo checks that a gateway that fails to start
// removes the devices it already created.
func TestIntegrationGatewayUndo(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	ctr, lan := newNS(t), newNS(t)
	// A live server on the socket makes the gateway fail last of all.
	sock := filepath.Join(t.TempDir(), "busy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	g, err := startGatewayProc(t, bin,
		"--port", ctr.Path()+":eth0=172.17.0.4/16",
		"--uplink", "tap:"+lan.Path()+":up0",
		"--uplink-addr", "192.168.2.116/24",
		"--api-socket", sock)
	if err == nil {
		g.stop(t)
		t.Fatal("gateway started on a socket in use")
	}
	if !strings.Contains(err.Error(), "socket in use") {
		t.Errorf("failure: %v", err)
	}
	for name, c := range map[string]struct {
		ns  *netns.NS
		dev string
	}{"container": {ctr, "eth0"}, "client": {lan, "up0"}} {
		if out, err := c.ns.Run(context.Background(), "ip", "link", "show", c.dev); err == nil {
			t.Errorf("%s's %s left behind:\n%s", name, c.dev, out)
		}
	}
}

// TestIntegrationHostUplink runs the command with the host-socket uplink,
// in a host namespace whose only neighbour is a remote namespace: the
// container reaches the remote through the host's sockets, a remote
// client reaches the container's published port and is seen as itself,
// and the conntrack listing shows the host's translation.
func TestIntegrationHostUplink(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	host, remote := slirpTopology(t)
	ctr := newNS(t)
	sock := filepath.Join(t.TempDir(), "usernat.sock")
	g, err := startGatewayProcIn(t, host, bin,
		"--subnet", "10.0.2.2/24",
		"--port", ctr.Path()+":tap0=10.0.2.100/24",
		"-p", "8080:10.0.2.100:80",
		"--mtu", "65520",
		"--api-socket", sock)
	if err != nil {
		t.Fatal(err)
	}

	seen, err := netns.Transfer(ctr, "198.51.100.2:7000", remote, "198.51.100.2:7000", 4<<20)
	if err != nil {
		t.Fatalf("outbound: %v\n%s", err, g.log())
	}
	if seen.Addr().String() != "198.51.100.1" {
		t.Errorf("the remote saw the container as %v, want the host", seen)
	}
	seen, err = netns.Transfer(remote, "198.51.100.1:8080", ctr, "10.0.2.100:80", 4<<20)
	if err != nil {
		t.Fatalf("inbound: %v\n%s", err, g.log())
	}
	if seen.Addr().String() != "198.51.100.2" {
		t.Errorf("the container saw the client as %v, want 198.51.100.2", seen)
	}

	list := cli(t, bin, "conntrack", "-L", "--api-socket", sock)
	mustContain(t, "conntrack -L", list,
		"src=10.0.2.100 dst=198.51.100.2 sport=",
		"src=198.51.100.2 dst=198.51.100.1 sport=7000",
		"dst=198.51.100.1 sport="+strconv.Itoa(int(seen.Port()))+" dport=8080",
		"src=10.0.2.100 dst=198.51.100.2 sport=80 dport="+strconv.Itoa(int(seen.Port())))
	mustContain(t, "nat -L", cli(t, bin, "nat", "-L", "--api-socket", sock), "dpt:8080 to:10.0.2.100:80")

	id := strings.TrimSpace(cli(t, bin, "publish", "8081:10.0.2.100:81", "--api-socket", sock))
	if _, err := netns.Transfer(remote, "198.51.100.1:8081", ctr, "10.0.2.100:81", 1000); err != nil {
		t.Errorf("a port published at run time: %v", err)
	}
	cli(t, bin, "unpublish", id, "--api-socket", sock)
	if _, err := netns.Transfer(remote, "198.51.100.1:8081", ctr, "10.0.2.100:81", 1000); err == nil {
		t.Error("an unpublished port still carries connections")
	}
	mustContain(t, "stats", cli(t, bin, "stats", "--api-socket", sock), "hostnet.tcp_opened 1", "hostnet.inbound_opened")
	if err := g.stop(t); err != nil {
		t.Errorf("exit: %v\n%s", err, g.log())
	}
}

// A gateway told to stop while it starts (SIGINT or SIGTERM between its
// start and its ready signal) undoes what it made and exits without
// writing the ready fd: a supervisor waiting on it heard "ready" from a
// gateway going away.
func TestIntegrationGatewayStoppedWhileStarting(t *testing.T) {
	netns.RequirePrivileged(t)
	ctr := newNS(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the signal came while it started
	err = runGateway(ctx, []string{"--port", ctr.Path() + ":tap0=10.0.2.100/24", "--subnet", "10.0.2.2/24",
		"--api-socket", sock, "--ready-fd", strconv.Itoa(int(w.Fd()))}, io.Discard)
	w.Close()
	if err != nil {
		t.Fatalf("runGateway: %v", err)
	}
	if b, _ := io.ReadAll(r); len(b) != 0 {
		t.Errorf("the ready fd says %q", b)
	}
	if out, err := ctr.Run(context.Background(), "ip", "link", "show", "tap0"); err == nil {
		t.Errorf("tap0 left behind:\n%s", out)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket left behind: %v", err)
	}
}
