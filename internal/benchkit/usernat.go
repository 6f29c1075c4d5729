package benchkit

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const (
	usernatPkg   = "github.com/usernat/usernat/cmd/usernat"
	buildTimeout = 10 * time.Minute
)

// Usernat is the usernat command to measure, or why there is none.
type Usernat struct {
	Bin    string // the executable; empty when Reason says why there is none
	Reason string
}

// UsernatFrom finds the usernat binary to measure: bin, the -usernat flag
// (a path, or a name looked up in PATH), when set; else the one the outer
// run built, or why it could not (UnavailEnv). Run directly inside
// private namespaces without either, it builds one itself with tags
// (which works offline when the module cache has everything) and returns
// the function that removes it.
func UsernatFrom(bin, tags string) (Usernat, func()) {
	none := func() {}
	if bin != "" {
		if !strings.ContainsRune(bin, '/') {
			// A bare name is looked up in PATH, as a shell would.
			p, err := exec.LookPath(bin)
			if err != nil {
				return Usernat{Reason: err.Error()}, none
			}
			bin = p
		}
		st, err := os.Stat(bin)
		switch {
		case err != nil:
			return Usernat{Reason: err.Error()}, none
		case st.IsDir() || st.Mode().Perm()&0o111 == 0:
			return Usernat{Reason: bin + " is not an executable file"}, none
		}
		return Usernat{Bin: bin}, none
	}
	if reason := os.Getenv(UnavailEnv); reason != "" {
		return Usernat{Reason: reason}, none
	}
	dir, err := os.MkdirTemp("", "usernat-bench-bin-")
	if err != nil {
		return Usernat{Reason: err.Error()}, none
	}
	remove := func() { os.RemoveAll(dir) }
	built, err := CompileUsernat(dir, tags)
	if err != nil {
		return Usernat{Reason: err.Error()}, remove
	}
	return Usernat{Bin: built}, remove
}

// CompileUsernat builds cmd/usernat of the module the working directory
// is in, into dir, with the given build tags, and returns its path. The
// error is go build's first line.
func CompileUsernat(dir, tags string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	bin := filepath.Join(dir, "usernat")
	args := []string{"build", "-o", bin}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, usernatPkg)
	log.Printf("building usernat: go %s", strings.Join(args, " "))
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

// AptInstall installs Debian packages with apt-get, updating the package
// lists first only when the install fails without.
func AptInstall(pkgs []string) error {
	aptInstall := append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)
	log.Printf("installing %s", strings.Join(pkgs, " "))
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
