package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/usernat/usernat/internal/benchkit"
)

// The peers' names, as the report's columns and JSON keys say them.
const (
	slirpName   = "slirp4netns"
	pastaName   = "pasta"
	usernatName = "usernat"
)

// peer is one of the networks measured: how to start it in a topology,
// or why it cannot be.
type peer struct {
	name        string
	version     string
	desc        string // for progress lines
	unavailable string
	// start gives t its container namespace and starts the network
	// process in t.host, with the published ports, and returns when it
	// is ready.
	start func(ctx context.Context, t *topology) error
}

// slirp4netnsPeer runs slirp4netns as RootlessKit does (--mtu, -r,
// --disable-host-loopback, --api-socket, PID tap0), as root on a container namespace of this
// process's, and publishes the ports through its API socket.
func slirp4netnsPeer() peer {
	p := peer{name: slirpName, desc: "slirp4netns --configure --mtu=65520 --disable-host-loopback, hostfwd by API"}
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		p.unavailable = err.Error() + " (Debian package slirp4netns)"
		return p
	}
	p.version = firstLine(exec.Command("slirp4netns", "--version").Output())
	p.start = startSlirp4netns
	return p
}

func startSlirp4netns(ctx context.Context, t *topology) error {
	ctr, err := t.newContainer()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "usernat-bench-slirp-")
	if err != nil {
		return err
	}
	t.onClose(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "slirp4netns.sock")
	r, w, ready, err := benchkit.ReadyPipe()
	if err != nil {
		return err
	}
	t.onClose(func() { r.Close() })
	args := []string{"--configure", "--mtu=" + itoa(mtu), "--disable-host-loopback",
		"--api-socket", sock, "--ready-fd=3", "--netns-type=path", ctr.Path(), tap0}
	cmd := exec.Command("slirp4netns", args...)
	cmd.ExtraFiles = []*os.File{w}
	p, err := benchkit.StartProc(t.host, slirpName, cmd)
	w.Close() // the child has its own copy
	if err != nil {
		return err
	}
	t.onClose(p.Stop)
	t.proc = p
	if err := p.WaitReady(ctx, ready); err != nil {
		return fmt.Errorf("%w (ran: slirp4netns %s)", err, strings.Join(args, " "))
	}
	for _, fwd := range []struct {
		proto     string
		host, ctr int
	}{{"tcp", publishedPort, containerPort}, {"udp", publishedUDPPort, containerUDPPort}} {
		if err := slirpHostfwd(sock, fwd.proto, fwd.host, slirpContainer.Addr(), fwd.ctr); err != nil {
			return fmt.Errorf("add_hostfwd %s %d: %w%s", fwd.proto, fwd.host, err, p.Output())
		}
	}
	return nil
}

// slirpHostfwd asks slirp4netns, over its API socket, to publish a port:
// one JSON request per connection, one reply, then EOF.
func slirpHostfwd(sock, proto string, hostPort int, guest netip.Addr, guestPort int) error {
	type args struct {
		Proto     string `json:"proto"`
		HostAddr  string `json:"host_addr"`
		HostPort  int    `json:"host_port"`
		GuestAddr string `json:"guest_addr"`
		GuestPort int    `json:"guest_port"`
	}
	req, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments args   `json:"arguments"`
	}{"add_hostfwd", args{proto, "0.0.0.0", hostPort, guest.String(), guestPort}})
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("unix", sock, benchkit.DialTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(benchkit.DialTimeout))
	if _, err := c.Write(req); err != nil {
		return err
	}
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(io.LimitReader(c, 64<<10))
	if err != nil {
		return err
	}
	var resp struct {
		Return *struct {
			ID int `json:"id"`
		} `json:"return"`
		Error *struct {
			Desc string `json:"desc"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return fmt.Errorf("reply %q: %w", b, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("%s", resp.Error.Desc)
	}
	if resp.Return == nil {
		return fmt.Errorf("reply %q", b)
	}
	return nil
}

// pastaPeer runs pasta the rootless way, the only one that works here: as
// root it drops to nobody and then cannot open the container's namespace.
// The container is a user and network namespace an unprivileged user made
// (setpriv to nobody, unshare --user --map-root-user --net), pasta runs as
// that user too and joins it, and opens the world-usable tun node of
// privateTun. pasta copies the host's address and default route into the
// container.
func pastaPeer() peer {
	p := peer{name: pastaName, desc: "pasta -4 --config-net -m 65520 -t 8080:80 -u 5353:53, as nobody"}
	for _, tool := range []string{"pasta", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			p.unavailable = err.Error() + " (Debian packages passt, util-linux)"
			return p
		}
	}
	p.version = "unknown version"
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "passt").Output(); err == nil && len(out) > 0 {
		p.version = "passt " + string(out)
	}
	p.start = startPasta
	return p
}

// asNobody runs a command as an unprivileged user; setpriv clears the
// parent-death signal with the user change, and sets it again.
func asNobody(args ...string) *exec.Cmd {
	return exec.Command("setpriv", append([]string{"--reuid=" + itoa(nobodyID), "--regid=" + itoa(nobodyID),
		"--clear-groups", "--pdeathsig=SIGKILL"}, args...)...)
}

func startPasta(ctx context.Context, t *topology) error {
	// The container: sleep, in namespaces of its own, as nobody.
	holder, err := benchkit.StartProc(t.host, "pasta's container", asNobody("unshare", "--user", "--map-root-user", "--net", "sleep", "infinity"))
	if err != nil {
		return err
	}
	t.onClose(holder.Stop)
	nsFile := fmt.Sprintf("/proc/%d/ns/net", holder.Pid())
	var ns *os.File
	if err := holder.WaitReady(ctx, func() error {
		// unshare has made the namespaces and mapped the user once it
		// runs sleep.
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", holder.Pid()))
		if err != nil || strings.TrimSpace(string(comm)) != "sleep" {
			return benchkit.ErrNotYet
		}
		ns, err = os.Open(nsFile)
		return err
	}); err != nil {
		return fmt.Errorf("pasta's container: %w", err)
	}
	t.onClose(func() { ns.Close() })
	// Held open here, the namespace outlives a container process that dies.
	ctr := nsPath(fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd()))
	t.container = ctr
	if err := ctr.Do(func() error { return exec.Command("ip", "link", "set", "lo", "up").Run() }); err != nil {
		return fmt.Errorf("pasta's container: lo up: %w", err)
	}

	// pasta logs to the system logger unless given a file: a file of
	// its own, which its user may write, keeps it off the machine's.
	dir, err := os.MkdirTemp("", "usernat-bench-pasta-")
	if err != nil {
		return err
	}
	t.onClose(func() { os.RemoveAll(dir) })
	logFile := filepath.Join(dir, "pasta.log")
	if err := os.WriteFile(logFile, nil, 0o600); err != nil {
		return err
	}
	if err := os.Chown(logFile, nobodyID, nobodyID); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	args := []string{"pasta", "-f", "-q", "-4", "-l", logFile, "--config-net", "-m", itoa(mtu),
		"-t", fmt.Sprintf("%d:%d", publishedPort, containerPort),
		"-u", fmt.Sprintf("%d:%d", publishedUDPPort, containerUDPPort),
		"-T", "none", "-U", "none", itoa(holder.Pid())}
	p, err := benchkit.StartProc(t.host, pastaName, asNobody(args...))
	if err != nil {
		return err
	}
	t.onClose(p.Stop)
	t.proc = p
	// pasta has no ready signal: it is ready when the container has the
	// host's address and both ports listen on the host.
	if err := p.WaitReady(ctx, func() error {
		var addrOK bool
		if err := ctr.Do(func() error {
			addrOK = hasAddr(hostAddr.Addr())
			return nil
		}); err != nil {
			return err
		}
		if !addrOK {
			return fmt.Errorf("%w: the container has no address %s", benchkit.ErrNotYet, hostAddr.Addr())
		}
		return t.host.Do(func() error {
			for _, l := range []struct {
				proto string
				port  int
			}{{"tcp", publishedPort}, {"udp", publishedUDPPort}} {
				if ok, err := listening(l.proto, l.port); err != nil {
					return err
				} else if !ok {
					return fmt.Errorf("%w: nothing listens on %s port %d", benchkit.ErrNotYet, l.proto, l.port)
				}
			}
			return nil
		})
	}); err != nil {
		if b, _ := os.ReadFile(logFile); len(b) > 0 {
			err = fmt.Errorf("%w; log: %s", err, strings.Join(strings.Fields(string(b[max(0, len(b)-benchkit.OutputTail):])), " "))
		}
		return fmt.Errorf("%w (ran: setpriv ... %s)", err, strings.Join(args, " "))
	}
	return nil
}

// hasAddr says whether an interface of the calling thread's namespace has
// addr.
func hasAddr(addr netip.Addr) bool {
	ifaces, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, ifc := range ifaces {
		as, _ := ifc.Addrs()
		for _, a := range as {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == addr {
				return true
			}
		}
	}
	return false
}

// usernatPeer runs usernat's host-socket mode on a container namespace of
// this process's, with slirp4netns's addressing.
func usernatPeer(un benchkit.Usernat) peer {
	p := peer{name: usernatName, desc: "usernat gateway --uplink host", unavailable: un.Reason}
	if un.Bin != "" {
		p.version = un.Bin
		p.desc += " (" + un.Bin + ")"
	}
	p.start = func(ctx context.Context, t *topology) error { return startUsernat(ctx, t, un.Bin) }
	return p
}

func startUsernat(ctx context.Context, t *topology, bin string) error {
	ctr, err := t.newContainer()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "usernat-bench-api-")
	if err != nil {
		return err
	}
	t.onClose(func() { os.RemoveAll(dir) })
	r, w, ready, err := benchkit.ReadyPipe()
	if err != nil {
		return err
	}
	t.onClose(func() { r.Close() })
	// --ready-fd: usernat writes "1" once its socket, the container's TAP
	// with its address and route, and the published ports are in place.
	args := []string{"gateway", "--uplink", "host",
		"--subnet", slirpGateway.String(),
		"--port", ctr.Path() + ":" + tap0 + "=" + slirpContainer.String(),
		"-p", fmt.Sprintf("%d:%s:%d/tcp", publishedPort, slirpContainer.Addr(), containerPort),
		"-p", fmt.Sprintf("%d:%s:%d/udp", publishedUDPPort, slirpContainer.Addr(), containerUDPPort),
		"--mtu", itoa(mtu),
		"--api-socket", filepath.Join(dir, "api.sock"),
		"--ready-fd", "3",
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{w}
	p, err := benchkit.StartProc(t.host, usernatName, cmd)
	w.Close()
	if err != nil {
		return err
	}
	t.onClose(p.Stop)
	t.proc = p
	if err := p.WaitReady(ctx, ready); err != nil {
		return fmt.Errorf("%w (ran: %s %s)", err, bin, strings.Join(args, " "))
	}
	return nil
}

func firstLine(b []byte, err error) string {
	if err != nil {
		return "unknown version"
	}
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
