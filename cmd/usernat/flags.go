package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/internal/rtnl"
	"github.com/usernat/usernat/nat"
	"github.com/usernat/usernat/nat/hostnet"
)

// portSpec is one --port: a TAP device IfName to create in NetNS, and the
// address to configure on it when Addr is valid.
type portSpec struct {
	NetNS  string // a path
	IfName string
	Addr   netip.Prefix
	UserNS string // a user namespace to join to open the device (slirp4netns's); "" for none
}

// uplinkSpec is --uplink tap:NETNS:IFNAME.
type uplinkSpec struct {
	Host   bool // the host-socket uplink (nat/hostnet); NetNS and IfName are empty
	NetNS  string
	IfName string
}

// gatewayConfig is the validated command line of `usernat gateway`.
type gatewayConfig struct {
	Subnet     netip.Prefix
	Ports      []portSpec
	Uplink     uplinkSpec
	UplinkAddr netip.Prefix
	UplinkVia  netip.Addr
	Publish    []api.HostFwd
	MTU        int
	Offload    bool // checksum and segmentation offload on the TAP devices
	// The host-socket uplink's options (--uplink host).
	HostLoopback      netip.Addr
	DNS               netip.Addr     // --dns: where the host's resolver is served on the bridge
	DNSResolver       netip.AddrPort // --dns-resolver; invalid: /etc/resolv.conf's
	DNSOptional       bool           // slirp4netns's DNS: with a resolv.conf that cannot be read, warn and serve none
	OutboundAddr      netip.Addr
	OutboundIface     string     // --outbound-addr as an interface's name: its address, found at start
	DefaultGuest      netip.Addr // slirp4netns's .100: where a request without guest_addr goes; invalid for defaultGuest(Ports)
	SlirpIDs          bool       // number published ports 1, 2, ... as slirp4netns does (seqPublisher), not by rule id
	MaxFlowsPerSource int
	ConnectTimeout    time.Duration // 0 for hostnet's default
	Timeouts          conntrack.Timeouts
	ConntrackMax      int
	APISocket         string
	ReadyFD           int           // -1 for none
	ExitFD            int           // slirp4netns's --exit-fd: stop when it reads its end; -1 for none
	IPv6Asked         bool          // slirp4netns's --enable-ipv6, which is logged and left
	Outbound6Asked    string        // slirp4netns's --outbound-addr6, which is logged and left
	CPUProfile        string        // write a CPU profile of the whole run here
	Procs             int           // --procs: GOMAXPROCS; 0 for the default (procs)
	BusyPoll          time.Duration // --busy-poll: bridge.SetBusyPoll's limit
	Verbose           bool
	Debug             bool
}

// maxProcs bounds --procs: a sanity bound, far above any machine's CPUs.
const maxProcs = 1 << 10

// maxBusyPoll bounds --busy-poll: longer, a loop would poll through what
// is no longer a wake-up's cost but a pause.
const maxBusyPoll = 10 * time.Millisecond

const (
	defaultSubnet = "172.17.0.1/16"
	defaultMTU    = 1500
	maxMTU        = 65520
	minMTU        = 576
	maxConntrack  = 1 << 30
)

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// durationFlag is a time.Duration flag whose error says what it takes
// (the flag package's says "parse error", for "20" too).
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return "0s"
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration with its unit, such as 20s or 1m30s")
	}
	*f.d = d
	return nil
}

// usageError is a command line the command refuses; main exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// parseFlags parses args with fs, letting flags and positional arguments
// mix (usernat publish 8080:172.17.0.4:80 --api-socket S), and returns the
// positional ones. A request for help comes back as flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseGatewayArgs parses and checks the flags of `usernat gateway`. It
// touches nothing but reads the file system: namespaces must exist, the
// socket's directory too, and the ready fd must be open.
func parseGatewayArgs(args []string) (*gatewayConfig, error) {
	return parseGatewayFlags(args, true)
}

// parseGatewayFlags is parseGatewayArgs; without api, no --api-socket
// means none (slirp4netns serves its API only when asked), not the
// default path.
func parseGatewayFlags(args []string, api bool) (*gatewayConfig, error) {
	fs := flag.NewFlagSet("usernat gateway", flag.ContinueOnError)
	var (
		subnet, uplink, uplinkAddr, uplinkVia string
		ports, publish, timeouts              listFlag
		cfg                                   = gatewayConfig{ReadyFD: -1, ExitFD: -1, BusyPoll: bridge.DefaultBusyPoll}
	)
	fs.StringVar(&subnet, "subnet", defaultSubnet, "")
	fs.Var(&ports, "port", "")
	fs.StringVar(&uplink, "uplink", "", "")
	fs.StringVar(&uplinkAddr, "uplink-addr", "", "")
	fs.StringVar(&uplinkVia, "uplink-via", "", "")
	fs.Var(&publish, "p", "")
	fs.Var(&publish, "publish", "")
	fs.IntVar(&cfg.MTU, "mtu", defaultMTU, "")
	fs.BoolVar(&cfg.Offload, "offload", true, "")
	var hostLoopback, outboundAddr, dns, dnsResolver string
	fs.StringVar(&hostLoopback, "host-loopback", "", "")
	fs.StringVar(&dns, "dns", "", "")
	fs.StringVar(&dnsResolver, "dns-resolver", "", "")
	fs.StringVar(&outboundAddr, "outbound-addr", "", "")
	fs.IntVar(&cfg.MaxFlowsPerSource, "max-flows-per-source", 0, "")
	fs.Var(durationFlag{&cfg.ConnectTimeout}, "connect-timeout", "")
	fs.Var(&timeouts, "timeout", "")
	fs.IntVar(&cfg.ConntrackMax, "conntrack-max", 0, "")
	fs.StringVar(&cfg.APISocket, "api-socket", "", "")
	fs.IntVar(&cfg.ReadyFD, "ready-fd", -1, "")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "")
	fs.IntVar(&cfg.Procs, "procs", 0, "")
	fs.Var(durationFlag{&cfg.BusyPoll}, "busy-poll", "")
	fs.BoolVar(&cfg.Verbose, "v", false, "")
	fs.BoolVar(&cfg.Debug, "debug", false, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, usagef("unexpected argument %q", pos[0])
	}

	if cfg.Subnet, err = parseSubnet(subnet); err != nil {
		return nil, usagef("--subnet %s: %v", subnet, err)
	}
	if cfg.MTU < minMTU || cfg.MTU > maxMTU {
		return nil, usagef("--mtu %d: want %d to %d", cfg.MTU, minMTU, maxMTU)
	}
	if cfg.BusyPoll < 0 || cfg.BusyPoll > maxBusyPoll {
		return nil, usagef("--busy-poll %v: want 0 (off) to %v", cfg.BusyPoll, maxBusyPoll)
	}
	if cfg.Procs < 0 || cfg.Procs > maxProcs {
		return nil, usagef("--procs %d: want 1 to %d (0 means the default)", cfg.Procs, maxProcs)
	}
	if cfg.ConntrackMax < 0 || cfg.ConntrackMax > maxConntrack {
		return nil, usagef("--conntrack-max %d: want 1 to %d (0 means %d)", cfg.ConntrackMax, maxConntrack, conntrack.DefaultMax)
	}
	for _, t := range timeouts {
		if err := parseTimeout(&cfg.Timeouts, t); err != nil {
			return nil, usagef("--timeout %s: %v", t, err)
		}
	}

	if uplink == "" {
		uplink = "host"
	}
	if cfg.Uplink, err = parseUplink(uplink); err != nil {
		return nil, usagef("--uplink %s: %v", uplink, err)
	}
	if cfg.Uplink.Host {
		if len(ports) == 0 {
			return nil, usagef("--uplink host (the default) carries the flows of containers: give at least one --port NETNS:IFNAME")
		}
		if err := parseHostOptions(&cfg, uplinkAddr, uplinkVia, hostLoopback, outboundAddr, dns, dnsResolver); err != nil {
			return nil, err
		}
	} else {
		if hostLoopback != "" || outboundAddr != "" || dns != "" || dnsResolver != "" || cfg.MaxFlowsPerSource != 0 || cfg.ConnectTimeout != 0 {
			return nil, usagef("--host-loopback, --outbound-addr, --dns, --dns-resolver, --max-flows-per-source and --connect-timeout go with --uplink host")
		}
		if uplinkAddr == "" {
			return nil, usagef("--uplink-addr is required (the gateway's address on the uplink, such as 192.168.2.116/24)")
		}
		if cfg.UplinkAddr, err = parseUplinkAddr(uplinkAddr, cfg.Subnet); err != nil {
			return nil, usagef("--uplink-addr %s: %v", uplinkAddr, err)
		}
		if uplinkVia != "" {
			if cfg.UplinkVia, err = parseVia(uplinkVia, cfg.UplinkAddr); err != nil {
				return nil, usagef("--uplink-via %s: %v", uplinkVia, err)
			}
		}
	}

	seenAddr := map[netip.Addr]string{}
	for _, s := range ports {
		p, err := parsePort(s, cfg.Subnet)
		if err != nil {
			return nil, usagef("--port %s: %v", s, err)
		}
		if p.Addr.IsValid() {
			if other, ok := seenAddr[p.Addr.Addr()]; ok {
				return nil, usagef("--port %s: address %v is already given to --port %s", s, p.Addr.Addr(), other)
			}
			if p.Addr.Addr() == cfg.DNS {
				return nil, usagef("--port %s: address %v is --dns's", s, p.Addr.Addr())
			}
			seenAddr[p.Addr.Addr()] = s
		}
		cfg.Ports = append(cfg.Ports, p)
	}

	for _, s := range publish {
		f, err := parsePublish(s)
		if err != nil {
			return nil, usagef("-p %s: %v", s, err)
		}
		if err := checkFwd(f, cfg.Subnet, cfg.UplinkAddr.Addr(), cfg.DNS); err != nil {
			return nil, usagef("-p %s: %v", s, err)
		}
		cfg.Publish = append(cfg.Publish, f)
	}
	if err := checkPublishConflicts(cfg.Publish); err != nil {
		return nil, usageError{err}
	}

	if err := checkDevices(cfg.Ports, cfg.Uplink); err != nil {
		return nil, usageError{err}
	}
	if cfg.APISocket == "" && api {
		if cfg.APISocket, err = defaultSocket(); err != nil {
			return nil, usageError{err}
		}
	}
	if cfg.APISocket != "" {
		if err := checkSocketPath(cfg.APISocket); err != nil {
			return nil, usagef("--api-socket %s: %v", cfg.APISocket, err)
		}
	}
	if cfg.ReadyFD >= 0 {
		if _, err := unix.FcntlInt(uintptr(cfg.ReadyFD), unix.F_GETFD, 0); err != nil {
			return nil, usagef("--ready-fd %d: not an open file descriptor", cfg.ReadyFD)
		}
	} else if cfg.ReadyFD != -1 {
		return nil, usagef("--ready-fd %d: not a file descriptor", cfg.ReadyFD)
	}
	return &cfg, nil
}

// parseSubnet parses the gateway's address on the bridge with the bridge
// prefix.
func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, errors.New("want the gateway's address and the subnet's length, such as 172.17.0.1/16")
	}
	switch {
	case !p.Addr().Is4():
		return p, errors.New("the bridge subnet must be IPv4")
	case p.Bits() > 30:
		return p, errors.New("the subnet has no room for containers; use a prefix of /30 or shorter")
	case p.Addr() == p.Masked().Addr():
		return p, fmt.Errorf("%v is the network address; give the gateway's own address, such as %v", p.Addr(), p.Masked().Addr().Next())
	case p.Addr() == rtnl.Broadcast(p):
		return p, fmt.Errorf("%v is the broadcast address", p.Addr())
	case nat.UnroutablePrefix(p):
		return p, fmt.Errorf("%v overlaps 0.0.0.0/8, 127.0.0.0/8 or multicast, which no router forwards", p.Masked())
	}
	return p, nil
}

// parseTimeout parses NAME=SECONDS into t.
func parseTimeout(t *conntrack.Timeouts, s string) error {
	name, secs, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return errors.New("want NAME=SECONDS, such as udp=30")
	}
	n, err := strconv.ParseUint(secs, 10, 32)
	if err != nil || n == 0 {
		return fmt.Errorf("%q is not a whole number of seconds above 0", secs)
	}
	if err := t.Set(name, time.Duration(n)*time.Second); err != nil {
		return fmt.Errorf("unknown timeout %q; known: %s", name, strings.Join(conntrack.TimeoutNames(), ", "))
	}
	return nil
}

// nsPath turns a namespace argument into a path: a bare name means
// /run/netns/NAME, as `ip netns` keeps them.
func nsPath(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("empty network namespace")
	case strings.Contains(s, "/"):
		return s, nil
	case s == "." || s == "..":
		return "", fmt.Errorf("bad network namespace name %q", s)
	}
	return "/run/netns/" + s, nil
}

// checkIfName checks a Linux interface name (see dev_valid_name).
func checkIfName(s string) error {
	switch {
	case s == "":
		return errors.New("empty interface name")
	case len(s) >= unix.IFNAMSIZ:
		return fmt.Errorf("interface name %q longer than %d bytes", s, unix.IFNAMSIZ-1)
	case s == "." || s == "..":
		return fmt.Errorf("bad interface name %q", s)
	case strings.ContainsAny(s, "/: \t\n"):
		return fmt.Errorf("interface name %q has a '/', ':' or space", s)
	}
	return nil
}

// splitNSIf splits NETNS:IFNAME at the last colon.
func splitNSIf(s string) (ns, ifname string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("want NETNS:IFNAME")
	}
	if ns, err = nsPath(s[:i]); err != nil {
		return "", "", err
	}
	if err := checkIfName(s[i+1:]); err != nil {
		return "", "", err
	}
	return ns, s[i+1:], nil
}

// parsePort parses NETNS:IFNAME[=ADDR/PREFIX].
func parsePort(s string, subnet netip.Prefix) (portSpec, error) {
	// The address follows the interface's name: the last '=' after a ':'
	// and a name, as a namespace path may hold '=' (slirp4netns
	// --netns-type=path PATH).
	left, addr, hasAddr := s, "", false
	if eq := strings.LastIndexByte(s, '='); eq >= 0 {
		if c := strings.LastIndexByte(s[:eq], ':'); c >= 0 && !strings.Contains(s[c+1:eq], "/") {
			left, addr, hasAddr = s[:eq], s[eq+1:], true
		}
	}
	ns, ifname, err := splitNSIf(left)
	if err != nil {
		return portSpec{}, err
	}
	p := portSpec{NetNS: ns, IfName: ifname}
	if !hasAddr {
		return p, nil
	}
	if p.Addr, err = netip.ParsePrefix(addr); err != nil {
		return p, fmt.Errorf("address %q: want ADDR/PREFIX, such as 172.17.0.4/16", addr)
	}
	a, gw, net := p.Addr.Addr(), subnet.Addr(), subnet.Masked()
	switch {
	case !a.Is4():
		return p, fmt.Errorf("address %v: the bridge subnet is IPv4", a)
	case !net.Contains(a):
		return p, fmt.Errorf("address %v is outside the bridge subnet %v", a, net)
	case a == gw:
		return p, fmt.Errorf("address %v is the gateway's", a)
	case a == net.Addr() || a == rtnl.Broadcast(subnet):
		return p, fmt.Errorf("address %v is the subnet's network or broadcast address", a)
	case !p.Addr.Contains(gw):
		return p, fmt.Errorf("prefix %v does not contain the gateway %v, so the default route could not use it", p.Addr, gw)
	}
	return p, nil
}

// parseHostOptions checks the flags of the host-socket uplink.
func parseHostOptions(cfg *gatewayConfig, uplinkAddr, uplinkVia, hostLoopback, outboundAddr, dns, dnsResolver string) error {
	if uplinkAddr != "" || uplinkVia != "" {
		return usagef("--uplink-addr and --uplink-via go with --uplink tap:NETNS:IFNAME; with --uplink host the host's addresses are the uplink's")
	}
	var err error
	if hostLoopback != "" {
		if cfg.HostLoopback, err = netip.ParseAddr(hostLoopback); err != nil || !cfg.HostLoopback.Is4() || nat.Unroutable(cfg.HostLoopback) {
			return usagef("--host-loopback %s: want an IPv4 address containers reach the host's loopback at, such as the gateway's %v", hostLoopback, cfg.Subnet.Addr())
		}
		if cfg.Subnet.Masked().Contains(cfg.HostLoopback) && cfg.HostLoopback != cfg.Subnet.Addr() {
			return usagef("--host-loopback %s: inside the bridge subnet, only the gateway's address %v can be it", hostLoopback, cfg.Subnet.Addr())
		}
	}
	if dns != "" {
		a, err := netip.ParseAddr(dns)
		if err != nil || !a.Is4() || !hostAddrOn(cfg.Subnet, a) || a == cfg.Subnet.Addr() {
			return usagef("--dns %s: want an address on the bridge subnet %v other than the gateway's, such as slirp4netns's 10.0.2.3 on 10.0.2.0/24", dns, cfg.Subnet.Masked())
		}
		cfg.DNS = a
	}
	if dnsResolver != "" {
		if dns == "" {
			return usagef("--dns-resolver goes with --dns")
		}
		ap, err := netip.ParseAddrPort(dnsResolver)
		if err != nil {
			var a netip.Addr
			if a, err = netip.ParseAddr(dnsResolver); err == nil {
				ap = netip.AddrPortFrom(a, 53)
			}
		}
		if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
			return usagef("--dns-resolver %s: want an IPv4 address, with a port or for port 53", dnsResolver)
		}
		cfg.DNSResolver = ap
	}
	if outboundAddr != "" {
		// An address, or an interface whose address it is, as
		// slirp4netns's --outbound-addr takes.
		a, err := netip.ParseAddr(outboundAddr)
		switch {
		case err == nil && a.Is4():
			cfg.OutboundAddr = a
		case err != nil && ifaceName(outboundAddr):
			cfg.OutboundIface = outboundAddr
		default:
			return usagef("--outbound-addr %s: want an IPv4 address of the host's, or an interface's name", outboundAddr)
		}
	}
	if cfg.MaxFlowsPerSource < 0 {
		return usagef("--max-flows-per-source %d: want 0 (no cap) or more", cfg.MaxFlowsPerSource)
	}
	if cfg.ConnectTimeout < 0 || cfg.ConnectTimeout > maxConnectTimeout {
		return usagef("--connect-timeout %v: want more than 0, at most %v (0 means hostnet's %v)", cfg.ConnectTimeout, maxConnectTimeout, hostnet.DefaultConnectTimeout)
	}
	return nil
}

// maxConnectTimeout bounds --connect-timeout: Linux gives up a connection
// whose SYN goes unanswered after about two minutes (tcp_syn_retries 6).
const maxConnectTimeout = 10 * time.Minute

// ifaceName says whether s can name a network interface on Linux: 1 to 15
// bytes, none of them a slash, a colon or white space.
func ifaceName(s string) bool {
	return len(s) > 0 && len(s) < unix.IFNAMSIZ && s != "." && s != ".." && !strings.ContainsAny(s, "/: \t\n")
}

// procs is how many CPUs run the gateway's Go code at once (GOMAXPROCS),
// or 0 to leave Go's choice: --procs when given; else the GOMAXPROCS
// environment variable's, when set; else 1. Every packet is a system
// call on a non-blocking descriptor, and the loop that polls serves every
// device and socket in their goroutines' stead (busypoll): a second CPU
// mostly wakes threads that find nothing to do, and takes the CPU the
// containers' own work needs. Measured side by side on a 2-core VM:
// bench/rootless (2026-11-27), one CPU cut the host uplink's CPU time per
// connection by 28% and per GB by a fifth, at the same throughput;
// bench/nat (2026-11-28, 3 rounds each), it made the TAP uplink's round
// trip 0.63x as long (91 against 145 us), its new connections 1.24x and
// its TCP rates 1.07-1.10x.
func procs(cfg *gatewayConfig, env string) int {
	switch {
	case cfg.Procs > 0:
		return cfg.Procs
	case env != "":
		return 0
	}
	return 1
}

// parseUplink parses tap:NETNS:IFNAME, or host.
func parseUplink(s string) (uplinkSpec, error) {
	if s == "host" {
		return uplinkSpec{Host: true}, nil
	}
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || kind != "tap" {
		return uplinkSpec{}, fmt.Errorf("unknown uplink kind %q; want host or tap:NETNS:IFNAME", kind)
	}
	ns, ifname, err := splitNSIf(rest)
	if err != nil {
		return uplinkSpec{}, err
	}
	return uplinkSpec{NetNS: ns, IfName: ifname}, nil
}

func parseUplinkAddr(s string, subnet netip.Prefix) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, errors.New("want ADDR/PREFIX, such as 192.168.2.116/24")
	}
	switch {
	case !p.Addr().Is4():
		return p, errors.New("the uplink address must be IPv4")
	case p.Bits() < 31 && (p.Addr() == p.Masked().Addr() || p.Addr() == rtnl.Broadcast(p)):
		return p, fmt.Errorf("%v is the network or broadcast address of %v", p.Addr(), p.Masked())
	case p.Overlaps(subnet.Masked()):
		return p, fmt.Errorf("the uplink network %v overlaps the bridge subnet %v", p.Masked(), subnet.Masked())
	}
	return p, nil
}

func parseVia(s string, uplink netip.Prefix) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, errors.New("not an IP address")
	case !a.Is4():
		return a, errors.New("the next hop must be IPv4")
	case !uplink.Contains(a):
		return a, fmt.Errorf("next hop is off the uplink's link %v", uplink.Masked())
	case a == uplink.Addr():
		return a, errors.New("next hop is the gateway's own uplink address")
	}
	return a, nil
}

// checkFwd checks a published port against the gateway's networks: the
// container must be on the bridge, and a host address must be the
// uplink's.
func checkFwd(f api.HostFwd, subnet netip.Prefix, uplink, dns netip.Addr) error {
	switch {
	case !f.GuestAddr.IsValid():
		return errors.New("the container address is required: the gateway has no one container to choose (one --port with an address)")
	case !subnet.Masked().Contains(f.GuestAddr):
		return fmt.Errorf("container address %v is outside the bridge subnet %v", f.GuestAddr, subnet.Masked())
	case !hostAddrOn(subnet, f.GuestAddr):
		return fmt.Errorf("container address %v is the bridge subnet's network or broadcast address", f.GuestAddr)
	case f.GuestAddr == subnet.Addr():
		return fmt.Errorf("container address %v is the gateway's", f.GuestAddr)
	case dns.IsValid() && f.GuestAddr == dns:
		return fmt.Errorf("container address %v is --dns's, the gateway's DNS address", f.GuestAddr)
	case f.HostAddr.IsValid() && !f.HostAddr.Is4():
		return fmt.Errorf("host address %v: the uplink is IPv4", f.HostAddr)
	case uplink.IsValid() && f.HostAddr.IsValid() && !f.HostAddr.IsUnspecified() && f.HostAddr != uplink:
		return fmt.Errorf("host address %v is not the gateway's uplink address %v", f.HostAddr, uplink)
	}
	return nil
}

// nsID identifies a namespace file, whatever path names it.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, fmt.Errorf("network namespace %s: %w", path, err)
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// checkDevices checks that every namespace exists and that no device is
// asked for twice, whatever paths name its namespace.
func checkDevices(ports []portSpec, up uplinkSpec) error {
	type dev struct {
		ns     nsID
		ifname string
	}
	seen := map[dev]string{}
	routed := map[nsID]string{} // the --port whose address routes its namespace through the gateway
	add := func(what, ns, ifname string, addressed bool) error {
		id, err := statNS(ns)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		d := dev{id, ifname}
		if other, ok := seen[d]; ok {
			return fmt.Errorf("%s: device %s in %s is already %s", what, ifname, ns, other)
		}
		seen[d] = what
		if addressed {
			// Each gets a default route via the gateway: a namespace
			// has room for one.
			if other, ok := routed[id]; ok {
				return fmt.Errorf("%s: %s is in the same namespace and has an address too; give one of them its address (and the default route) only", what, other)
			}
			routed[id] = what
		}
		return nil
	}
	if !up.Host {
		if err := add("--uplink", up.NetNS, up.IfName, false); err != nil {
			return err
		}
	}
	for _, p := range ports {
		if err := add("--port "+p.NetNS+":"+p.IfName, p.NetNS, p.IfName, p.Addr.IsValid()); err != nil {
			return err
		}
	}
	return nil
}

// checkSocketPath checks that a unix socket can be made at path.
func checkSocketPath(path string) error {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return fmt.Errorf("longer than %d bytes", len(unix.RawSockaddrUnix{}.Path)-1)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// defaultSocket is the API socket when --api-socket is not given: for
// root /run/usernat.sock, for anyone else $XDG_RUNTIME_DIR/usernat.sock.
func defaultSocket() (string, error) {
	if os.Geteuid() == 0 {
		return "/run/usernat.sock", nil
	}
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		return "", errors.New("XDG_RUNTIME_DIR is not set: give --api-socket PATH")
	}
	return filepath.Join(dir, "usernat.sock"), nil
}

// hostAddrOn reports whether a is an address a host on the IPv4 subnet p
// may have: inside it, and neither its network nor its broadcast address
// (a /31 or /32 has neither).
func hostAddrOn(p netip.Prefix, a netip.Addr) bool {
	m := p.Masked()
	return m.Contains(a) && (p.Bits() >= 31 || a != m.Addr() && a != rtnl.Broadcast(p))
}
