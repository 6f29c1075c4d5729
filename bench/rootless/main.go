// Command rootless measures the userspace networks a rootless container
// runtime can use, side by side in one run and one topology: slirp4netns,
// pasta, and usernat's host-socket mode (`usernat gateway --uplink host`).
// Each gives an empty container namespace its interface and publishes
// port 8080/tcp and 5353/udp of the host to the container's 80 and 53.
// The same Go client measures all three: TCP throughput in through the
// published port and out to a server on the LAN, request/response
// latency and new connections per second through the published port, the
// CPU time the network process spends on each, and whether the container
// sees the client's own address. It prints each peer's numbers, usernat's
// ratios to the other two and the project's targets.
//
// It must run as root. It re-executes itself under
// `unshare --net --mount` and creates every namespace, device and socket
// inside that private network namespace, so no packet can leave it; the
// private mount namespace lets it put a world-usable /dev/net/tun where
// only its own processes see it, which pasta, run unprivileged, needs.
// See README.md.
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
	exitInterrupt = 130
)

type config struct {
	duration time.Duration
	rounds   int
	parallel int
	usernat  string
	tags     string
	json     bool
	install  bool
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of each measurement (at most 60s)")
	flag.IntVar(&cfg.rounds, "rounds", 1, "rounds of slirp4netns, pasta and usernat (at most 10)")
	flag.IntVar(&cfg.parallel, "parallel", 4, "concurrent clients opening connections in the connections/s measurement")
	flag.StringVar(&cfg.usernat, "usernat", "", "usernat binary (default: go build ./cmd/usernat into a temporary directory)")
	flag.StringVar(&cfg.tags, "tags", "", "build tags for building ./cmd/usernat (go build -tags)")
	flag.BoolVar(&cfg.json, "json", false, "print the results as JSON instead of tables")
	flag.BoolVar(&cfg.install, "install", true, "apt-get install the Debian packages of missing tools (slirp4netns, passt, iproute2, util-linux)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/rootless: ")
	switch {
	case flag.NArg() > 0:
		log.Fatalf("unexpected arguments %q", flag.Args())
	case cfg.duration <= 0 || cfg.duration > maxDuration:
		log.Fatal("-duration must be in (0, 60s]")
	case cfg.rounds < 1 || cfg.rounds > maxRounds:
		log.Fatal("-rounds must be in [1, 10]")
	case cfg.parallel < 1 || cfg.parallel > maxParallel:
		log.Fatalf("-parallel must be in [1, %d]", maxParallel)
	}
	if os.Geteuid() != 0 {
		log.Fatal("needs root: it creates network and mount namespaces, veth devices and a tun node")
	}
	if os.Getenv(reexecEnv) == "" {
		os.Exit(outer(cfg))
	}
	if err := checkPrivate(); err != nil {
		log.Fatal(err)
	}
	os.Exit(inner(cfg))
}

// outer runs in the machine's own namespaces and touches no device there:
// it installs missing tools, builds usernat (which may need the module
// proxy, out of reach from inside), and runs this program again under
// `unshare --net --mount`.
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
	self, err := os.Executable()
	if err != nil {
		log.Print(err)
		return 1
	}
	// netns.Reexec, with a mount namespace too: --mount makes every mount
	// private (unshare's default propagation), so the tmpfs over /dev/net
	// stays inside.
	cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--propagation", "private", "--", self}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
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

// checkPrivate refuses to run the inner part anywhere but in network and
// mount namespaces of its own: it mounts over /dev/net. The mount
// namespace must differ from the parent's (the outer run, or whoever set
// the environment mark by hand) and from PID 1's where that is readable.
func checkPrivate() error {
	if err := netns.CheckPrivate(); err != nil {
		return err
	}
	var self syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/mnt", &self); err != nil {
		return err
	}
	for _, pid := range []int{os.Getppid(), 1} {
		var other syscall.Stat_t
		path := fmt.Sprintf("/proc/%d/ns/mnt", pid)
		if err := syscall.Stat(path, &other); err != nil {
			if pid == 1 {
				continue // hidden from this process; the parent's was checked
			}
			return err
		}
		if self.Ino == other.Ino && self.Dev == other.Dev {
			return fmt.Errorf("running in the mount namespace of PID %d; run under `unshare --net --mount`", pid)
		}
	}
	return nil
}

// inner runs inside the private namespaces: it builds each peer's
// topology, measures it and tears it down, round after round, then prints
// the report.
func inner(cfg config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	undoTun, err := privateTun()
	if err != nil {
		log.Print(err)
		return 1
	}
	defer undoTun()
	un, remove := usernatFrom(cfg)
	defer remove()

	peers := []peer{slirp4netnsPeer(), pastaPeer(), usernatPeer(un)}
	rep := newReport(cfg, peers)
	if !cfg.json {
		rep.printHeader(os.Stdout)
	}
	for r := range cfg.rounds {
		results := make([]result, len(peers))
		for i := range peers {
			p := &peers[i]
			if p.unavailable != "" {
				results[i] = result{Unavailable: p.unavailable}
				continue
			}
			progress("round %d of %d: %s", r+1, cfg.rounds, p.desc)
			results[i] = measureSetup(ctx, cfg, p)
			if p.name == usernatName && results[i].Unavailable != "" {
				// It will not start better next round.
				p.unavailable = results[i].Unavailable
			}
			if ctx.Err() != nil {
				break
			}
		}
		if ctx.Err() != nil {
			log.Print("interrupted; cleaned up")
			return exitInterrupt
		}
		rep.add(results)
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
	if rep.referenceFailed() {
		return 1
	}
	return 0
}

// measureSetup builds a peer's topology, measures it and tears it down. A
// topology that cannot be built makes a result that says why.
func measureSetup(ctx context.Context, cfg config, p *peer) result {
	t, err := newTopology()
	if err != nil {
		return result{Unavailable: "topology: " + err.Error()}
	}
	defer t.Close()
	if err := p.start(ctx, t); err != nil {
		return result{Unavailable: err.Error()}
	}
	return measure(ctx, t, cfg)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/rootless: "+format+"\n", args...)
}
