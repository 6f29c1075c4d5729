package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The slirp4netns command line. RootlessKit and Podman run slirp4netns
// as `slirp4netns [OPTION]... PID|PATH TAPNAME`, having asked its --help
// which options it has; usernat takes the same command line, with the
// same network (the subnet's .2 the gateway, .3 DNS, .100 the
// container), and runs `usernat gateway --uplink host` on it.

// slirpUsage is the slirp4netns part of usage: RootlessKit and Podman
// look for the options' names in --help.
const slirpUsage = `
As slirp4netns, for RootlessKit and Podman (the same command line; the
network is carried over this process's sockets, as by usernat gateway):
  usernat [OPTION]... PID|PATH [TAPNAME]
  -c, --configure          bring up TAPNAME with the container's address
                           (the network's .100), a default route via the
                           gateway (.2) and the MTU
  -e, --exit-fd FD         exit when FD is closed
  -r, --ready-fd FD        write "1" to FD when ready
  -m, --mtu N              MTU (default 1500, 576 to 65520)
  --cidr CIDR              the network (default 10.0.2.0/24)
  --disable-host-loopback  the gateway's address no longer leads to the
                           host's loopback (DNS at .3 still reaches the
                           host's resolver, wherever it listens)
  --netns-type TYPE        how the namespace is named: pid (default) or path
  --userns-path PATH       the user namespace to join to open TAPNAME (with
                           a PID, the process's own, when it differs)
  -a, --api-socket PATH    serve the slirp4netns API (add_hostfwd, ...) there
  --disable-dns            serve no DNS at the network's .3 (by default the
                           host's resolver, from /etc/resolv.conf, answers there)
  --outbound-addr ADDR|IFNAME
                           the source of outbound flows
  -6, --enable-ipv6        accepted; the network stays IPv4 (said in the log)
  --outbound-addr6 ADDR|IFNAME
                           accepted, as Podman passes it; unused: no IPv6
  -h, --help               this text
  -v, --version            the version
TAPNAME is tap0 when not given. A TAP device in a namespace of another
user namespace is opened by a helper run under nsenter(1) (util-linux).
`

// getoptShort rewrites the short options of args as getopt(3), which
// slirp4netns parses with, takes them and the flag package does not: one
// dash and several letters (-ce 4: -c -e 4), a value joined to its letter
// (-r3: -r 3). A one-letter flag of fs that takes no value is a letter
// such a cluster may hold; one that takes a value takes the rest of the
// cluster, or the next argument. Long options (--mtu, or fs's own
// -mtu), values and what follows "--" stay as they are.
func getoptShort(fs *flag.FlagSet, args []string) []string {
	takesValue := func(name string) (known, value bool) {
		f := fs.Lookup(name)
		if f == nil {
			return false, false
		}
		b, ok := f.Value.(interface{ IsBoolFlag() bool })
		return true, !ok || !b.IsBoolFlag()
	}
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		name, _, joined := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if known, value := takesValue(name); known || strings.HasPrefix(a, "--") {
			// A flag as it is, with the value that follows it.
			out = append(out, a)
			if value && !joined && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			continue
		}
		// A cluster of one-letter flags, if each letter up to the first
		// that takes a value is one; else as it is, for the flag package
		// to refuse.
		split := []string{}
		for rest := a[1:]; rest != ""; rest = rest[1:] {
			known, value := takesValue(rest[:1])
			if !known {
				split = []string{a}
				break
			}
			split = append(split, "-"+rest[:1])
			if value {
				if rest[1:] != "" {
					split = append(split, rest[1:])
				} else if i+1 < len(args) {
					i++
					split = append(split, args[i])
				}
				break
			}
		}
		out = append(out, split...)
	}
	return out
}

// parseSlirpArgs turns the slirp4netns command line into the gateway's
// configuration. version reports --version, which the caller answers.
func parseSlirpArgs(args []string) (cfg *gatewayConfig, version bool, err error) {
	fs := flag.NewFlagSet("usernat", flag.ContinueOnError)
	var (
		configure, disableLoopback, disableDNS, ipv6 bool
		exitFD, readyFD, mtu                         int
		cidr, nsType, userns, apiSocket, outbound    string
		outbound6                                    string
	)
	for _, n := range []string{"c", "configure"} {
		fs.BoolVar(&configure, n, false, "")
	}
	for _, n := range []string{"e", "exit-fd"} {
		fs.IntVar(&exitFD, n, -1, "")
	}
	for _, n := range []string{"r", "ready-fd"} {
		fs.IntVar(&readyFD, n, -1, "")
	}
	for _, n := range []string{"m", "mtu"} {
		fs.IntVar(&mtu, n, 1500, "")
	}
	for _, n := range []string{"a", "api-socket"} {
		fs.StringVar(&apiSocket, n, "", "")
	}
	for _, n := range []string{"6", "enable-ipv6"} {
		fs.BoolVar(&ipv6, n, false, "")
	}
	for _, n := range []string{"v", "version"} {
		fs.BoolVar(&version, n, false, "")
	}
	fs.StringVar(&cidr, "cidr", "10.0.2.0/24", "")
	fs.BoolVar(&disableLoopback, "disable-host-loopback", false, "")
	fs.StringVar(&nsType, "netns-type", "pid", "")
	fs.StringVar(&userns, "userns-path", "", "")
	fs.BoolVar(&disableDNS, "disable-dns", false, "")
	fs.StringVar(&outbound, "outbound-addr", "", "")
	fs.StringVar(&outbound6, "outbound-addr6", "", "")
	pos, err := parseFlags(fs, getoptShort(fs, args))
	if err != nil || version {
		return nil, version, err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return nil, false, usagef("want PID|PATH [TAPNAME], got %d arguments", len(pos))
	}
	tap := "tap0"
	if len(pos) == 2 {
		tap = pos[1]
	}

	network, err := netip.ParsePrefix(cidr)
	if err != nil || !network.Addr().Is4() || network.Bits() > 25 || network.Masked() != network {
		return nil, false, usagef("--cidr %s: want an IPv4 network of /25 or larger, such as 10.0.2.0/24", cidr)
	}
	at := func(n int) netip.Addr {
		a := network.Addr()
		for range n {
			a = a.Next()
		}
		return a
	}
	gw, dns, guest := at(2), at(3), at(100)

	var netnsPath string
	switch nsType {
	case "pid":
		pid, err := strconv.Atoi(pos[0])
		if err != nil || pid <= 0 {
			return nil, false, usagef("%s: want a process id (--netns-type pid)", pos[0])
		}
		netnsPath = fmt.Sprintf("/proc/%d/ns/net", pid)
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			// Said so, before --userns-path's default fails on it.
			return nil, false, usagef("%s: no such process (--netns-type pid)", pos[0])
		}
		if userns == "" {
			userns = fmt.Sprintf("/proc/%d/ns/user", pid)
		}
	case "path":
		netnsPath = pos[0]
		if !strings.Contains(netnsPath, "/") {
			// A file in the working directory, as slirp4netns opens it,
			// not a name of `ip netns`'s, which --port reads it as.
			netnsPath = "./" + netnsPath
		}
	default:
		return nil, false, usagef("--netns-type %s: want pid or path", nsType)
	}
	if userns != "" {
		if userns, err = foreignUserNS(userns); err != nil {
			return nil, false, usagef("--userns-path: %v", err)
		}
	}

	port := netnsPath + ":" + tap
	if configure {
		port += "=" + netip.PrefixFrom(guest, network.Bits()).String()
	}
	gargs := []string{
		"--subnet", netip.PrefixFrom(gw, network.Bits()).String(),
		"--port", port,
		"--mtu", strconv.Itoa(mtu),
		"--ready-fd", strconv.Itoa(readyFD),
	}
	if !disableLoopback {
		gargs = append(gargs, "--host-loopback", gw.String())
	}
	if !disableDNS {
		gargs = append(gargs, "--dns", dns.String())
	}
	if outbound != "" {
		gargs = append(gargs, "--outbound-addr", outbound)
	}
	if apiSocket != "" {
		gargs = append(gargs, "--api-socket", apiSocket)
	}
	if cfg, err = parseGatewayFlags(gargs, apiSocket != ""); err != nil {
		// Its messages name the gateway's flags; say which of ours.
		return nil, false, usagef("%v (from the slirp4netns command line)", err)
	}
	cfg.Ports[0].UserNS = userns
	cfg.DefaultGuest = guest // as slirp4netns, with or without --configure
	cfg.DNSOptional = true
	cfg.SlirpIDs = true
	cfg.IPv6Asked = ipv6
	cfg.Outbound6Asked = outbound6
	if exitFD >= 0 {
		if _, err := unix.FcntlInt(uintptr(exitFD), unix.F_GETFD, 0); err != nil {
			return nil, false, usagef("--exit-fd %d: not an open file descriptor", exitFD)
		}
	} else if exitFD != -1 {
		return nil, false, usagef("--exit-fd %d: not a file descriptor", exitFD)
	}
	cfg.ExitFD = exitFD
	return cfg, false, nil
}

// foreignUserNS returns path when it is a user namespace other than this
// process's (one to join to open a device in its network namespaces), or
// "" when it is this process's own.
func foreignUserNS(path string) (string, error) {
	var theirs, ours unix.Stat_t
	if err := unix.Stat(path, &theirs); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if err := unix.Stat("/proc/self/ns/user", &ours); err != nil {
		return "", err
	}
	if theirs.Dev == ours.Dev && theirs.Ino == ours.Ino {
		return "", nil
	}
	return path, nil
}

// slirpLike reports whether args look like a slirp4netns command line
// rather than a usernat command: an option first, or a process id or a
// path.
func slirpLike(args []string) bool {
	a := args[0]
	if strings.HasPrefix(a, "-") || strings.Contains(a, "/") {
		return true
	}
	_, err := strconv.Atoi(a)
	return err == nil
}

// runSlirp runs the slirp4netns command line args.
func runSlirp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, version, err := parseSlirpArgs(args)
	switch {
	case version:
		fmt.Fprintln(stdout, "usernat", versionString(), "(slirp4netns command line)")
		return nil
	case err != nil:
		return err
	}
	return runConfigured(ctx, cfg, stderr)
}

// watchExitFD cancels stop once fd (slirp4netns's --exit-fd: the read
// end of a pipe whose writer holds it open while the network must live)
// hangs up or fails; it returns what releases the watch. As slirp4netns,
// it polls fd for that alone: data written to it ends nothing, and the
// caller's open file description is left as it was (not made
// non-blocking under whoever else reads it, such as a shell whose stdin
// is --exit-fd=0).
func watchExitFD(fd int, stop context.CancelFunc) (release func(), err error) {
	var wake [2]int // closing wake[1] releases the watch
	if err := unix.Pipe2(wake[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("--exit-fd %d: %w", fd, os.NewSyscallError("pipe2", err))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// No events asked for fd: poll reports POLLHUP, POLLERR and
		// POLLNVAL whatever is asked.
		fds := []unix.PollFd{{Fd: int32(fd)}, {Fd: int32(wake[0]), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			switch {
			case err == unix.EINTR:
				continue
			case fds[1].Revents != 0:
				return
			case err != nil || fds[0].Revents != 0:
				stop()
				return
			}
		}
	}()
	return func() {
		unix.Close(wake[1])
		<-done
		unix.Close(wake[0])
	}, nil
}
