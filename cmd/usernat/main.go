package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version is set at link time (-ldflags "-X main.version=v0.1.0"); empty
// means the module version from the build info.
var version string

const usage = `usage: usernat COMMAND [flags]

usernat runs Docker's bridge network in userspace: a bridge, published ports
(DNAT), outbound masquerade (SNAT) and connection tracking, with no kernel NAT.

Commands:
  gateway      run the bridge and the gateway (see usernat gateway --help)
  conntrack    -L lists the gateway's connection-tracking table as
               conntrack -L does; -F empties it
  nat          -L lists the NAT rules as iptables -t nat -L -n does
  fdb          lists the bridge's forwarding database as bridge fdb show does
  publish      SPEC publishes a port and prints its id; --list lists them
  unpublish    ID removes a published port
  stats        prints the gateway's counters, one "name value" a line

The client commands talk to a running gateway over its API socket, given by
--api-socket PATH; the default is /run/usernat.sock for root and
$XDG_RUNTIME_DIR/usernat.sock for anyone else, the gateway's default too.

  usernat --help       this text
  usernat --version    the version
` + slirpUsage

const gatewayUsage = `usage: usernat gateway [--uplink host] [flags]
       usernat gateway --uplink tap:NETNS:IFNAME --uplink-addr ADDR/PREFIX [flags]

Runs a bridge with a TAP device in each container namespace and a gateway on
it at the subnet address. With --uplink host (the default) the containers'
flows are carried over this process's own sockets, as slirp4netns does, with
no privileges needed beyond the TAP devices, and published ports listen on
the host. With --uplink tap:... the gateway masquerades the subnet to its
address on an uplink TAP on the outside network and forwards published
ports, as the kernel's NAT does. It runs until
SIGINT or SIGTERM, then removes the TAP devices it created and its API socket.
It prints nothing unless something goes wrong or -v is given.

  --subnet ADDR/PREFIX       the gateway's address on the bridge and the
                             bridge subnet (default 172.17.0.1/16)
  --port NETNS:IFNAME[=ADDR/PREFIX]
                             create TAP device IFNAME in NETNS and plug it into
                             the bridge; with =ADDR/PREFIX also put the address
                             on it, bring it up and add a default route via the
                             gateway (repeatable)
  --uplink host              carry flows over host sockets (the default)
  --host-loopback ADDR       with --uplink host: TCP and UDP to ADDR (the
                             gateway's, as slirp4netns's 10.0.2.2) reach the
                             host's 127.0.0.1; by default nothing does
  --dns ADDR                 with --uplink host: serve DNS at ADDR, an address
                             on the bridge subnet (as slirp4netns's 10.0.2.3):
                             TCP and UDP to its port 53 go to the host's
                             resolver (the first IPv4 nameserver of
                             /etc/resolv.conf, even one on the host's loopback)
  --dns-resolver ADDR[:PORT] with --dns: send its queries here instead
  --outbound-addr ADDR|IFNAME
                             with --uplink host: the local address of host
                             sockets for outbound flows, or the interface
                             whose first IPv4 address it is (found at start)
  --max-flows-per-source N   with --uplink host: most flows one container
                             address has open (default 0, no cap)
  --connect-timeout DURATION with --uplink host: how long a container's
                             connection waits for a silent destination
                             before it is dropped (default 20s)
  --uplink tap:NETNS:IFNAME  create the uplink TAP device IFNAME in NETNS
  --uplink-addr ADDR/PREFIX  the gateway's address on the uplink, such as
                             192.168.2.116/24
  --uplink-via ADDR          next hop on the uplink for destinations off its link
  -p, --publish [HOSTADDR:]HOSTPORT[-END]:CONTAINERADDR:CONTAINERPORT[-END][/tcp|/udp]
                             publish a port, as docker run -p (repeatable);
                             HOSTADDR, when given, is the host address to
                             listen on (--uplink host) or the uplink address
  --mtu N                    MTU of the TAP devices, the bridge and the gateway
                             (default 1500, 576 to 65520)
  --offload=false            open the TAP devices without checksum and TCP
                             segmentation offload (on by default: the kernels
                             then send TCP in 64 KiB segments whatever the MTU)
  --timeout NAME=SECONDS     a conntrack idle timeout, by its sysctl name:
                             tcp_established, tcp_syn_sent, tcp_time_wait, udp,
                             udp_stream, icmp, generic, ... (repeatable)
  --conntrack-max N          most conntrack entries (default 262144)
  --cpuprofile FILE          write a CPU profile of the run to FILE (go tool pprof)
  --procs N                  CPUs running usernat's code at once (default 1;
                             GOMAXPROCS, when set, is the default)
  --busy-poll DURATION       poll at most this long for the next packet
                             before sleeping (default 200us, adapting to the
                             traffic; 0 turns it off)
  --api-socket PATH          the API socket, mode 0600 (default
                             /run/usernat.sock for root, else
                             $XDG_RUNTIME_DIR/usernat.sock)
  --ready-fd N               write "1" to file descriptor N when ready, then
                             close it (as slirp4netns -r)
  -v                         log what it does to stderr
  --debug                    log at debug level

NETNS is a path, such as /proc/PID/ns/net or /run/netns/NAME, or a bare NAME
meaning /run/netns/NAME. The uplink is IPv4; the bridge subnet too.

Examples: a container's namespace networked as slirp4netns does it, its
port 80 published on the host's 8080:
  usernat gateway --subnet 10.0.2.2/24 --port /proc/PID/ns/net:tap0=10.0.2.100/24 \
      --dns 10.0.2.3 --mtu 65520 -p 8080:10.0.2.100:80
the Docker experiment (as root), then a client address in lan, from which
192.168.2.116:8080 reaches the container:
  usernat gateway --subnet 172.17.0.1/16 --port web:eth0=172.17.0.4/16 \
      --uplink tap:lan:eth0 --uplink-addr 192.168.2.116/24 -p 8080:172.17.0.4:80
  ip -n lan addr add 192.168.2.104/24 dev eth0
`

const clientUsage = `usage:
  usernat conntrack -L|-F [--api-socket PATH]
  usernat nat -L [--api-socket PATH]
  usernat fdb [--api-socket PATH]
  usernat publish SPEC [--api-socket PATH]
  usernat publish --list [--api-socket PATH]
  usernat unpublish ID [--api-socket PATH]
  usernat stats [--api-socket PATH]

SPEC is [HOSTADDR:]HOSTPORT[-END]:CONTAINERADDR:CONTAINERPORT[-END][/tcp|/udp].
conntrack's -L and -F are also --dump and --flush, and publish's --list
is also -l; nat takes iptables's -n (addresses are always numeric), and
fdb takes bridge's "show".
--api-socket defaults to /run/usernat.sock for root and
$XDG_RUNTIME_DIR/usernat.sock for anyone else.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit status: 0, 1 for a
// failure, 2 for a bad command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	help := usage
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-v", "-version", "--version", "version":
		fmt.Fprintln(stdout, "usernat", versionString())
		return 0
	case "gateway":
		help = gatewayUsage
		err = runGateway(ctx, rest, stderr)
	case "conntrack":
		help = clientUsage
		err = runConntrack(ctx, rest, stdout, stderr)
	case "nat":
		help = clientUsage
		err = runNAT(ctx, rest, stdout)
	case "fdb":
		help = clientUsage
		err = runFDB(ctx, rest, stdout)
	case "publish":
		help = clientUsage
		err = runPublish(ctx, rest, stdout)
	case "unpublish":
		help = clientUsage
		err = runUnpublish(ctx, rest)
	case "stats":
		help = clientUsage
		err = runStats(ctx, rest, stdout)
	case tapHelperCmd:
		err = runTAPHelper(rest)
	default:
		if !slirpLike(args) {
			fmt.Fprintf(stderr, "usernat: unknown command %q\n\n%s", cmd, usage)
			return 2
		}
		// The slirp4netns command line: its messages name no command.
		cmd, help = "", usage
		err = runSlirp(ctx, args, stdout, stderr)
	}
	name := strings.TrimSpace("usernat " + cmd)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, help)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v + " " + bi.GoVersion
}
