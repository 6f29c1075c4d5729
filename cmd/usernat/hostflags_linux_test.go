package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usernat/usernat/internal/netns"
)

// Host mode with the flags that apply to it: each takes effect, the
// conntrack listing works, SIGINT stops it with status 0, and the CPU
// profile is written.
func TestIntegrationHostFlags(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	host, remote := slirpTopology(t)
	ctr := newNS(t)
	dir := t.TempDir()
	sock, prof := filepath.Join(dir, "usernat.sock"), filepath.Join(dir, "cpu.prof")
	echo, err := netns.UDPEcho(remote, "198.51.100.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	g, err := startGatewayProcIn(t, host, bin,
		"--subnet", "10.0.2.2/24",
		"--port", ctr.Path()+":tap0=10.0.2.100/24",
		"--timeout", "udp=7", "--timeout", "udp_stream=9",
		"--conntrack-max", "2",
		"--cpuprofile", prof,
		"--mtu", "1400",
		"-v",
		"--api-socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := ctr.Run(context.Background(), "ip", "-o", "link", "show", "dev", "tap0")
	mustContain(t, "tap0", string(out), "mtu 1400")

	// A UDP flow out, answered.
	c, err := ctr.Dial(context.Background(), "udp4", "198.51.100.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("hi"))
	buf := make([]byte, 100)
	if n, err := c.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "198.51.100.1:") {
		t.Fatalf("echo: %q %v\n%s", buf[:n], err, g.log())
	}
	list := cli(t, bin, "conntrack", "-L", "--api-socket", sock)
	m := regexp.MustCompile(`(?m)^udp\s+17\s+(\d+) src=10\.0\.2\.100 dst=198\.51\.100\.2`).FindStringSubmatch(list)
	if m == nil {
		t.Fatalf("no UDP entry:\n%s", list)
	}
	if n, _ := strconv.Atoi(m[1]); n > 9 {
		t.Errorf("UDP entry timeout %d s, want at most --timeout udp_stream=9:\n%s", n, list)
	}
	// --conntrack-max 2: more flows than that never make more entries.
	for port := 7001; port < 7006; port++ {
		netns.SendUDP(ctr, netip.MustParseAddrPort("198.51.100.2:"+strconv.Itoa(port)), 1)
	}
	time.Sleep(300 * time.Millisecond)
	list = cli(t, bin, "conntrack", "-L", "--api-socket", sock)
	if n := strings.Count(list, "\n"); n > 2 {
		t.Errorf("%d entries with --conntrack-max 2:\n%s", n, list)
	}

	g.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err = <-g.exited:
	case <-time.After(20 * time.Second):
		g.cmd.Process.Kill()
		t.Fatal("no exit on SIGINT")
	}
	var ee *exec.ExitError
	if err != nil && errors.As(err, &ee) {
		t.Errorf("exit on SIGINT: %v\n%s", err, g.log())
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Errorf("--cpuprofile: %v %v", fi, err)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("API socket left behind")
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("API socket still answers")
	}
	mustContain(t, "the log", g.log(), "gateway ready", "uplink=host")
}

// A port published to the --dns address is refused at start: else the
// gateway would start and list it, and a client of it would reach nothing
// (accepted on the host, then reset after --connect-timeout).
func TestIntegrationPublishToDNS(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	host, _ := slirpTopology(t)
	ctr := newNS(t)
	sock := filepath.Join(t.TempDir(), "usernat.sock")
	g, err := startGatewayProcIn(t, host, bin,
		"--subnet", "10.0.2.2/24",
		"--port", ctr.Path()+":tap0=10.0.2.100/24",
		"--dns", "10.0.2.3",
		"-p", "8080:10.0.2.3:80",
		"-v", "--api-socket", sock)
	if err == nil {
		g.stop(t)
		t.Fatal("the gateway started with -p to its --dns address")
	}
	mustContain(t, "the refusal", err.Error(), "exit status 2", "--dns")
}

// A gateway whose stderr is a pipe nobody reads any more (its supervisor
// went away) goes on, and shuts down as asked, though its log lines fail:
// Go kills a program that writes to a broken pipe on fd 2 with SIGPIPE
// unless it is notified, which would take the containers' network with
// it. slirp4netns ignores SIGPIPE too.
func TestIntegrationStderrGone(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	host, _ := slirpTopology(t)
	ctr := newNS(t)
	ready, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	logR, logW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "gateway", "--ready-fd", "3", "--subnet", "10.0.2.2/24",
		"--port", ctr.Path()+":tap0=10.0.2.100/24", "-v")
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.Stderr, cmd.Stdout = logW, logW
	if err := host.Start(cmd); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	logW.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()
	ready.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := ready.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("not ready: %v", err)
	}
	logR.Close()                       // the supervisor goes; the next log line finds no reader
	cmd.Process.Signal(syscall.SIGINT) // "shutting down" is logged
	select {
	case err = <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit on SIGINT")
	}
	if err != nil {
		t.Errorf("exit on SIGINT with stderr gone: %v, want status 0 (not killed by SIGPIPE)", err)
	}
}
