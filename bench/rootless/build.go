package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	usernatPkg   = "github.com/usernat/usernat/cmd/usernat"
	buildTimeout = 10 * time.Minute
)

// usernatBinary is the usernat command to measure, or why there is none.
type usernatBinary struct {
	bin    string
	reason string
}

// usernatFrom finds the binary the outer process built or the user named.
// Run directly inside private namespaces without -usernat, it builds one
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

// ensureTools checks for the programs the harness runs and, when install
// is set, installs the Debian packages of those missing. A missing peer
// that cannot be installed is reported in its column, not here.
func ensureTools(install bool) error {
	var pkgs []string
	for _, tp := range []struct{ tool, pkg string }{
		{"ip", "iproute2"}, {"unshare", "util-linux"}, {"setpriv", "util-linux"},
		{"slirp4netns", "slirp4netns"}, {"pasta", "passt"},
	} {
		if _, err := exec.LookPath(tp.tool); err != nil && !slices.Contains(pkgs, tp.pkg) {
			pkgs = append(pkgs, tp.pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	if !install {
		for _, tool := range []string{"ip", "unshare"} {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("missing Debian packages %s (apt-get install them, or drop -install=false)", strings.Join(pkgs, " "))
			}
		}
		return nil
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
