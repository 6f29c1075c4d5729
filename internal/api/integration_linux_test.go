package api

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/usernat/usernat/internal/netns"
)

// Client calls slirp4netns itself too (Debian's 1.2.0, which .ci/test
// installs): its add_hostfwd, and its list_hostfwd, whose entries are at
// the top level, with no "return" member (api.c,
// api_handle_req_list_hostfwd).
func TestIntegrationClientAgainstSlirp4netns(t *testing.T) {
	netns.RequirePrivileged(t)
	bin, err := exec.LookPath("slirp4netns")
	if err != nil {
		t.Fatal("no slirp4netns (sh .ci/test installs it):", err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	sock := filepath.Join(t.TempDir(), "s4nn.sock")
	cmd := exec.Command(bin, "--netns-type=path", "--api-socket", sock, ns.Path(), "tap0")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("no API socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := &Client{Path: sock, Timeout: 5 * time.Second}
	id, err := c.AddHostFwd(context.Background(), HostFwd{Proto: "tcp", HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: 18080, GuestAddr: netip.MustParseAddr("10.0.2.100"), GuestPort: 80})
	if err != nil {
		t.Fatalf("AddHostFwd: %v", err)
	}
	t.Logf("slirp4netns list_hostfwd reply: %s", raw(t, sock, `{"execute": "list_hostfwd"}`, true))
	list, err := c.ListHostFwd(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Errorf("ListHostFwd against slirp4netns = %+v, %v", list, err)
	}
}
