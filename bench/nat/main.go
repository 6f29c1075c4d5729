// Command nat measures the reference experiment (Docker's default bridge
// network with a published port, bench/README.md) twice in the
// same run: once with the kernel as the gateway (a Linux bridge docker0,
// nftables DNAT and MASQUERADE, the kernel's conntrack), once with the
// usernat command as the gateway over TAP devices, with no bridge and no
// kernel NAT. The same Go client measures both: TCP throughput in through
// the published port and out through masquerade, request/response latency
// over the published port, and new connections per second through it. It
// prints each pair with usernat's ratio to the kernel and the project's
// target.
//
// It must run as root. It re-executes itself under `unshare --net` and
// creates every namespace, device, rule and socket inside that private
// namespace, so no packet can leave it. See bench/README.md.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/usernat/usernat/internal/benchkit"
	"github.com/usernat/usernat/internal/netns"
)

const (
	minMTU = 576
	maxMTU = 65520
)

// config is the command line: the flags every bench program takes, and
// the links' MTU.
type config struct {
	benchkit.Flags
	mtu int
}

func main() {
	var cfg config
	cfg.Register(flag.CommandLine, "kernel then usernat", "nftables, iproute2, util-linux")
	flag.IntVar(&cfg.mtu, "mtu", 1500, "MTU of every link in both setups (576..65520; RootlessKit uses 65520)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/nat: ")
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments %q", flag.Args())
	}
	if err := cfg.Check(); err != nil {
		log.Fatal(err)
	}
	if cfg.mtu < minMTU || cfg.mtu > maxMTU {
		log.Fatalf("-mtu must be in [%d, %d]", minMTU, maxMTU)
	}
	if os.Geteuid() != 0 {
		log.Fatal("needs root: it creates network namespaces, veth and TAP devices and nftables rules")
	}
	if err := netns.CheckPrivate(); err != nil {
		if os.Getenv(benchkit.ReexecEnv) != "" {
			log.Fatal(err)
		}
		// The first run: tools, a usernat build, then this program
		// again under `unshare --net`.
		os.Exit(benchkit.Outer(cfg.Flags, ensureTools, func(args, env []string) (*exec.Cmd, error) {
			return netns.Reexec(args, env...)
		}))
	}
	os.Exit(inner(cfg))
}

// inner runs inside the private namespace: it builds each setup, measures
// it and tears it down, round after round, then prints the report.
func inner(cfg config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	un, remove := benchkit.UsernatFrom(cfg.Usernat, cfg.Tags)
	defer remove()
	nat, err := kernelNATTool()
	if err != nil {
		log.Print(err)
		return 1
	}
	rep := newReport(cfg, nat)
	return benchkit.RunRounds(ctx, cfg.Flags, rep, func(r int) {
		progress("round %d of %d: kernel (docker0 bridge, %s DNAT and MASQUERADE)", r+1, cfg.Rounds, nat)
		k := measureSetup(ctx, cfg, func() (*topology, error) { return buildKernel(nat, cfg.mtu) })
		var u result
		if un.Reason != "" {
			u = result{Unavailable: un.Reason}
		} else {
			progress("round %d of %d: usernat (%s)", r+1, cfg.Rounds, un.Bin)
			u = measureSetup(ctx, cfg, func() (*topology, error) { return buildUsernat(ctx, un.Bin, cfg.mtu) })
			if u.Unavailable != "" {
				// It will not start better next round.
				un.Reason = u.Unavailable
			}
		}
		rep.add(k, u)
	})
}

// measureSetup builds a topology, measures it and tears it down. A
// topology that cannot be built makes a result that says why.
func measureSetup(ctx context.Context, cfg config, build func() (*topology, error)) result {
	t, err := build()
	if err != nil {
		return result{Unavailable: err.Error()}
	}
	defer t.Close()
	return measure(ctx, t, cfg)
}

// progress says what the run is doing, on standard error after the
// program's name.
func progress(format string, args ...any) { log.Printf(format, args...) }
