package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/internal/api"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeGateway is an api backend with canned inspection output.
type fakeGateway struct {
	mu      sync.Mutex
	fwds    []api.HostFwd
	flushed bool
}

func (f *fakeGateway) AddHostFwd(h api.HostFwd) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h.HostPort == 8080 && len(f.fwds) > 0 {
		return 0, errors.New("nat: port already published")
	}
	h.ID = len(f.fwds) + 2
	f.fwds = append(f.fwds, h)
	return h.ID, nil
}

func (f *fakeGateway) ListHostFwd() ([]api.HostFwd, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.HostFwd{}, f.fwds...), nil
}

func (f *fakeGateway) RemoveHostFwd(id int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, h := range f.fwds {
		if h.ID == id {
			f.fwds = append(f.fwds[:i], f.fwds[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("no published port with id %d", id)
}

const ctLine = "icmp     1 29 src=172.17.0.4 dst=192.168.2.104 type=8 code=0 id=7 packets=1 bytes=84 src=192.168.2.104 dst=192.168.2.116 type=0 code=0 id=7 packets=1 bytes=84 mark=0 use=1\n"

func (f *fakeGateway) ConntrackList(w io.Writer) error {
	_, err := io.WriteString(w, ctLine+ctLine)
	return err
}

func (f *fakeGateway) ConntrackFlush() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushed = true
	return 2, nil
}

func (f *fakeGateway) NATList(w io.Writer) error {
	_, err := io.WriteString(w, "Chain PREROUTING (policy ACCEPT)\n")
	return err
}

func (f *fakeGateway) FDBList(w io.Writer) error {
	_, err := io.WriteString(w, "02:42:ac:11:00:04 dev eth0 master usernat0\n")
	return err
}

func (f *fakeGateway) Stats() (map[string]uint64, error) {
	return map[string]uint64{"gateway.forwarded": 3, "conntrack.entries": 2}, nil
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestClientCommands(t *testing.T) {
	fk := &fakeGateway{}
	sock := filepath.Join(t.TempDir(), "usernat.sock")
	srv, err := api.Listen(sock, fk, api.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s := "--api-socket=" + sock

	tests := []struct {
		args         []string
		code         int
		stdout, errs string
	}{
		{[]string{"conntrack", "-L", s}, 0, ctLine + ctLine, "2 flow entries have been shown"},
		{[]string{"conntrack", "--api-socket", sock, "-F"}, 0, "", "emptied (2 entries)"},
		{[]string{"conntrack", s}, 2, "", "give one of -L"},
		{[]string{"conntrack", "-L", "-F", s}, 2, "", "give one of -L"},
		{[]string{"nat", "-L", "-n", s}, 0, "Chain PREROUTING (policy ACCEPT)\n", ""},
		{[]string{"nat", s}, 2, "", "give -L"},
		{[]string{"fdb", s}, 0, "02:42:ac:11:00:04 dev eth0 master usernat0\n", ""},
		{[]string{"fdb", "show", s}, 0, "02:42:ac:11:00:04 dev eth0 master usernat0\n", ""},
		{[]string{"fdb", "show", "bogus", s}, 2, "", `unexpected argument "bogus"`},
		{[]string{"fdb", "bogus", s}, 2, "", `unexpected argument "bogus"`},
		{[]string{"publish", "8080:172.17.0.4:80", s}, 0, "2\n", ""},
		{[]string{"publish", s, "192.168.2.116:5353-5354:172.17.0.5:53-54/udp"}, 0, "3\n", ""},
		{[]string{"publish", "8080:172.17.0.6:80", s}, 1, "", "usernat publish: nat: port already published"},
		{[]string{"publish", "8080", s}, 2, "", "usernat publish:"},
		{[]string{"publish", s}, 2, "", "want one SPEC"},
		{[]string{"publish", "--list", s}, 0, "2\t8080:172.17.0.4:80/tcp\n3\t192.168.2.116:5353-5354:172.17.0.5:53-54/udp\n", ""},
		{[]string{"unpublish", "2", s}, 0, "", ""},
		{[]string{"unpublish", "2", s}, 1, "", "no published port with id 2"},
		{[]string{"unpublish", "two", s}, 2, "", `"two" is not an id`},
		{[]string{"unpublish", s}, 2, "", "want one ID"},
		{[]string{"publish", "-l", s}, 0, "3\t192.168.2.116:5353-5354:172.17.0.5:53-54/udp\n", ""},
		{[]string{"stats", s}, 0, "conntrack.entries 2\ngateway.forwarded 3\n", ""},
		{[]string{"stats", "extra", s}, 2, "", "unexpected argument"},
		{[]string{"stats", "--api-socket", sock + ".none"}, 1, "", "usernat stats: api: stats on"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args[:len(tc.args)-1], " "), func(t *testing.T) {
			code, out, errs := runCmd(tc.args...)
			if code != tc.code || out != tc.stdout || !strings.Contains(errs, tc.errs) {
				t.Errorf("usernat %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q",
					tc.args, code, out, errs, tc.code, tc.stdout, tc.errs)
			}
		})
	}
	fk.mu.Lock()
	defer fk.mu.Unlock()
	if !fk.flushed {
		t.Error("conntrack -F did not flush")
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		code int
		out  string // in stdout
		errs string // in stderr
	}{
		{[]string{"--help"}, 0, "usage: usernat COMMAND", ""},
		{[]string{"-h"}, 0, "Commands:", ""},
		{[]string{"help"}, 0, "$XDG_RUNTIME_DIR/usernat.sock", ""},
		{[]string{"--version"}, 0, "usernat ", ""},
		{[]string{"gateway", "--help"}, 0, "--uplink tap:NETNS:IFNAME", ""},
		{[]string{"gateway", "-h"}, 0, "--timeout NAME=SECONDS", ""},
		{[]string{"conntrack", "--help"}, 0, "usernat conntrack -L|-F", ""},
		{[]string{"publish", "-h"}, 0, "SPEC is", ""},
		{[]string{}, 2, "", "usage: usernat COMMAND"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"gateway"}, 2, "", "give at least one --port"},
		{[]string{"gateway", "--mtu", "x"}, 2, "", "Run 'usernat gateway --help' for usage."},
		// The slirp4netns command line; its --help names what RootlessKit
		// and Podman look for.
		{[]string{"--help"}, 0, "--netns-type", ""},
		{[]string{"--help"}, 0, "--disable-host-loopback", ""},
		{[]string{"--help"}, 0, "--api-socket", ""},
		{[]string{"--help"}, 0, "--cidr", ""},
		{[]string{"-v"}, 0, "usernat ", ""},
		{[]string{"--mtu", "1500", "--version"}, 0, "(slirp4netns command line)", ""},
		{[]string{"--mtu", "65520"}, 2, "", "usernat: want PID|PATH [TAPNAME], got 0 arguments\nRun 'usernat --help' for usage."},
		{[]string{"--enable-sandbox", "1"}, 2, "", "flag provided but not defined: -enable-sandbox"},
		{[]string{"--netns-type=path", "/no/such/netns", "tap0"}, 2, "", "/no/such/netns: no such file"},
	}
	for _, tc := range tests {
		code, out, errs := runCmd(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.errs) {
			t.Errorf("usernat %q: exit %d, stdout %.60q, stderr %.200q", tc.args, code, out, errs)
		}
	}
}

func TestRulesPublisher(t *testing.T) {
	var r natRulesForTest
	p := r.publisher(t)
	g := netip.MustParseAddr("172.17.0.4")
	id, err := p.Publish(api.HostFwd{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 8080, GuestAddr: g, GuestPort: 80})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(api.HostFwd{Proto: "tcp", HostAddr: netip.MustParseAddr("192.168.2.116"), HostPort: 8080, GuestAddr: g, GuestPort: 81}); err == nil {
		t.Error("a conflicting publish was accepted")
	}
	id2, err := p.Publish(api.HostFwd{Proto: "udp", HostAddr: netip.MustParseAddr("192.168.2.116"), HostPort: 7000, HostPortEnd: 7009, GuestAddr: g, GuestPort: 53})
	if err != nil {
		t.Fatal(err)
	}
	list := p.List()
	want := []string{"8080:172.17.0.4:80/tcp", "192.168.2.116:7000-7009:172.17.0.4:53/udp"}
	if len(list) != 2 || list[0].ID != id || list[1].ID != id2 || formatPublish(list[0]) != want[0] || formatPublish(list[1]) != want[1] {
		t.Errorf("List = %+v", list)
	}
	if list[0].HostAddr != netip.IPv4Unspecified() || list[1].HostPortEnd != 7009 || list[1].GuestPortEnd != 0 {
		t.Errorf("List = %+v", list)
	}
	if err := p.Unpublish(r.masq); err == nil {
		t.Error("Unpublish removed the masquerade rule")
	}
	if err := p.Unpublish(id); err != nil {
		t.Fatal(err)
	}
	if err := p.Unpublish(id); err == nil {
		t.Error("Unpublish twice succeeded")
	}
	if l := p.List(); len(l) != 1 || l[0].ID != id2 {
		t.Errorf("after Unpublish: %+v", l)
	}
}

func TestAddCounters(t *testing.T) {
	m := map[string]uint64{}
	addCounters(m, "x", struct {
		Forwarded     uint64
		ICMPSent      uint64
		DropTTL       uint64
		RxFrames      uint64
		Entries       int
		Negative      int
		Name          string
		unexported    uint64
		IPv4Fragments uint32
	}{1, 2, 3, 4, 5, -1, "n", 6, 7})
	want := map[string]uint64{"x.forwarded": 1, "x.icmp_sent": 2, "x.drop_ttl": 3, "x.rx_frames": 4, "x.entries": 5, "x.ipv4_fragments": 7}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("addCounters = %v, want %v", m, want)
	}
}

// countingPort is a port over a device whose counters read as given.
type countingPort struct {
	bridge.Port
	c   bridge.KernelCounters
	err error
}

func (p countingPort) KernelCounters() (bridge.KernelCounters, error) { return p.c, p.err }

// A port's kernel counters show under kernel., and when they cannot be
// read, kernel.unreadable says so; a port without a device has neither.
func TestAddKernelCounters(t *testing.T) {
	pipe, _ := bridge.NewPipe(bridge.PipeConfig{})
	m := map[string]uint64{}
	addKernelCounters(m, "port.a.kernel", countingPort{pipe, bridge.KernelCounters{RxDropped: 2, TxDropped: 3}, nil})
	addKernelCounters(m, "port.b.kernel", countingPort{pipe, bridge.KernelCounters{}, os.ErrPermission})
	addKernelCounters(m, "port.c.kernel", pipe)
	want := map[string]uint64{"port.a.kernel.rx_dropped": 2, "port.a.kernel.tx_dropped": 3, "port.b.kernel.unreadable": 1}
	if !maps.Equal(m, want) {
		t.Fatalf("counters %v, want %v", m, want)
	}
}
