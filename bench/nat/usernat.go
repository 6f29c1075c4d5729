package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/usernat/usernat/internal/netns"
)

const (
	usernatPkg   = "github.com/usernat/usernat/cmd/usernat"
	buildTimeout = 10 * time.Minute
	readyTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
	outputTail   = 4 << 10 // bytes of usernat's output kept for error messages
)

// usernatBinary is the usernat command to measure, or why there is none.
type usernatBinary struct {
	bin    string
	reason string
}

// usernatFrom finds the binary the outer process built or the user named.
// Run directly inside a private namespace without -usernat, it builds one
// itself (which works offline when the module cache has everything) and
// returns the function that removes it.
func usernatFrom(cfg config) (usernatBinary, func()) {
	none := func() {}
	if cfg.usernat != "" {
		bin := cfg.usernat
		if !strings.ContainsRune(bin, '/') {
			// A bare name is looked up in PATH, as a shell would.
			p, err := exec.LookPath(bin)
			if err != nil {
				return usernatBinary{reason: err.Error()}, none
			}
			bin = p
		}
		st, err := os.Stat(bin)
		switch {
		case err != nil:
			return usernatBinary{reason: err.Error()}, none
		case st.IsDir() || st.Mode().Perm()&0o111 == 0:
			return usernatBinary{reason: bin + " is not an executable file"}, none
		}
		return usernatBinary{bin: bin}, none
	}
	if reason := os.Getenv(unavailEnv); reason != "" {
		return usernatBinary{reason: reason}, none
	}
	dir, err := os.MkdirTemp("", "usernat-bench-bin-")
	if err != nil {
		return usernatBinary{reason: err.Error()}, none
	}
	remove := func() { os.RemoveAll(dir) }
	bin, err := compileUsernat(dir, cfg.tags)
	if err != nil {
		return usernatBinary{reason: err.Error()}, remove
	}
	return usernatBinary{bin: bin}, remove
}

// compileUsernat builds cmd/usernat of the module the working directory
// is in, into dir, with the given build tags.
func compileUsernat(dir, tags string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	bin := filepath.Join(dir, "usernat")
	args := []string{"build", "-o", bin}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, usernatPkg)
	progress("building usernat: go %s", strings.Join(args, " "))
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		msg = strings.TrimSuffix(msg, "; to add it:")
		return "", fmt.Errorf("go %s: %s", strings.Join(args, " "), msg)
	}
	return bin, nil
}

// usernatArgs are the flags issue 4 fixes for `usernat gateway`: the
// container's eth0 a TAP in the container namespace that usernat
// configures (address, link up, default route via the gateway), and the
// uplink a TAP in the client namespace, whose other side — the gateway's
// 192.168.2.116 — lives only in usernat.
func usernatArgs(t *topology, mtu int, sock string) []string {
	return []string{"gateway",
		"--subnet", gatewayAddr.String(),
		"--port", t.container.Path() + ":" + eth0 + "=" + containerAddr.String(),
		"--uplink", "tap:" + t.client.Path() + ":" + eth0,
		"--uplink-addr", hostAddr.String(),
		"-p", fmt.Sprintf("%d:%s:%d/tcp", publishedPort, containerAddr.Addr(), containerPort),
		"--mtu", itoa(mtu),
		"--api-socket", sock,
	}
}

// buildUsernat makes the reference experiment with the usernat command as
// the gateway: the same three namespaces, the host with neither bridge
// nor kernel NAT (usernat runs there, as the gateway would on a host),
// the container's and the client's eth0 TAP devices usernat creates.
func buildUsernat(ctx context.Context, bin string, mtu int) (*topology, error) {
	t, err := newTopology()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "usernat-bench-api-")
	if err != nil {
		t.Close()
		return nil, err
	}
	t.onClose(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	args := usernatArgs(t, mtu, sock)
	p, err := startUsernat(t.host, bin, args)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("failed to start: %w", err)
	}
	t.onClose(p.stop)
	t.alive = p.alive
	if err := p.waitReady(ctx); err != nil {
		t.Close()
		return nil, fmt.Errorf("%w (ran: %s %s)", err, bin, strings.Join(args, " "))
	}
	// The uplink TAP is the client's eth0: its address is the client's.
	if err := configureEnds(t, mtu); err != nil {
		t.Close()
		return nil, fmt.Errorf("configuring the client's eth0 that usernat created: %w", err)
	}
	return t, nil
}

type usernatProc struct {
	cmd     *exec.Cmd
	ready   *os.File // read end of the pipe usernat writes "1" to when ready
	out     *tail
	exited  chan struct{}
	waitErr error // set before exited is closed
}

func startUsernat(ns *netns.NS, bin string, args []string) (*usernatProc, error) {
	p := &usernatProc{out: &tail{}, exited: make(chan struct{})}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close() // the child has its own copy
	p.ready = r
	// --ready-fd: usernat writes "1" once its socket, its TAP devices and
	// the container's address and route are all in place.
	p.cmd = exec.Command(bin, append(args, "--ready-fd", "3")...)
	p.cmd.ExtraFiles = []*os.File{w}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Its own process group keeps the terminal's SIGINT from it, so it
	// stops when the harness says (after the measurement), and the
	// parent-death signal keeps it from outliving a harness that crashed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// A child it leaves behind may hold the output pipe open: do not wait
	// for that to call usernat exited.
	p.cmd.WaitDelay = time.Second
	if err := ns.Start(p.cmd); err != nil {
		r.Close()
		return nil, err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// alive returns an error when usernat has exited.
func (p *usernatProc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("usernat exited: %v%s", p.waitErr, p.out.suffix())
	default:
		return nil
	}
}

// waitReady waits for usernat's ready signal, its exit, or the timeout.
func (p *usernatProc) waitReady(ctx context.Context) error {
	got := make(chan error, 1)
	go func() { // ends at the signal, or when usernat exits and the pipe closes
		var b [1]byte
		_, err := p.ready.Read(b[:])
		got <- err
	}()
	timeout := time.NewTimer(readyTimeout)
	defer timeout.Stop()
	select {
	case err := <-got:
		if err != nil {
			<-p.exited
			return fmt.Errorf("exited before it was ready: %v%s", p.waitErr, p.out.suffix())
		}
		return nil
	case <-p.exited:
		return fmt.Errorf("exited before it was ready: %v%s", p.waitErr, p.out.suffix())
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout.C:
		return fmt.Errorf("not ready after %v%s", readyTimeout, p.out.suffix())
	}
}

// stop ends usernat the way a user would, with SIGTERM, so it removes
// what it created, and kills it if it takes too long. Then it kills what
// is left of usernat's process group: helpers it may have started.
func (p *usernatProc) stop() {
	defer p.ready.Close()
	pgid := p.cmd.Process.Pid
	defer syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		// ErrWaitDelay: it exited 0, leaving a child with its output.
		if p.waitErr != nil && !errors.Is(p.waitErr, exec.ErrWaitDelay) {
			log.Printf("usernat exit after SIGTERM: %v%s", p.waitErr, p.out.suffix())
		}
	case <-time.After(stopTimeout):
		log.Printf("usernat still running %v after SIGTERM; killing it", stopTimeout)
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
}

// tail keeps the last outputTail bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - outputTail; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// suffix is the output for an error message: empty, or "; output: ...".
func (t *tail) suffix() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.Join(strings.Fields(string(t.buf)), " ")
	if s == "" {
		return ""
	}
	return "; output: " + s
}

// ensureTools checks for the programs the harness runs and, when install
// is set, installs the Debian packages of those missing.
func ensureTools(install bool) error {
	var pkgs []string
	for _, tp := range []struct{ tool, pkg string }{{"ip", "iproute2"}, {"unshare", "util-linux"}} {
		if _, err := exec.LookPath(tp.tool); err != nil {
			pkgs = append(pkgs, tp.pkg)
		}
	}
	if _, err := kernelNATTool(); err != nil {
		pkgs = append(pkgs, "nftables")
	}
	if len(pkgs) == 0 {
		return nil
	}
	if !install {
		return fmt.Errorf("missing Debian packages %s (apt-get install them, or drop -install=false)", strings.Join(pkgs, " "))
	}
	aptInstall := append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)
	progress("installing %s", strings.Join(pkgs, " "))
	if apt("apt-get", aptInstall...) != nil {
		if err := apt("apt-get", "update", "-q"); err != nil {
			return err
		}
		if err := apt("apt-get", aptInstall...); err != nil {
			return err
		}
	}
	if _, err := kernelNATTool(); err != nil {
		return err
	}
	return nil
}

func apt(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}
