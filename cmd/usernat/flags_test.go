package main

import (
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/nat/hostnet"
)

func TestParseGatewayArgs(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	self := "/proc/self/ns/net"
	pid := "/proc/" + itoa(os.Getpid()) + "/ns/net" // the same namespace by another path
	base := []string{"--uplink", "tap:" + self + ":up0", "--uplink-addr", "192.168.2.116/24", "--api-socket", sock}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }

	t.Run("minimal", func(t *testing.T) {
		cfg, err := parseGatewayArgs(base)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Subnet != netip.MustParsePrefix("172.17.0.1/16") || cfg.MTU != 1500 || !cfg.Offload || cfg.ReadyFD != -1 ||
			cfg.Uplink != (uplinkSpec{NetNS: self, IfName: "up0"}) || cfg.UplinkAddr != netip.MustParsePrefix("192.168.2.116/24") ||
			cfg.UplinkVia.IsValid() || cfg.APISocket != sock || cfg.ConntrackMax != 0 || len(cfg.Ports) != 0 ||
			cfg.BusyPoll != 200*time.Microsecond {
			t.Errorf("defaults: %+v", cfg)
		}
	})

	t.Run("everything", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		cfg, err := parseGatewayArgs(with(
			"--subnet", "10.88.0.1/24",
			"--port", self+":eth0=10.88.0.4/24",
			"--port", self+":eth1",
			"--port="+self+":eth2", // one address a namespace: it gets the default route
			"--uplink-via", "192.168.2.1",
			"-p", "8080:10.88.0.4:80",
			"--publish", "192.168.2.116:5353:10.88.0.5:53/udp",
			"-p", "9000-9009:10.88.0.4:9000-9009",
			"--mtu", "65520",
			"--offload=false",
			"--cpuprofile", "/tmp/usernat.prof",
			"--procs", "3",
			"--busy-poll", "0",
			"--timeout", "udp=5", "--timeout", "tcp_established=3600", "--timeout=icmp=2",
			"--conntrack-max", "1024",
			"--ready-fd", itoa(int(w.Fd())),
			"-v",
		))
		if err != nil {
			t.Fatal(err)
		}
		wantPorts := []portSpec{
			{NetNS: self, IfName: "eth0", Addr: netip.MustParsePrefix("10.88.0.4/24")},
			{NetNS: self, IfName: "eth1"},
			{NetNS: self, IfName: "eth2"},
		}
		// A prefix other than the subnet's, containing the gateway.
		if p, err := parsePort(self+":eth2=10.88.0.5/16", netip.MustParsePrefix("10.88.0.1/24")); err != nil || p.Addr != netip.MustParsePrefix("10.88.0.5/16") {
			t.Errorf("parsePort: %+v, %v", p, err)
		}
		if len(cfg.Ports) != 3 {
			t.Fatalf("ports %+v", cfg.Ports)
		}
		for i := range wantPorts {
			if cfg.Ports[i] != wantPorts[i] {
				t.Errorf("port %d: %+v, want %+v", i, cfg.Ports[i], wantPorts[i])
			}
		}
		wantPub := []api.HostFwd{
			{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 8080, GuestAddr: netip.MustParseAddr("10.88.0.4"), GuestPort: 80},
			{Proto: "udp", HostAddr: netip.MustParseAddr("192.168.2.116"), HostPort: 5353, GuestAddr: netip.MustParseAddr("10.88.0.5"), GuestPort: 53},
			{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 9000, HostPortEnd: 9009, GuestAddr: netip.MustParseAddr("10.88.0.4"), GuestPort: 9000, GuestPortEnd: 9009},
		}
		if len(cfg.Publish) != len(wantPub) {
			t.Fatalf("publish %+v", cfg.Publish)
		}
		for i := range wantPub {
			if cfg.Publish[i] != wantPub[i] {
				t.Errorf("-p %d: %+v, want %+v", i, cfg.Publish[i], wantPub[i])
			}
		}
		if cfg.Subnet.String() != "10.88.0.1/24" || cfg.UplinkVia.String() != "192.168.2.1" || cfg.MTU != 65520 || cfg.Offload || cfg.CPUProfile != "/tmp/usernat.prof" || cfg.Procs != 3 ||
			cfg.BusyPoll != 0 || cfg.ConntrackMax != 1024 || cfg.ReadyFD != int(w.Fd()) || !cfg.Verbose {
			t.Errorf("config %+v", cfg)
		}
		if cfg.Timeouts.UDP != 5*time.Second || cfg.Timeouts.TCPEstablished != time.Hour || cfg.Timeouts.ICMP != 2*time.Second || cfg.Timeouts.UDPStream != 0 {
			t.Errorf("timeouts %+v", cfg.Timeouts)
		}
	})

	t.Run("host uplink", func(t *testing.T) {
		for _, args := range [][]string{
			{"--port", self + ":eth0", "--api-socket", sock, "--host-loopback", "172.17.0.1", "--outbound-addr", "192.0.2.7", "--max-flows-per-source", "100", "-p", "127.0.0.1:8080:172.17.0.4:80"},
			{"--port", self + ":eth0", "--uplink", "host", "--api-socket", sock, "--host-loopback", "172.17.0.1", "--outbound-addr", "192.0.2.7", "--max-flows-per-source", "100", "-p", "127.0.0.1:8080:172.17.0.4:80"},
		} {
			cfg, err := parseGatewayArgs(args)
			if err != nil {
				t.Fatal(err)
			}
			if !cfg.Uplink.Host || cfg.HostLoopback.String() != "172.17.0.1" || cfg.OutboundAddr.String() != "192.0.2.7" ||
				cfg.MaxFlowsPerSource != 100 || cfg.UplinkAddr.IsValid() || len(cfg.Publish) != 1 {
				t.Errorf("%v: %+v", args, cfg)
			}
		}
	})

	t.Run("bare namespace name", func(t *testing.T) {
		_, err := parseGatewayArgs(with("--port", "nosuchns:eth0"))
		if err == nil || !strings.Contains(err.Error(), "/run/netns/nosuchns") {
			t.Errorf("error %v, want one naming /run/netns/nosuchns", err)
		}
	})

	bad := []struct {
		name string
		args []string
		want string
	}{
		{"host uplink without ports", []string{"--api-socket", sock}, "give at least one --port"},
		{"host uplink with an address", []string{"--port", self + ":eth0", "--uplink-addr", "192.168.2.116/24", "--api-socket", sock}, "--uplink-addr and --uplink-via go with --uplink tap"},
		{"host options on a tap uplink", with("--host-loopback", "172.17.0.1"), "go with --uplink host"},
		{"host loopback garbage", []string{"--port", self + ":eth0", "--uplink", "host", "--host-loopback", "x", "--api-socket", sock}, "--host-loopback x"},
		{"host loopback is loopback", []string{"--port", self + ":eth0", "--host-loopback", "127.0.0.1", "--api-socket", sock}, "--host-loopback 127.0.0.1"},
		{"host loopback in subnet", []string{"--port", self + ":eth0", "--host-loopback", "172.17.0.9", "--api-socket", sock}, "only the gateway's address"},
		{"dns outside the subnet", []string{"--port", self + ":eth0", "--dns", "10.0.2.3", "--api-socket", sock}, "--dns 10.0.2.3: want an address on the bridge subnet"},
		{"dns the gateway's", []string{"--port", self + ":eth0", "--dns", "172.17.0.1", "--api-socket", sock}, "--dns 172.17.0.1"},
		{"dns the broadcast", []string{"--port", self + ":eth0", "--dns", "172.17.255.255", "--api-socket", sock}, "--dns 172.17.255.255"},
		{"dns the network", []string{"--port", self + ":eth0", "--dns", "172.17.0.0", "--api-socket", sock}, "--dns 172.17.0.0"},
		{"dns a container's", []string{"--port", self + ":eth0=172.17.0.3/16", "--dns", "172.17.0.3", "--api-socket", sock}, "is --dns's"},
		{"dns resolver alone", []string{"--port", self + ":eth0", "--dns-resolver", "192.0.2.53", "--api-socket", sock}, "--dns-resolver goes with --dns"},
		{"dns resolver garbage", []string{"--port", self + ":eth0", "--dns", "172.17.0.3", "--dns-resolver", "resolver", "--api-socket", sock}, "--dns-resolver resolver"},
		{"dns on a tap uplink", with("--dns", "172.17.0.3"), "go with --uplink host"},
		{"outbound addr IPv6", []string{"--port", self + ":eth0", "--outbound-addr", "::1", "--api-socket", sock}, "--outbound-addr ::1"},
		{"two addressed ports in one namespace", []string{"--port", self + ":eth0=172.17.0.4/16", "--port", pid + ":eth1=172.17.0.5/16", "--api-socket", sock}, "has an address too"},
		{"outbound addr neither", []string{"--port", self + ":eth0", "--outbound-addr", "eth0:1", "--api-socket", sock}, "or an interface's name"},
		{"outbound iface too long", []string{"--port", self + ":eth0", "--outbound-addr", "abcdefghijklmnop", "--api-socket", sock}, "--outbound-addr abcdefghijklmnop"},
		{"connect timeout negative", []string{"--port", self + ":eth0", "--connect-timeout", "-1s", "--api-socket", sock}, "--connect-timeout -1s"},
		{"connect timeout on a tap uplink", with("--connect-timeout", "5s"), "go with --uplink host"},
		{"connect timeout without its unit", []string{"--port", self + ":eth0", "--connect-timeout", "20", "--api-socket", sock}, "want a duration with its unit, such as 20s"},
		{"flows per source negative", []string{"--port", self + ":eth0", "--max-flows-per-source", "-1", "--api-socket", sock}, "--max-flows-per-source -1"},
		{"no uplink addr", []string{"--uplink", "tap:" + self + ":up0", "--api-socket", sock}, "--uplink-addr is required"},
		{"unknown flag", with("--frobnicate"), "flag provided but not defined"},
		{"stray argument", with("eth0"), `unexpected argument "eth0"`},
		{"subnet not a prefix", with("--subnet", "172.17.0.1"), "--subnet 172.17.0.1: want"},
		{"subnet network address", with("--subnet", "172.17.0.0/16"), "is the network address"},
		{"subnet broadcast", with("--subnet", "172.17.255.255/16"), "broadcast"},
		{"subnet IPv6", with("--subnet", "fd00::1/64"), "IPv4"},
		{"subnet too small", with("--subnet", "172.17.0.1/31"), "no room"},
		{"bad prefix", with("--port", self+":eth0=172.17.0.4/33"), "want ADDR/PREFIX"},
		{"port address outside", with("--port", self+":eth0=10.0.0.4/8"), "outside the bridge subnet"},
		{"port address is gateway", with("--port", self+":eth0=172.17.0.1/16"), "is the gateway's"},
		{"port address broadcast", with("--port", self+":eth0=172.17.255.255/16"), "broadcast"},
		{"port prefix misses gateway", with("--port", self+":eth0=172.17.5.4/24"), "does not contain the gateway"},
		{"port IPv6", with("--port", self+":eth0=fd00::4/64"), "IPv4"},
		{"port no colon", with("--port", "eth0"), "want NETNS:IFNAME"},
		{"port empty ifname", with("--port", self+":"), "empty interface name"},
		{"port long ifname", with("--port", self+":abcdefghijklmnop"), "longer than 15"},
		{"port empty netns", with("--port", ":eth0"), "empty network namespace"},
		{"port missing netns", with("--port", "/nonexistent/ns:eth0"), "/nonexistent/ns"},
		{"duplicate port", with("--port", self+":eth0", "--port", self+":eth0"), "already"},
		{"duplicate port by another path", with("--port", self+":eth0", "--port", pid+":eth0"), "already"},
		{"port is the uplink", with("--port", self+":up0"), "already --uplink"},
		{"duplicate address", with("--port", self+":eth0=172.17.0.4/16", "--port", self+":eth1=172.17.0.4/16"), "already given"},
		{"uplink kind", with("--uplink", "veth:"+self+":up0"), `unknown uplink kind "veth"`},
		{"uplink no ifname", with("--uplink", "tap:up0"), "want NETNS:IFNAME"},
		{"uplink addr no prefix", with("--uplink-addr", "192.168.2.116"), "want ADDR/PREFIX"},
		{"uplink addr network", with("--uplink-addr", "192.168.2.0/24"), "network or broadcast"},
		{"uplink addr overlaps", with("--uplink-addr", "172.17.9.9/24"), "overlaps the bridge subnet"},
		{"uplink addr IPv6", with("--uplink-addr", "2001:db8::1/64"), "IPv4"},
		{"via off-link", with("--uplink-via", "10.1.1.1"), "off the uplink's link"},
		{"via is self", with("--uplink-via", "192.168.2.116"), "own uplink address"},
		{"via garbage", with("--uplink-via", "gw"), "not an IP address"},
		{"publish syntax", with("-p", "8080:80"), "-p 8080:80"},
		{"publish protocol", with("-p", "8080:172.17.0.4:80/sctp"), "sctp"},
		{"publish outside subnet", with("-p", "8080:10.0.0.4:80"), "outside the bridge subnet"},
		{"publish foreign host addr", with("-p", "10.9.9.9:8080:172.17.0.4:80"), "not the gateway's uplink address"},
		{"publish conflict", with("-p", "8080:172.17.0.4:80", "-p", "8080:172.17.0.5:80"), "-p 8080:172.17.0.5:80/tcp: port already published by -p 8080:172.17.0.4:80/tcp"},
		{"publish range conflict", with("-p", "8000-8100:172.17.0.4:80", "-p", "8080:172.17.0.5:80"), "-p 8080:172.17.0.5:80/tcp: port already published by -p 8000-8100:172.17.0.4:80/tcp"},
		{"mtu low", with("--mtu", "100"), "--mtu 100"},
		{"mtu high", with("--mtu", "65521"), "--mtu 65521"},
		{"mtu garbage", with("--mtu", "big"), "invalid value"},
		{"timeout unknown", with("--timeout", "tcp_forever=5"), `unknown timeout "tcp_forever"`},
		{"timeout zero", with("--timeout", "udp=0"), "above 0"},
		{"timeout not seconds", with("--timeout", "udp=5s"), "whole number"},
		{"timeout no equals", with("--timeout", "udp"), "NAME=SECONDS"},
		{"procs negative", with("--procs", "-1"), "--procs -1"},
		{"procs huge", with("--procs", "100000"), "--procs 100000"},
		{"busy-poll negative", with("--busy-poll", "-1us"), "--busy-poll -1µs: want 0 (off) to 10ms"},
		{"busy-poll long", with("--busy-poll", "1s"), "--busy-poll 1s"},
		{"busy-poll unit", with("--busy-poll", "200"), "unit"},
		{"conntrack-max negative", with("--conntrack-max", "-1"), "--conntrack-max -1"},
		{"conntrack-max huge", with("--conntrack-max", "2000000000"), "--conntrack-max"},
		{"socket dir missing", with("--api-socket", filepath.Join(dir, "no", "api.sock")), "no such file"},
		{"socket path long", with("--api-socket", "/"+strings.Repeat("x", 120)), "longer than"},
		{"ready fd closed", with("--ready-fd", "1000"), "not an open file descriptor"},
		{"ready fd negative", with("--ready-fd", "-5"), "not a file descriptor"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseGatewayArgs(tc.args)
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("%v is not a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}

	t.Run("help", func(t *testing.T) {
		for _, h := range []string{"-h", "--help", "-help"} {
			if _, err := parseGatewayArgs([]string{h}); !errors.Is(err, flag.ErrHelp) {
				t.Errorf("%s: %v", h, err)
			}
		}
	})
}

func TestParseFlagsInterleaved(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s := fs.String("api-socket", "", "")
	l := fs.Bool("l", false, "")
	pos, err := parseFlags(fs, []string{"a", "--api-socket", "/x", "b", "-l", "--", "-c"})
	if err != nil {
		t.Fatal(err)
	}
	if *s != "/x" || !*l || strings.Join(pos, ",") != "a,b,-c" {
		t.Errorf("socket %q, l %v, positional %q", *s, *l, pos)
	}
}

func TestDefaultSocket(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	got, err := defaultSocket()
	switch {
	case os.Geteuid() == 0 && got != "/run/usernat.sock":
		t.Errorf("root: %q, %v", got, err)
	case os.Geteuid() != 0 && got != "/run/user/1000/usernat.sock":
		t.Errorf("user: %q, %v", got, err)
	}
	if os.Geteuid() != 0 {
		t.Setenv("XDG_RUNTIME_DIR", "")
		if _, err := defaultSocket(); err == nil {
			t.Error("no error without XDG_RUNTIME_DIR")
		}
	}
}

func TestPortNames(t *testing.T) {
	ports := []portSpec{
		{NetNS: "/run/netns/web", IfName: "eth0"},
		{NetNS: "/proc/812/ns/net", IfName: "eth0"},
		{NetNS: "/proc/9/fd/7", IfName: "eth0"},
		{NetNS: "/run/netns/web", IfName: "eth1"},
	}
	got := strings.Join(portNames(ports), " ")
	if want := "eth0@web eth0@812 eth0@2 eth1"; got != want {
		t.Errorf("portNames = %q, want %q", got, want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// The gateway runs on one CPU, with either uplink, unless told
// otherwise, by --procs or by GOMAXPROCS.
func TestProcs(t *testing.T) {
	host, tap := uplinkSpec{Host: true}, uplinkSpec{NetNS: "/proc/self/ns/net", IfName: "up0"}
	for _, tc := range []struct {
		uplink uplinkSpec
		flag   int
		env    string
		want   int
	}{
		{host, 0, "", 1},
		{host, 0, "4", 0},
		{host, 2, "4", 2},
		{tap, 0, "", 1},
		{tap, 0, "2", 0},
		{tap, 3, "", 3},
	} {
		cfg := &gatewayConfig{Uplink: tc.uplink, Procs: tc.flag}
		if got := procs(cfg, tc.env); got != tc.want {
			t.Errorf("uplink %+v, --procs %d, GOMAXPROCS=%q: %d, want %d", tc.uplink, tc.flag, tc.env, got, tc.want)
		}
	}
}

// The host-socket uplink gets each of its flags: the configuration the
// command line makes is the one hostnet.New is given.
func TestHostConfig(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	self := "/proc/self/ns/net"
	parse := func(extra ...string) *gatewayConfig {
		t.Helper()
		cfg, err := parseGatewayArgs(append([]string{"--port", self + ":eth0", "--api-socket", sock}, extra...))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	log := slog.New(slog.DiscardHandler)
	hc, err := hostConfig(parse("--host-loopback", "172.17.0.1", "--outbound-addr", "192.0.2.7", "--max-flows-per-source", "100", "--connect-timeout", "7s",
		"--dns", "172.17.0.3", "--dns-resolver", "192.0.2.53"), log)
	if err != nil {
		t.Fatal(err)
	}
	// The fields the command sets; the rest (Namespace, QueueLen, ...)
	// are hostnet's defaults.
	type set struct {
		HostLoopback, OutboundAddr, DNS netip.Addr
		Resolver                        netip.AddrPort
		MaxFlowsPerSource               int
		ConnectTimeout                  time.Duration
		Logger                          *slog.Logger
	}
	of := func(hc hostnet.Config) set {
		return set{hc.HostLoopback, hc.OutboundAddr, hc.DNS, hc.Resolver, hc.MaxFlowsPerSource, hc.ConnectTimeout, hc.Logger}
	}
	if got, want := of(hc), (set{netip.MustParseAddr("172.17.0.1"), netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("172.17.0.3"),
		netip.MustParseAddrPort("192.0.2.53:53"), 100, 7 * time.Second, log}); got != want {
		t.Errorf("hostnet.Config %+v, want %+v", got, want)
	}
	if hc, err := hostConfig(parse("--dns", "172.17.0.3", "--dns-resolver", "127.0.0.53:5353"), log); err != nil || hc.Resolver != netip.MustParseAddrPort("127.0.0.53:5353") || hc.DNS != netip.MustParseAddr("172.17.0.3") {
		t.Errorf("--dns-resolver with a port: %v %v (%v)", hc.DNS, hc.Resolver, err)
	}
	if hc, err := hostConfig(parse(), log); err != nil || of(hc) != (set{Logger: log}) || hc.Namespace != nil || hc.QueueLen != 0 {
		t.Errorf("no flags: %+v (%v), want hostnet's defaults", hc, err)
	}

	// An interface: its IPv4 address, found when the gateway starts.
	if hc, err := hostConfig(parse("--outbound-addr", "lo"), log); err != nil || hc.OutboundAddr != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("--outbound-addr lo: %v (%v), want 127.0.0.1", hc.OutboundAddr, err)
	}
	if _, err := hostConfig(parse("--outbound-addr", "nosuchif0"), log); err == nil || !strings.Contains(err.Error(), "--outbound-addr nosuchif0") {
		t.Errorf("--outbound-addr nosuchif0: %v, want an error naming it", err)
	}
}

// A published port to the bridge subnet's network or broadcast address
// could never reach a container (the gateway would ARP for
// 172.17.255.255): refused, as --port's and --dns's are.
func TestPublishToSubnetBroadcastRefused(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	for _, spec := range []string{"8080:172.17.255.255:80", "8080:172.17.0.0:80"} {
		args := []string{"--uplink", "tap:/proc/self/ns/net:up0", "--uplink-addr", "192.168.2.116/24", "--api-socket", sock, "-p", spec}
		if _, err := parseGatewayArgs(args); err == nil || !strings.Contains(err.Error(), "network or broadcast address") {
			t.Errorf("-p %s: %v, want refused as the subnet's network or broadcast address", spec, err)
		}
	}
}
