package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/usernat/usernat/internal/netns"
)

// TestIntegrationRootlessKitPodman runs RootlessKit and Podman, as Debian
// ships them, with this command in slirp4netns's place
// (bench/rootless/compat.sh -usernat-only), with the host's loopback
// closed and open: every check of each run (the container's address and
// route, a connection out, DNS, the host's loopback, a download, a
// published port) must pass. .ci/test installs what it runs.
func TestIntegrationRootlessKitPodman(t *testing.T) {
	netns.RequirePrivileged(t)
	for _, tool := range []string{"rootlesskit", "podman", "newuidmap", "busybox", "socat", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: sh .ci/test installs it", tool)
		}
	}
	out, err := exec.Command("sh", "../../bench/rootless/compat.sh", "-install=false", "-usernat-only").CombinedOutput()
	if err != nil {
		t.Fatalf("compat.sh: %v\n%s", err, out)
	}
	// Four runs (RootlessKit and Podman, loopback off and on) of eight
	// checks each.
	if n := strings.Count(string(out), " ok\n"); n != 32 || strings.Contains(string(out), "FAILED") {
		t.Fatalf("%d checks passed, want 32:\n%s", n, out)
	}
}
