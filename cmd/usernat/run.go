package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/internal/rtnl"
	"github.com/usernat/usernat/nat/hostnet"
)

// gatewaySetup is what startGateway needs.
type gatewaySetup struct {
	Bridge     *bridge.Bridge
	Subnet     netip.Prefix
	MTU        int
	UplinkPort bridge.Port
	UplinkAddr netip.Prefix
	UplinkVia  netip.Addr
	Conntrack  conntrack.Config
	Logger     *slog.Logger
}

// gatewayHandle is a running gateway as the command uses it (natgw.go).
type gatewayHandle interface {
	Table() *conntrack.Table
	Publisher() publisher
	WriteRules(w io.Writer) error
	// Stats adds the gateway's counters to m, named gateway.NAME.
	Stats(m map[string]uint64)
	Close() error
}

// bridgeName names the bridge in FDB listings.
const bridgeName = "usernat0"

// runGateway runs `usernat gateway` until ctx ends or a signal comes.
func runGateway(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseGatewayArgs(args)
	if err != nil {
		return err
	}
	return runConfigured(ctx, cfg, stderr)
}

// runConfigured runs the gateway cfg describes until ctx ends, a signal
// comes, or its exit fd says so.
func runConfigured(ctx context.Context, cfg *gatewayConfig, stderr io.Writer) error {
	level := slog.LevelWarn
	switch {
	case cfg.Debug:
		level = slog.LevelDebug
	case cfg.Verbose:
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, leave, stop := shutdownContext(ctx)
	defer stop()
	// A log line to a stderr pipe whose reader is gone (a supervisor
	// that went away) fails, as slirp4netns's do, rather than killing
	// the network with SIGPIPE: Go kills a program that writes to a
	// broken pipe on fd 1 or 2 unless SIGPIPE is notified. It stays
	// notified for the rest of the process, so the error the command
	// prints on its way out fails too rather than kills; children (the
	// TAP helper) keep the default disposition. (The client commands do
	// not notify it: `usernat conntrack -L | head` ends as Unix tools do.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	if cfg.ExitFD >= 0 {
		release, err := watchExitFD(cfg.ExitFD, leave)
		if err != nil {
			return err
		}
		defer release()
	}
	if cfg.IPv6Asked {
		log.Warn("--enable-ipv6: the network is IPv4 only; the container gets no IPv6 address or route")
	}
	if cfg.Outbound6Asked != "" {
		log.Warn("--outbound-addr6: the network is IPv4 only; no flow leaves from it", "addr", cfg.Outbound6Asked)
	}
	if n := procs(cfg, os.Getenv("GOMAXPROCS")); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	bridge.SetBusyPoll(cfg.BusyPoll)
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile %s: %w", cfg.CPUProfile, err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	g, err := startAll(cfg, log)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		// Told to stop while starting: a supervisor waiting on the
		// ready fd must not hear "ready" from a gateway going away.
		log.Info("shutting down before ready")
		return g.close(log)
	}
	var uplink any = cfg.UplinkAddr
	if cfg.Uplink.Host {
		uplink = "host" // the host's sockets: no address of its own
	}
	log.Info("gateway ready", "subnet", cfg.Subnet, "uplink", uplink, "ports", len(cfg.Ports), "api-socket", cfg.APISocket)
	if cfg.ReadyFD >= 0 {
		if err := signalReady(cfg.ReadyFD); err != nil {
			g.close(log)
			return err
		}
	}
	<-ctx.Done()
	log.Info("shutting down")
	return g.close(log)
}

// shutdownContext returns a context that ends when parent does, on SIGINT
// or SIGTERM, or when leave is called (as the exit fd's hang-up does).
// The signals stay caught until stop, whatever ended the context: one
// that comes while the gateway shuts down must not kill it before it has
// closed its API socket and TAP devices.
func shutdownContext(parent context.Context) (ctx context.Context, leave context.CancelFunc, stop func()) {
	sigCtx, sigStop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	ctx, leave = context.WithCancel(sigCtx)
	return ctx, leave, func() {
		leave()
		sigStop()
	}
}

// running is everything the gateway command made, in the order to undo.
type running struct {
	srv *api.Server
	gw  gatewayHandle
	br  *bridge.Bridge
}

func (r *running) close(log *slog.Logger) error {
	var errs []error
	if r.srv != nil {
		errs = append(errs, r.srv.Close())
	}
	if r.gw != nil {
		errs = append(errs, r.gw.Close())
	}
	// Closing the bridge closes its TAP ports; the kernel removes a
	// non-persistent TAP device with its last file descriptor.
	errs = append(errs, r.br.Close())
	err := errors.Join(errs...)
	if err != nil {
		log.Warn("shutdown", "err", err)
	}
	return err
}

// startAll builds the bridge, its ports, the gateway and the API server.
// On error it undoes what it did.
func startAll(cfg *gatewayConfig, log *slog.Logger) (_ *running, err error) {
	br, err := bridge.New(bridge.Config{Name: bridgeName, MTU: cfg.MTU, Logger: log})
	if err != nil {
		return nil, err
	}
	r := &running{br: br}
	defer func() {
		if err != nil {
			r.close(log)
		}
	}()

	names := portNames(cfg.Ports)
	for i, p := range cfg.Ports {
		// With the host uplink, the bridge writes to the containers'
		// TAP devices from the goroutine that forwards (DirectWrite:
		// measured with bench/rootless, p50 latency 73–87 µs instead of
		// 101–108, the rest unchanged), with system calls the
		// scheduler does not see (RawIO, bridge.TAPConfig says why);
		// with the link uplink both measured worse.
		tc := bridge.TAPConfig{Name: p.IfName, NetNS: p.NetNS, MTU: cfg.MTU, Offload: cfg.Offload, DirectWrite: cfg.Uplink.Host, RawIO: cfg.Uplink.Host}
		var tap *bridge.TAP
		if p.UserNS != "" {
			// Opened, and configured, by a helper that joins the user
			// namespace too, which this process cannot.
			tap, err = openTAPVia(p, tc, cfg.Subnet.Addr())
		} else {
			tap, err = bridge.OpenTAP(tc)
		}
		if err != nil {
			return nil, fmt.Errorf("--port %s:%s: %w", p.NetNS, p.IfName, err)
		}
		if _, err := br.AddPort(tap, bridge.PortConfig{Name: names[i]}); err != nil {
			tap.Close()
			return nil, fmt.Errorf("--port %s:%s: %w", p.NetNS, p.IfName, err)
		}
		if p.Addr.IsValid() && p.UserNS == "" {
			if err := rtnl.ConfigureLink(p.NetNS, p.IfName, p.Addr, cfg.Subnet.Addr()); err != nil {
				return nil, fmt.Errorf("--port %s:%s=%v: %w", p.NetNS, p.IfName, p.Addr, err)
			}
		}
		log.Info("port added", "port", names[i], "netns", p.NetNS, "addr", p.Addr)
	}

	setup := gatewaySetup{
		Bridge:    br,
		Subnet:    cfg.Subnet,
		MTU:       cfg.MTU,
		Conntrack: conntrack.Config{Max: cfg.ConntrackMax, Timeouts: cfg.Timeouts, Logger: log},
		Logger:    log,
	}
	if cfg.Uplink.Host {
		hc, herr := hostConfig(cfg, log)
		if herr != nil {
			return nil, herr
		}
		r.gw, err = startHostGateway(setup, hc)
		err = resolverHint(err)
	} else {
		up, terr := bridge.OpenTAP(bridge.TAPConfig{Name: cfg.Uplink.IfName, NetNS: cfg.Uplink.NetNS, MTU: cfg.MTU, Offload: cfg.Offload})
		if terr != nil {
			return nil, fmt.Errorf("--uplink tap:%s:%s: %w", cfg.Uplink.NetNS, cfg.Uplink.IfName, terr)
		}
		setup.UplinkPort, setup.UplinkAddr, setup.UplinkVia = up, cfg.UplinkAddr, cfg.UplinkVia
		r.gw, err = startGateway(setup)
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	guest := defaultGuest(cfg.Ports)
	if cfg.DefaultGuest.IsValid() {
		guest = cfg.DefaultGuest
	}
	b := &backend{br: br, gw: r.gw, pub: r.gw.Publisher(), subnet: cfg.Subnet, uplink: cfg.UplinkAddr.Addr(), dns: cfg.DNS, guest: guest}
	if cfg.SlirpIDs {
		b.pub = newSeqPublisher(b.pub)
	}
	for _, f := range cfg.Publish {
		if _, err := b.pub.Publish(f); err != nil {
			return nil, fmt.Errorf("-p %s: %w", formatPublish(f), err)
		}
	}
	if cfg.APISocket == "" {
		return r, nil // slirp4netns without --api-socket
	}
	r.srv, err = api.Listen(cfg.APISocket, b, api.ServerConfig{Logger: log})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// systemResolver is hostnet.SystemResolver (a variable for the tests).
var systemResolver = hostnet.SystemResolver

// hostConfig is the host-socket uplink's configuration from the command
// line: an --outbound-addr that names an interface is its first IPv4
// address now, as slirp4netns takes it.
func hostConfig(cfg *gatewayConfig, log *slog.Logger) (hostnet.Config, error) {
	hc := hostnet.Config{
		HostLoopback:      cfg.HostLoopback,
		DNS:               cfg.DNS,
		Resolver:          cfg.DNSResolver,
		OutboundAddr:      cfg.OutboundAddr,
		MaxFlowsPerSource: cfg.MaxFlowsPerSource,
		ConnectTimeout:    cfg.ConnectTimeout,
		Logger:            log,
	}
	if hc.DNS.IsValid() && !hc.Resolver.IsValid() && cfg.DNSOptional {
		// slirp4netns serves DNS at .3 from the nameserver resolv.conf
		// names when a query comes, so a host whose file names none at
		// start (booting before its network is up), or has none, has
		// DNS once it does. hostnet.New does that (Resolver stays
		// unset, so it reads the file again when it changes), sending
		// queries to 127.0.0.1 meanwhile, as glibc takes such a file.
		// Only a file it cannot read, which New refuses, leaves the
		// containers without DNS rather than without a network.
		_, err := systemResolver()
		if err != nil && !errors.Is(err, hostnet.ErrNoNameserver) && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("no DNS for the containers", "dns", hc.DNS, "err", err)
			hc.DNS = netip.Addr{}
		}
	}
	if cfg.OutboundIface != "" {
		a, err := ifaceAddr4(cfg.OutboundIface)
		if err != nil {
			return hc, fmt.Errorf("--outbound-addr %s: %w", cfg.OutboundIface, err)
		}
		hc.OutboundAddr = a
		log.Info("outbound address", "interface", cfg.OutboundIface, "addr", a)
	}
	return hc, nil
}

// resolverHint names the flag that says where DNS queries go when err is
// hostnet's for a system resolver it could not read; it returns any other
// err as it is.
func resolverHint(err error) error {
	var re *hostnet.ResolverError
	if errors.As(err, &re) {
		return fmt.Errorf("--dns: the host's resolver: %w; give --dns-resolver", re.Err)
	}
	return err
}

// ifaceAddr4 returns the first IPv4 address of the interface name.
func ifaceAddr4(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", name)
}

// portNames names the bridge ports after their devices, adding the
// namespace where two devices share a name.
func portNames(ports []portSpec) []string {
	count := map[string]int{}
	for _, p := range ports {
		count[p.IfName]++
	}
	names := make([]string, len(ports))
	for i, p := range ports {
		names[i] = p.IfName
		if count[p.IfName] > 1 {
			names[i] = p.IfName + "@" + nsLabel(p.NetNS, i)
		}
	}
	return names
}

// nsLabel is a short name for a namespace path: NAME for /run/netns/NAME,
// PID for /proc/PID/ns/net, else the port's position.
func nsLabel(path string, i int) string {
	if dir, name := filepath.Split(path); dir == "/run/netns/" {
		return name
	}
	if rest, ok := strings.CutPrefix(path, "/proc/"); ok {
		if pid, tail, ok := strings.Cut(rest, "/"); ok && tail == "ns/net" {
			return pid
		}
	}
	return fmt.Sprint(i)
}

// signalReady writes "1" to fd and closes it, as slirp4netns -r does.
func signalReady(fd int) error {
	f := os.NewFile(uintptr(fd), "ready-fd")
	_, err := f.Write([]byte("1"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("--ready-fd %d: %w", fd, err)
	}
	return nil
}
