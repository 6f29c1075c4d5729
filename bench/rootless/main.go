// Command rootless measures the userspace networks a rootless container
// runtime can use, side by side in one run and the same topology: slirp4netns,
// pasta, and usernat's host-socket mode (`usernat gateway --uplink host`).
// Each gives an empty container namespace its interface and publishes
// port 8080/tcp and 5353/udp of the host to the container's 80 and 53.
// The same Go client measures all three: TCP throughput in through the
// published port and out to a server on the LAN, request/response
// latency and new connections per second both ways (through the published
// port, and from the container to the LAN server), UDP request/response
// latency both ways (through the published UDP port), the CPU time the
// network process spends on each, and whether the container sees the
// client's own address. It prints each peer's numbers, usernat's
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
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/usernat/usernat/internal/benchkit"
	"github.com/usernat/usernat/internal/netns"
)

// config is the command line: only the flags every bench program takes.
type config struct {
	benchkit.Flags
	Peers   map[string]bool // the peers measured; the others read "not selected"
	Metrics map[string]bool // the measurements made: metricNames'
	// Interleave measures the peers metric by metric, each peer in a
	// topology of its own for each, rather than every metric of one peer
	// in one topology before the next peer's.
	Interleave bool
}

// notSelected is the Unavailable reason of a peer -peers left out.
const notSelected = "not selected (-peers)"

// metricNames are the measurements -metrics selects from, in order.
var metricNames = []string{"in", "out", "latency", "conns", "latency-out", "conns-out", "latency-udp", "latency-udp-out"}

// parseSet parses a comma-separated list of names from valid.
func parseSet(flagName, list string, valid []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(valid, n) {
			return nil, fmt.Errorf("-%s: %q is not one of %s", flagName, n, strings.Join(valid, ", "))
		}
		set[n] = true
	}
	return set, nil
}

func main() {
	var cfg config
	cfg.Register(flag.CommandLine, "slirp4netns, pasta and usernat", "slirp4netns, passt, iproute2, util-linux")
	peerNames := []string{slirpName, pastaName, usernatName}
	peerList := flag.String("peers", strings.Join(peerNames, ","), "the peers to measure, comma-separated")
	metricList := flag.String("metrics", strings.Join(metricNames, ","), "the measurements to make, comma-separated: "+strings.Join(metricNames, ", "))
	flag.BoolVar(&cfg.Interleave, "interleave", true, "measure the peers metric by metric, each in a topology of its own, so that every peer's measurement of a metric is made within seconds of the others'; false measures all of one peer's metrics, in one topology, before the next peer's")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/rootless: ")
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments %q", flag.Args())
	}
	if err := cfg.Check(); err != nil {
		log.Fatal(err)
	}
	var err error
	if cfg.Peers, err = parseSet("peers", *peerList, peerNames); err != nil {
		log.Fatal(err)
	}
	if cfg.Metrics, err = parseSet("metrics", *metricList, metricNames); err != nil {
		log.Fatal(err)
	}
	if os.Geteuid() != 0 {
		log.Fatal("needs root: it creates network and mount namespaces, veth devices and a tun node")
	}
	if os.Getenv(benchkit.ReexecEnv) == "" {
		// The first run: tools, a usernat build, then this program
		// again under `unshare --net --mount`.
		os.Exit(benchkit.Outer(cfg.Flags, ensureTools, reexec))
	}
	if err := checkPrivate(); err != nil {
		log.Fatal(err)
	}
	os.Exit(inner(cfg))
}

// reexec is netns.Reexec with a mount namespace too: --mount makes every
// mount private (unshare's default propagation), so the tmpfs over
// /dev/net stays inside.
func reexec(args, env []string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--propagation", "private", "--", self}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
	return cmd, nil
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
	un, remove := benchkit.UsernatFrom(cfg.Usernat, cfg.Tags)
	defer remove()

	peers := []peer{slirp4netnsPeer(), pastaPeer(), usernatPeer(un)}
	for i := range peers {
		if !cfg.Peers[peers[i].name] {
			peers[i].unavailable = notSelected
		}
	}
	rep := newReport(cfg, peers)
	groups := metricGroups(cfg)
	return benchkit.RunRounds(ctx, cfg.Flags, rep, func(r int) {
		results := make([]result, len(peers))
		for g, metrics := range groups {
			c := cfg
			c.Metrics = metrics
			// Each round, and each metric of it, starts with the next
			// peer, so a machine that grows busier or quieter
			// meanwhile favours none.
			for k := range peers {
				i := (k + r + g) % len(peers)
				p := &peers[i]
				if p.unavailable != "" {
					results[i] = result{Unavailable: p.unavailable}
					continue
				}
				if results[i].Unavailable != "" {
					continue // unavailable for the round (see result.merge)
				}
				progress("round %d of %d: %s (%s)", r+1, cfg.Rounds, p.desc, setString(metrics))
				results[i] = results[i].merge(measureSetup(ctx, c, p))
				if p.name == usernatName && results[i].Unavailable != "" {
					// It will not start better next time.
					p.unavailable = results[i].Unavailable
				}
				if ctx.Err() != nil {
					return
				}
			}
		}
		rep.add(results)
	})
}

// metricGroups are the sets of metrics measured in one topology each, in
// order: one per metric with -interleave, else one of them all. The
// machine this runs on may grow faster or slower from one minute to the
// next (a virtual machine's host shares its CPUs); measured a metric at a
// time, every peer's measurements of it are seconds apart, not the
// minute that all of a peer's metrics take, and a slow spell falls on
// one metric of each peer rather than on every metric of one.
func metricGroups(cfg config) []map[string]bool {
	if !cfg.Interleave {
		return []map[string]bool{cfg.Metrics}
	}
	var groups []map[string]bool
	for _, m := range metricNames {
		if cfg.Metrics[m] {
			groups = append(groups, map[string]bool{m: true})
		}
	}
	return groups
}

// setString lists the names in set, in metricNames' order.
func setString(set map[string]bool) string {
	var names []string
	for _, m := range metricNames {
		if set[m] {
			names = append(names, m)
		}
	}
	return strings.Join(names, ",")
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

// progress says what the run is doing, on standard error after the
// program's name.
func progress(format string, args ...any) { log.Printf(format, args...) }
