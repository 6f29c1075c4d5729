package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/internal/netns"
)

// slirpTopology is a host namespace with an outside machine (remote,
// 198.51.100.2) beyond its eth0 (198.51.100.1), where the network process
// of the host uplink runs.
func slirpTopology(t *testing.T) (host, remote *netns.NS) {
	t.Helper()
	host, remote = newNS(t), newNS(t)
	for _, step := range []error{
		host.AddVeth("eth0", remote, "eth0"),
		host.SetLink("eth0", 0), remote.SetLink("eth0", 0),
		host.AddAddr("eth0", netip.MustParsePrefix("198.51.100.1/24")),
		remote.AddAddr("eth0", netip.MustParsePrefix("198.51.100.2/24")),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return host, remote
}

// checkSlirpNetwork checks, from the container's namespace ctr, what
// slirp4netns --configure gives it and what its network carries: the
// address, route and MTU on tap0, a connection out, the DNS address
// served (its port 54 refused at once), and a port published through the
// API socket at sock, as RootlessKit and Podman publish: to guest, or,
// when it is zero, with no guest_addr, as Podman sends it (the default
// guest, the container's address).
func checkSlirpNetwork(t *testing.T, g *gatewayProc, ctr, remote *netns.NS, sock string, mtu int, guest netip.Addr) {
	t.Helper()
	c := context.Background()
	out, err := ctr.Run(c, "ip", "-o", "addr", "show", "dev", "tap0")
	mustContain(t, "ip addr of tap0 ("+errString(err)+")", string(out), "inet 10.0.2.100/24")
	out, err = ctr.Run(c, "ip", "-o", "link", "show", "dev", "tap0")
	mustContain(t, "ip link of tap0 ("+errString(err)+")", string(out), "mtu "+strconv.Itoa(mtu), ",UP")
	out, err = ctr.Run(c, "ip", "route", "show", "default")
	mustContain(t, "default route ("+errString(err)+")", string(out), "default via 10.0.2.2 dev tap0")

	seen, err := netns.Transfer(ctr, "198.51.100.2:7000", remote, "198.51.100.2:7000", 1<<20)
	if err != nil {
		t.Fatalf("outbound: %v\n%s", err, g.log())
	}
	if seen.Addr().String() != "198.51.100.1" {
		t.Errorf("the remote saw the container as %v, want the host", seen)
	}
	// 10.0.2.3 is served (the gateway answers ARP for it): its port 54
	// is refused at once, where an address nobody has would time out.
	dctx, cancel := context.WithTimeout(c, 5*time.Second)
	defer cancel()
	if _, err := ctr.Dial(dctx, "tcp4", "10.0.2.3:54"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("10.0.2.3:54: %v, want refused", err)
	}

	cl := &api.Client{Path: sock, Timeout: 5 * time.Second}
	id, err := cl.AddHostFwd(c, api.HostFwd{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 8080, GuestAddr: guest, GuestPort: 80})
	if err != nil {
		t.Fatalf("add_hostfwd: %v\n%s", err, g.log())
	}
	if id != 1 {
		t.Errorf("the first add_hostfwd's id: %d, want 1, as slirp4netns numbers them", id)
	}
	seen, err = netns.Transfer(remote, "198.51.100.1:8080", ctr, "10.0.2.100:80", 1<<20)
	if err != nil {
		t.Fatalf("inbound: %v\n%s", err, g.log())
	}
	if seen.Addr().String() != "198.51.100.2" {
		t.Errorf("the container saw the client as %v, want 198.51.100.2", seen)
	}
}

// usernat takes slirp4netns's command line, as Podman runs it (-c, -r,
// -e, --netns-type=path): it configures the container's tap0, carries its
// flows, serves DNS at 10.0.2.3 and the API, and exits when its exit fd
// closes, taking tap0 with it.
func TestIntegrationSlirpCommandLine(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	host, remote := slirpTopology(t)
	ctr := newNS(t)
	sock := filepath.Join(t.TempDir(), "s4nn.sock")
	er, ew, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ew.Close()
	g, err := startProcIn(t, host, bin, []*os.File{er}, "--configure", "--mtu=65520", "-r", "3", "-e", "4",
		"--disable-host-loopback", "--api-socket", sock, "--netns-type=path", ctr.Path(), "tap0")
	er.Close()
	if err != nil {
		t.Fatal(err)
	}
	checkSlirpNetwork(t, g, ctr, remote, sock, 65520, netip.Addr{})

	exitsOnExitFD(t, g, ew)
	if out, err := ctr.Run(context.Background(), "ip", "link", "show", "tap0"); err == nil {
		t.Errorf("tap0 still there after the exit:\n%s", out)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket after the exit: %v", err)
	}
}

// As RootlessKit runs it: usernat as an unprivileged user, for a process
// in a user and network namespace of that user's (PID, not a path, and no
// --configure: RootlessKit's child configures tap0, here the test). The
// device is opened inside the user namespace by the helper.
func TestIntegrationSlirpUserNamespace(t *testing.T) {
	netns.RequirePrivileged(t)
	if fi, err := os.Stat("/dev/net/tun"); err != nil || fi.Mode().Perm()&0o006 != 0o006 {
		t.Fatalf("/dev/net/tun (%v, %v) must be usable by every user, as on Debian, for a rootless network process", fi.Mode(), err)
	}
	bin := buildBinary(t)
	dir := shareWithNobody(t, filepath.Dir(bin))
	host, remote := slirpTopology(t)
	for _, configure := range []bool{false, true} {
		t.Run(map[bool]string{false: "RootlessKit", true: "-c"}[configure], func(t *testing.T) {
			pid, ctr := nobodyContainer(t)

			sock := filepath.Join(dir, "s4nn-"+pid+".sock")
			args := append(asNobody, bin, "--mtu", "65520", "-r", "3", "--disable-host-loopback", "--api-socket", sock)
			if configure {
				args = append(args, "-c") // the helper inside the user namespace configures tap0
			}
			g, err := startProcIn(t, host, "setpriv", nil, append(args, pid, "tap0")...)
			if err != nil {
				t.Fatal(err)
			}
			// No guest_addr (Podman's requests have none, RootlessKit's
			// may have none): the network's .100, with or without -c,
			// as slirp4netns publishes it.
			guest := netip.Addr{}
			if !configure {
				// RootlessKit's child configures the device usernat
				// opened.
				for _, args := range [][]string{
					{"addr", "add", "10.0.2.100/24", "dev", "tap0"},
					{"link", "set", "tap0", "up"},
					{"route", "add", "default", "via", "10.0.2.2"},
				} {
					if err := ctr.IP(args...); err != nil {
						t.Fatal(err)
					}
				}
			}
			checkSlirpNetwork(t, g, ctr, remote, sock, 65520, guest)
			if err := g.stop(t); err != nil {
				t.Errorf("exit: %v\n%s", err, g.log())
			}
			if strings.Contains(g.log(), "level=ERROR") {
				t.Errorf("errors logged:\n%s", g.log())
			}
		})
	}
}

// slirp4netns -c brings the container's loopback up too (since v0.4.0,
// for Podman, which makes the namespace itself and leaves lo down), and
// the gateway answers pings to its address and to the DNS address, as
// libslirp does.
func TestIntegrationSlirpConfigureLoopbackAndPing(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	host, _ := slirpTopology(t)
	ctr := newNS(t)
	if err := ctr.IP("link", "set", "lo", "down"); err != nil {
		t.Fatal(err)
	}
	g, err := startProcIn(t, host, bin, nil, "--configure", "--mtu=65520", "-r", "3", "--netns-type=path", ctr.Path(), "tap0")
	if err != nil {
		t.Fatal(err)
	}
	out, err := ctr.Run(context.Background(), "ip", "-o", "link", "show", "dev", "lo")
	if err != nil || !strings.Contains(string(out), ",UP") {
		t.Errorf("lo after -c (%v): %s", err, out)
	}
	for _, dst := range []string{"10.0.2.2", "10.0.2.3"} {
		if out, err := ctr.Run(context.Background(), "ping", "-c", "1", "-W", "2", dst); err != nil {
			t.Errorf("ping %s: %v\n%s", dst, err, out)
		}
	}
	if err := g.stop(t); err != nil {
		t.Errorf("exit: %v\n%s", err, g.log())
	}
}

// As Podman runs it: inside Podman's user namespace (an unprivileged
// user's), on a container namespace that user namespace owns, given by
// path, with -c and -e, while the process itself stays in the host's
// network namespace, which it may not enter again once it left it.
func TestIntegrationSlirpPodmanUserNamespace(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	dir := shareWithNobody(t, filepath.Dir(bin))
	host, remote := slirpTopology(t)
	sock, pidFile := filepath.Join(dir, "s4nn.sock"), filepath.Join(dir, "ctr.pid")
	er, ew, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ew.Close()
	// In nobody's user namespace: the container's network namespace
	// (held by sleep), then usernat on it, as Podman's own process.
	// The container's sleep is killed when the test ends, whatever way;
	// it ends by itself after 300 s besides.
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			exec.Command("kill", strings.TrimSpace(string(b))).Run()
		}
	})
	script := `unshare --net sleep 300 & pid=$!
while [ "$(readlink /proc/$pid/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.01; done
echo $pid > ` + pidFile + `
exec "$0" --disable-host-loopback --mtu=65520 -c -e 4 -r 3 --api-socket ` + sock + ` --netns-type=path /proc/$pid/ns/net tap0`
	g, err := startProcIn(t, host, "setpriv", []*os.File{er}, append(asNobody, "unshare", "--user", "--map-root-user", "sh", "-c", script, bin)...)
	er.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	ctr, err := netns.Open("/proc/" + pid + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Close()
	checkSlirpNetwork(t, g, ctr, remote, sock, 65520, netip.Addr{})

	exitsOnExitFD(t, g, ew)
}

// exitsOnExitFD closes ew, the write end of g's exit fd, and waits for g
// to exit, cleanly.
func exitsOnExitFD(t *testing.T, g *gatewayProc, ew *os.File) {
	t.Helper()
	ew.Close()
	select {
	case err := <-g.exited:
		if err != nil {
			t.Errorf("exit after the exit fd closed: %v\n%s", err, g.log())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after its exit fd closed:\n%s", g.log())
	}
}

// asNobody is setpriv's arguments that run a command as nobody.
var asNobody = []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}

// shareWithNobody opens dir, and the directories above it up to the temp
// directory, to every user: nobody runs the binary there and makes its
// socket there. It returns dir.
func shareWithNobody(t *testing.T, dir string) string {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A host whose resolv.conf names no IPv4 nameserver when the network
// starts (a boot before its network is up) has DNS at 10.0.2.3 once the
// file names one, as slirp4netns reads the file at each query: usernat
// on its command line follows the file too, with the host's loopback
// shut off, as Podman runs it. The host here is a mount namespace whose
// resolv.conf is a file the test writes.
func TestIntegrationSlirpDNSWithoutNameserver(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	host, _ := slirpTopology(t)
	ctr := newNS(t)
	echo, err := netns.UDPEcho(host, "198.51.100.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("search example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `mount --bind "$1" /etc/resolv.conf && exec "$0" --disable-host-loopback -c -r 3 --netns-type=path "$2" tap0`
	g, err := startProcIn(t, host, "unshare", nil, "--mount", "sh", "-c", script, bin, conf, ctr.Path())
	if err != nil {
		t.Fatal(err)
	}
	// Written in place, as the bind mount shows the file's inode; read
	// at most once a second.
	if err := os.WriteFile(conf, []byte("nameserver 198.51.100.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	c, err := ctr.Dial(context.Background(), "udp4", "10.0.2.3:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("query"))
	buf := make([]byte, 100)
	if n, err := c.Read(buf); err != nil || !strings.HasSuffix(string(buf[:n]), " query") {
		t.Errorf("DNS at 10.0.2.3 once resolv.conf names 198.51.100.1: %q, %v; want its answer\n%s", buf[:n], err, g.log())
	}
	if err := g.stop(t); err != nil {
		t.Errorf("exit: %v\n%s", err, g.log())
	}
}

// A caller may hold the container's namespaces open and name them by
// descriptor, /proc/self/fd/N, as slirp4netns takes them (it opens them in
// a child of its own, which shares its descriptors), with any N: here the
// user namespace is usernat's fd 3, the one its TAP helper's socket takes
// in the helper.
func TestIntegrationSlirpNamespacesByDescriptor(t *testing.T) {
	netns.RequirePrivileged(t)
	bin := buildBinary(t)
	shareWithNobody(t, filepath.Dir(bin)) // nobody runs it
	host, _ := slirpTopology(t)
	pid, ctr := nobodyContainer(t)
	// The ready pipe moves from fd 3 to 5, and fds 3 and 4 hold the user
	// and network namespaces.
	script := `u=$1 n=$2; shift 2; exec "$0" "$@" 5>&3 3<"$u" 4<"$n"`
	g, err := startProcIn(t, host, "setpriv", nil, append(asNobody, "sh", "-c", script, bin, "/proc/"+pid+"/ns/user", "/proc/"+pid+"/ns/net",
		"-c", "-r", "5", "--netns-type=path", "--userns-path=/proc/self/fd/3", "/proc/self/fd/4", "tap0")...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ctr.Run(context.Background(), "ip", "-o", "addr", "show", "dev", "tap0")
	mustContain(t, "ip addr of tap0 ("+errString(err)+")", string(out), "inet 10.0.2.100/24")
	if err := g.stop(t); err != nil {
		t.Errorf("exit: %v\n%s", err, g.log())
	}
}

// --exit-fd is watched as slirp4netns watches it, with poll(2) for a
// hang-up: the caller's open file description is left as it was, not
// made non-blocking under whoever else reads it (a shell's stdin, with
// --exit-fd=0), data written to it ends nothing, and its last writer
// closing ends the network. Released, the watch leaves no goroutine.
func TestWatchExitFD(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := p[0], p[1]
	defer unix.Close(r)
	wOpen := true
	defer func() {
		if wOpen { // closed by the test below, its number maybe another's now
			unix.Close(w)
		}
	}()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	release, err := watchExitFD(r, stop)
	if err != nil {
		t.Fatal(err)
	}
	if fl, err := unix.FcntlInt(uintptr(r), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("the exit fd's flags %#x (%v): made non-blocking", fl, err)
	}
	unix.Write(w, []byte("x"))
	select {
	case <-ctx.Done():
		t.Fatal("data on the exit fd ended the network")
	case <-time.After(200 * time.Millisecond):
	}
	unix.Close(w)
	wOpen = false
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the exit fd's writer closed, and the network goes on")
	}
	release()

	// Released before any hang-up: it returns, and stops nothing.
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	release, err = watchExitFD(p[0], stop2)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if ctx2.Err() != nil {
		t.Error("releasing the watch ended the network")
	}
}

// nobodyContainer makes a rootless container's namespaces: nobody's user
// and network namespaces, held by sleep (which ends by itself should the
// test not). It returns sleep's PID and the network namespace, both
// released when the test ends.
func nobodyContainer(t *testing.T) (pid string, ctr *netns.NS) {
	t.Helper()
	sleeper := exec.Command("setpriv", append(asNobody, "unshare", "--user", "--map-root-user", "--net", "sleep", "300")...)
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pid = strconv.Itoa(sleeper.Process.Pid)
	for i := 0; ; i++ { // until unshare has made them
		var own, its syscall.Stat_t
		syscall.Stat("/proc/self/ns/user", &own)
		if syscall.Stat("/proc/"+pid+"/ns/user", &its) == nil && its.Ino != own.Ino {
			break
		}
		if i == 100 {
			t.Fatal("the container's user namespace did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctr, err := netns.Open("/proc/" + pid + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctr.Close() })
	return pid, ctr
}

// The exit fd's hang-up ends the network without letting go of SIGTERM:
// one that comes during the shutdown that follows (a supervisor's, as it
// goes) is caught, not the end of the process before it cleans up. The
// check runs in a child test process, which such a signal would kill.
func TestExitFDKeepsSignalsCaught(t *testing.T) {
	if os.Getenv("USERNAT_TEST_SIGTERM") == "1" {
		ctx, leave, stop := shutdownContext(context.Background())
		defer stop()
		leave()
		<-ctx.Done()
		unix.Kill(os.Getpid(), unix.SIGTERM)
		time.Sleep(200 * time.Millisecond) // time for the runtime to act on it
		fmt.Println("survived")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExitFDKeepsSignalsCaught$", "-test.count=1")
	cmd.Env = append(os.Environ(), "USERNAT_TEST_SIGTERM=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "survived") {
		t.Fatalf("a SIGTERM after the exit fd's hang-up: %v\n%s", err, out)
	}
}
