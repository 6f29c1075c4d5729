package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/usernat/usernat/internal/benchkit"
)

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
	r, w, ready, err := benchkit.ReadyPipe()
	if err != nil {
		t.Close()
		return nil, err
	}
	t.onClose(func() { r.Close() })
	args := usernatArgs(t, mtu, filepath.Join(dir, "api.sock"))
	// --ready-fd: usernat writes "1" once its socket, its TAP devices and
	// the container's address and route are all in place.
	cmd := exec.Command(bin, append(args, "--ready-fd", "3")...)
	cmd.ExtraFiles = []*os.File{w}
	p, err := benchkit.StartProc(t.host, "usernat", cmd)
	w.Close() // the child has its own copy
	if err != nil {
		t.Close()
		return nil, err
	}
	t.onClose(p.Stop)
	t.alive = p.Alive
	if err := p.WaitReady(ctx, ready); err != nil {
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
	if err := benchkit.AptInstall(pkgs); err != nil {
		return err
	}
	if _, err := kernelNATTool(); err != nil {
		return err
	}
	return nil
}
