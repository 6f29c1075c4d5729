package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/usernat/usernat/internal/benchkit"
)

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
	return benchkit.AptInstall(pkgs)
}
