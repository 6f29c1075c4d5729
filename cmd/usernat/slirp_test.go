package main

import (
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/usernat/usernat/nat/hostnet"
)

// The slirp4netns command line becomes the gateway's configuration, with
// slirp4netns's network: the gateway at the network's .2 (where the
// host's loopback is, unless disabled), DNS at .3, the container at .100
// (given to it with --configure only).
func TestParseSlirpArgs(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	sock := filepath.Join(t.TempDir(), "s4nn.sock")
	cfg, version, err := parseSlirpArgs([]string{"--mtu", "65520", "-r", "-1", "--disable-host-loopback", "--api-socket", sock, pid, "tap0"})
	if err != nil || version {
		t.Fatal(err, version)
	}
	want := portSpec{NetNS: "/proc/" + pid + "/ns/net", IfName: "tap0"}
	if len(cfg.Ports) != 1 || cfg.Ports[0] != want || cfg.Subnet != netip.MustParsePrefix("10.0.2.2/24") || cfg.MTU != 65520 ||
		cfg.HostLoopback.IsValid() || cfg.DNS != netip.MustParseAddr("10.0.2.3") || !cfg.DNSOptional || cfg.APISocket != sock ||
		!cfg.Uplink.Host || cfg.ExitFD != -1 || cfg.ReadyFD != -1 {
		t.Errorf("RootlessKit's command line: %+v", cfg)
	}

	// Podman's: a path, --configure, and no API socket; with
	// outbound_addr6, --outbound-addr6, which it passes when --help names
	// --outbound-addr and --enable-ipv6.
	cfg, _, err = parseSlirpArgs([]string{"-c", "--cidr", "10.99.0.0/16", "--netns-type=path", "-6", "--outbound-addr6=2001:db8::7", "--disable-dns", "/proc/self/ns/net", "eth9"})
	if err != nil {
		t.Fatal(err)
	}
	want = portSpec{NetNS: "/proc/self/ns/net", IfName: "eth9", Addr: netip.MustParsePrefix("10.99.0.100/16")}
	if cfg.Ports[0] != want || cfg.Subnet != netip.MustParsePrefix("10.99.0.2/16") || cfg.HostLoopback != netip.MustParseAddr("10.99.0.2") ||
		cfg.DNS.IsValid() || cfg.APISocket != "" || !cfg.IPv6Asked || cfg.Outbound6Asked != "2001:db8::7" || cfg.MTU != 1500 {
		t.Errorf("Podman's command line: %+v", cfg)
	}
	// A path without a slash is a file in the working directory, as
	// slirp4netns opens it, not one of /run/netns.
	dir := t.TempDir()
	if err := os.Symlink("/proc/self/ns/net", filepath.Join(dir, "mynet")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if cfg, _, err = parseSlirpArgs([]string{"--netns-type=path", "mynet", "tap0"}); err != nil {
		t.Errorf("a path in the working directory: %v", err)
	} else if got := cfg.Ports[0].NetNS; got != "./mynet" {
		t.Errorf("a path in the working directory: namespace %q, want ./mynet", got)
	}
	// getopt's short options: clustered, and with values joined.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fd := strconv.Itoa(int(r.Fd()))
	for _, args := range [][]string{
		{"-ce" + fd, "-r-1", "-m65520", pid},
		{"-ce", fd, "-m", "65520", "-r", "-1", pid},
		{"-c", "-e=" + fd, "--mtu=65520", pid},
		{"-c", "-exit-fd", fd, "-mtu", "65520", pid},
	} {
		cfg, _, err := parseSlirpArgs(args)
		if err != nil || cfg.Ports[0].Addr != netip.MustParsePrefix("10.0.2.100/24") || cfg.ExitFD != int(r.Fd()) || cfg.MTU != 65520 || cfg.ReadyFD != -1 {
			t.Errorf("%q: %+v, %v; want -c -e %s -m 65520", args, cfg, err, fd)
		}
	}
	// TAPNAME defaults to tap0.
	if cfg, _, err = parseSlirpArgs([]string{pid}); err != nil || cfg.Ports[0].IfName != "tap0" {
		t.Errorf("no TAPNAME: %+v, %v", cfg, err)
	}
	if _, version, err = parseSlirpArgs([]string{"--version"}); !version || err != nil {
		t.Errorf("--version: %v %v", version, err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "want PID|PATH [TAPNAME]"},
		{[]string{pid, "tap0", "extra"}, "want PID|PATH [TAPNAME], got 3"},
		{[]string{"tap0"}, "tap0: want a process id"},
		{[]string{"4194305"}, "4194305: no such process"}, // above any pid_max
		{[]string{"--netns-type", "net", pid}, "--netns-type net: want pid or path"},
		{[]string{"--cidr", "10.0.2.0/26", pid}, "--cidr 10.0.2.0/26"},
		{[]string{"--cidr", "10.0.2.1/24", pid}, "--cidr 10.0.2.1/24"},
		{[]string{"--cidr", "fd00::/64", pid}, "--cidr fd00::/64"},
		{[]string{"--mtu", "70000", pid}, "--mtu 70000"},
		{[]string{"--userns-path", "/no/such/userns", pid}, "--userns-path: /no/such/userns"},
		{[]string{"--exit-fd", "1000", pid}, "--exit-fd 1000: not an open file descriptor"},
		{[]string{"--enable-seccomp", pid}, "flag provided but not defined"},
		{[]string{"-cx", pid}, "flag provided but not defined: -cx"},
		{[]string{"-e"}, "flag needs an argument: -e"},
		{[]string{"--netns-type=path", "/no/such/netns"}, "/no/such/netns"},
	} {
		if _, _, err := parseSlirpArgs(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// A slirp4netns command line starts with an option, a process id or a
// path; anything else is a usernat command.
func TestSlirpLike(t *testing.T) {
	for arg, want := range map[string]bool{"--mtu": true, "-c": true, "8323": true, "/run/netns/x": true, "gateway": false, "frobnicate": false} {
		if got := slirpLike([]string{arg}); got != want {
			t.Errorf("slirpLike(%q) = %v", arg, got)
		}
	}
}

// slirp4netns takes prefixes up to /25 (.100 must fit; Podman passes the
// user's cidr= as it is), and any existing path, '=' and all.
func TestParseSlirpCIDRAndPath(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	cfg, _, err := parseSlirpArgs([]string{"--cidr", "10.0.2.0/25", pid, "tap0"})
	if err != nil || cfg.Subnet != netip.MustParsePrefix("10.0.2.2/25") {
		t.Errorf("--cidr 10.0.2.0/25: %+v, %v", cfg, err)
	}
	dir := filepath.Join(t.TempDir(), "pod=1")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "net")
	if err := os.Symlink("/proc/self/ns/net", p); err != nil {
		t.Fatal(err)
	}
	for _, c := range []bool{false, true} {
		args := []string{"--netns-type=path", p, "tap0"}
		if c {
			args = append([]string{"-c"}, args...)
		}
		cfg, _, err := parseSlirpArgs(args)
		if err != nil || cfg.Ports[0].NetNS != p || cfg.Ports[0].IfName != "tap0" || cfg.Ports[0].Addr.IsValid() != c {
			t.Errorf("%q: %+v, %v", args, cfg, err)
		}
	}
}

// slirp4netns publishes a request without guest_addr to the network's
// .100, with or without --configure (RootlessKit's command line has
// none).
func TestSlirpDefaultGuestWithoutConfigure(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	cfg, _, err := parseSlirpArgs([]string{"--mtu", "65520", "--disable-host-loopback", pid, "tap0"})
	if err != nil {
		t.Fatal(err)
	}
	if g := cfg.DefaultGuest; g != netip.MustParseAddr("10.0.2.100") {
		t.Errorf("default guest %v, want 10.0.2.100 as slirp4netns", g)
	}
}

// On slirp4netns's command line, a host whose resolv.conf names no IPv4
// nameserver at start, or that has no resolv.conf, still has DNS served
// at .3, from the nameserver the file names once it names one, as
// slirp4netns serves it (hostnet.New does that, with 127.0.0.1 until
// then): only a file that cannot be read, which New refuses, leaves the
// containers without DNS.
func TestSlirpDNSWithoutNameserver(t *testing.T) {
	cfg, _, err := parseSlirpArgs([]string{strconv.Itoa(os.Getpid()), "tap0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func(f func() (netip.AddrPort, error)) { systemResolver = f }(systemResolver)
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name string
		err  error
		dns  bool
	}{
		{"no nameserver", fmt.Errorf("/etc/resolv.conf: %w", hostnet.ErrNoNameserver), true},
		{"no file", &fs.PathError{Op: "open", Path: "/etc/resolv.conf", Err: fs.ErrNotExist}, true},
		{"unreadable", &fs.PathError{Op: "open", Path: "/etc/resolv.conf", Err: fs.ErrPermission}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			systemResolver = func() (netip.AddrPort, error) { return netip.AddrPort{}, c.err }
			hc, err := hostConfig(cfg, log)
			want := netip.Addr{}
			if c.dns {
				want = netip.MustParseAddr("10.0.2.3")
			}
			if err != nil || hc.DNS != want || hc.Resolver.IsValid() {
				t.Errorf("DNS %v, resolver %v (%v); want DNS %v, the resolver left to hostnet", hc.DNS, hc.Resolver, err, want)
			}
		})
	}
}
