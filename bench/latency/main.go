// Command latency measures the floor under the latency of a userspace
// network: the round-trip time of a 1-byte TCP ping-pong between two
// network namespaces joined at layer 2 by a veth pair (the kernel), and by
// two TAP devices whose frames a userspace forwarder copies — the
// simplest one possible (a loop per direction) and the usernat bridge —
// each run in this process, next to the client and server, and in a
// process of its own, as a network daemon runs. It prints the median and
// 99th percentile of each and their ratio to the veth pair's.
//
// It must run as root. It re-executes itself under `unshare --net` and
// creates every namespace, device and address inside that private
// namespace, so no packet can leave it. See bench/README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/internal/netns"
)

const reexecEnv = "USERNAT_BENCH_UNSHARED"

func main() {
	count := flag.Int("count", 20000, "round trips per measurement (100 to 1000000), after 200 to warm up")
	rounds := flag.Int("rounds", 1, "rounds of every setup (at most 10)")
	serve := flag.String("serve", "", "internal: run forwarder KIND between the TAPs named eth0 in the two namespace paths given as arguments")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/latency: ")
	if *serve != "" {
		log.Fatal(forwarder(*serve, flag.Arg(0), flag.Arg(1)))
	}
	if *count < 100 || *count > 1000000 || *rounds < 1 || *rounds > 10 {
		log.Fatal("-count must be in [100, 1000000] and -rounds in [1, 10]")
	}
	if os.Geteuid() != 0 {
		log.Fatal("needs root: it creates network namespaces, TAP and veth devices")
	}
	if err := netns.EnsurePrivate(reexecEnv); err != nil {
		log.Fatal(err)
	}
	setups := []struct {
		name string
		join func(a, b *netns.NS) (func(), error)
	}{
		{"veth pair (kernel)", veth},
		{"copy loop, same process", inProcess("copy")},
		{"copy loop, own process", ownProcess("copy")},
		{"usernat bridge, same process", inProcess("bridge")},
		{"usernat bridge, own process", ownProcess("bridge")},
	}
	for r := range *rounds {
		fmt.Printf("round %d: %d round trips of 1 byte over TCP, MTU 1500\n", r+1, *count)
		fmt.Printf("  %-30s %10s %10s %8s\n", "setup", "p50", "p99", "p50/veth")
		var base time.Duration
		for i, s := range setups {
			p50, p99, err := measure(s.join, *count)
			if err != nil {
				log.Fatalf("%s: %v", s.name, err)
			}
			if i == 0 {
				base = p50
			}
			fmt.Printf("  %-30s %10v %10v %8.2f\n", s.name, p50.Round(100*time.Nanosecond), p99.Round(100*time.Nanosecond), float64(p50)/float64(base))
		}
	}
}

// measure joins two fresh namespaces with join, gives them documentation
// addresses, and times count round trips from one to the other.
func measure(join func(a, b *netns.NS) (func(), error), count int) (p50, p99 time.Duration, err error) {
	a, err := netns.New()
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	b, err := netns.New()
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	undo, err := join(a, b)
	if err != nil {
		return 0, 0, err
	}
	defer undo()
	for _, x := range []struct {
		ns   *netns.NS
		addr string
	}{{a, "192.0.2.1/24"}, {b, "192.0.2.2/24"}} {
		if err := x.ns.IP("addr", "add", x.addr, "dev", "eth0"); err != nil {
			return 0, 0, err
		}
	}
	return pingPong(a, b, "192.0.2.2:7000", count)
}

// pingPong times count round trips of one byte from a client in a to an
// echo server in b.
func pingPong(a, b *netns.NS, addr string, count int) (p50, p99 time.Duration, err error) {
	l, err := b.Listen("tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 1)
	rtts := make([]time.Duration, 0, count)
	for i := range count + 200 {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return 0, 0, err
		}
		if _, err := c.Read(buf); err != nil {
			return 0, 0, err
		}
		if i >= 200 {
			rtts = append(rtts, time.Since(start))
		}
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], rtts[len(rtts)*99/100], nil
}

func veth(a, b *netns.NS) (func(), error) {
	if err := a.AddVeth("eth0", b, "eth0"); err != nil {
		return nil, err
	}
	for _, ns := range []*netns.NS{a, b} {
		if err := ns.SetLink("eth0", 1500); err != nil {
			return nil, err
		}
	}
	return func() {}, nil
}

// inProcess joins the namespaces with forwarder kind in this process.
func inProcess(kind string) func(a, b *netns.NS) (func(), error) {
	return func(a, b *netns.NS) (func(), error) {
		return start(kind, a.Path(), b.Path())
	}
}

// ownProcess joins the namespaces with forwarder kind in a child process,
// and waits for it to say it is ready.
func ownProcess(kind string) func(a, b *netns.NS) (func(), error) {
	return func(a, b *netns.NS) (func(), error) {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(self, "-serve", kind, a.Path(), b.Path())
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		stop := func() { cmd.Process.Kill(); cmd.Wait() }
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			stop()
			return nil, fmt.Errorf("forwarder process: %q, %v", line, err)
		}
		return stop, nil
	}
}

// forwarder runs forwarder kind between new TAP devices named eth0 in the
// namespaces at paths p1 and p2, and serves until killed; it returns only
// the error that kept it from starting.
func forwarder(kind, p1, p2 string) error {
	if _, err := start(kind, p1, p2); err != nil {
		return err
	}
	fmt.Println("ready")
	select {}
}

// start makes the TAP devices and the forwarder between them: "copy" is a
// goroutine per direction reading a frame and writing it to the other
// device; "bridge" is a usernat bridge with both as ports.
func start(kind, p1, p2 string) (func(), error) {
	var taps []*bridge.TAP
	for _, p := range []string{p1, p2} {
		t, err := bridge.OpenTAP(bridge.TAPConfig{Name: "eth0", NetNS: p, MTU: 1500})
		if err != nil {
			for _, t := range taps {
				t.Close()
			}
			return nil, err
		}
		taps = append(taps, t)
	}
	switch kind {
	case "copy":
		go copyFrames(taps[0], taps[1])
		go copyFrames(taps[1], taps[0])
		return func() { taps[0].Close(); taps[1].Close() }, nil
	case "bridge":
		br, err := bridge.New(bridge.Config{})
		if err != nil {
			return nil, err
		}
		for _, t := range taps {
			if _, err := br.AddPort(t, bridge.PortConfig{}); err != nil {
				br.Close()
				return nil, err
			}
		}
		return func() { br.Close() }, nil
	}
	return nil, fmt.Errorf("unknown forwarder %q", kind)
}

func copyFrames(from, to *bridge.TAP) {
	bufs, sizes, out := [][]byte{make([]byte, 2048)}, []int{0}, [][]byte{nil}
	for {
		n, err := from.ReadFrames(bufs, sizes)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Print(err)
			}
			return
		}
		if n == 1 {
			out[0] = bufs[0][:sizes[0]]
			to.WriteFrames(out)
		}
	}
}
