// Command nat measures the reference experiment of DESIGN.md twice in the
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
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/usernat/usernat/internal/netns"
)

const (
	reexecEnv     = "USERNAT_BENCH_UNSHARED"
	unavailEnv    = "USERNAT_BENCH_USERNAT_UNAVAILABLE" // why the outer process has no usernat binary
	maxDuration   = time.Minute
	maxRounds     = 10
	maxParallel   = 64
	minMTU        = 576
	maxMTU        = 65520
	exitInterrupt = 130
)

type config struct {
	duration time.Duration
	rounds   int
	mtu      int
	parallel int
	usernat  string
	tags     string
	json     bool
	install  bool
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of each measurement (at most 60s)")
	flag.IntVar(&cfg.rounds, "rounds", 1, "rounds of kernel then usernat (at most 10)")
	flag.IntVar(&cfg.mtu, "mtu", 1500, "MTU of every link in both setups (576..65520; RootlessKit uses 65520)")
	flag.IntVar(&cfg.parallel, "parallel", 4, "concurrent clients opening connections in the connections/s measurement")
	flag.StringVar(&cfg.usernat, "usernat", "", "usernat binary (default: go build ./cmd/usernat into a temporary directory)")
	flag.StringVar(&cfg.tags, "tags", "", "build tags for building ./cmd/usernat (go build -tags)")
	flag.BoolVar(&cfg.json, "json", false, "print the results as JSON instead of tables")
	flag.BoolVar(&cfg.install, "install", true, "apt-get install the Debian packages of missing tools (nftables, iproute2, util-linux)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/nat: ")
	switch {
	case flag.NArg() > 0:
		log.Fatalf("unexpected arguments %q", flag.Args())
	case cfg.duration <= 0 || cfg.duration > maxDuration:
		log.Fatal("-duration must be in (0, 60s]")
	case cfg.rounds < 1 || cfg.rounds > maxRounds:
		log.Fatal("-rounds must be in [1, 10]")
	case cfg.mtu < minMTU || cfg.mtu > maxMTU:
		log.Fatalf("-mtu must be in [%d, %d]", minMTU, maxMTU)
	case cfg.parallel < 1 || cfg.parallel > maxParallel:
		log.Fatalf("-parallel must be in [1, %d]", maxParallel)
	}
	if os.Geteuid() != 0 {
		log.Fatal("needs root: it creates network namespaces, veth and TAP devices and nftables rules")
	}
	if err := netns.CheckPrivate(); err != nil {
		if os.Getenv(reexecEnv) != "" {
			log.Fatal(err)
		}
		os.Exit(outer(cfg))
	}
	os.Exit(inner(cfg))
}

// outer runs in the machine's own namespace and touches no device there:
// it installs missing tools, builds usernat (which may need the module
// proxy, out of reach from inside), and runs this program again under
// `unshare --net`.
func outer(cfg config) int {
	if err := ensureTools(cfg.install); err != nil {
		log.Print(err)
		return 1
	}
	args := os.Args[1:]
	env := []string{reexecEnv + "=1"}
	if cfg.usernat == "" {
		dir, err := os.MkdirTemp("", "usernat-bench-bin-")
		if err != nil {
			log.Print(err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin, err := compileUsernat(dir, cfg.tags)
		if err != nil {
			env = append(env, unavailEnv+"="+err.Error())
		} else {
			// The last -usernat on the command line wins.
			args = append(args, "-usernat", bin)
		}
	}
	cmd, err := netns.Reexec(args, env...)
	if err != nil {
		log.Print(err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		log.Print(err)
		return 1
	}
	// unshare execs this program, so the child is the inner run: pass it
	// SIGTERM, and outlive it on SIGINT (which the terminal sends to both)
	// to remove the build directory after it has cleaned up.
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigc:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ee.ExitCode() < 0 {
				return exitInterrupt
			}
			return ee.ExitCode()
		}
		log.Print(err)
		return 1
	}
	return 0
}

// inner runs inside the private namespace: it builds each setup, measures
// it and tears it down, round after round, then prints the report.
func inner(cfg config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	un, remove := usernatFrom(cfg)
	defer remove()
	nat, err := kernelNATTool()
	if err != nil {
		log.Print(err)
		return 1
	}
	rep := newReport(cfg, nat)
	if !cfg.json {
		rep.printHeader(os.Stdout)
	}
	for r := range cfg.rounds {
		progress("round %d of %d: kernel (docker0 bridge, %s DNAT and MASQUERADE)", r+1, cfg.rounds, nat)
		k := measureSetup(ctx, cfg, func() (*topology, error) { return buildKernel(nat, cfg.mtu) })
		var u result
		if un.reason != "" {
			u = result{Unavailable: un.reason}
		} else {
			progress("round %d of %d: usernat (%s)", r+1, cfg.rounds, un.bin)
			u = measureSetup(ctx, cfg, func() (*topology, error) { return buildUsernat(ctx, un.bin, cfg.mtu) })
			if u.Unavailable != "" {
				// It will not start better next round.
				un.reason = u.Unavailable
			}
		}
		if ctx.Err() != nil {
			log.Print("interrupted; cleaned up")
			return exitInterrupt
		}
		rep.add(k, u)
		if !cfg.json {
			rep.printRound(os.Stdout, r)
		}
	}
	if cfg.json {
		if err := rep.writeJSON(os.Stdout); err != nil {
			log.Print(err)
			return 1
		}
	} else if cfg.rounds > 1 {
		rep.printSummary(os.Stdout)
	}
	if rep.kernelFailed() {
		return 1
	}
	return 0
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

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/nat: "+format+"\n", args...)
}
