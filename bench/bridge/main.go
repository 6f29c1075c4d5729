// Command bridge measures a TCP stream between two network namespaces
// joined by the usernat bridge (each namespace's eth0 a TAP port of it) and,
// in the same run, by the kernel's own bridge joining two veth pairs, and
// prints both throughputs and their ratio.
//
// It must run as root. It re-executes itself under `unshare --net` and
// creates every namespace, device and address inside that private
// namespace, so no packet can leave it. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/internal/netns"
)

const reexecEnv = "USERNAT_BENCH_UNSHARED"

func main() {
	duration := flag.Duration("duration", 5*time.Second, "length of each TCP stream (at most 60s)")
	mtu := flag.Int("mtu", bridge.MaxMTU, "MTU of every device, both setups")
	rounds := flag.Int("rounds", 1, "rounds of kernel then usernat (at most 10)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the usernat runs to this file")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/bridge: ")
	if *duration <= 0 || *duration > time.Minute || *rounds < 1 || *rounds > 10 {
		log.Fatal("-duration must be in (0, 60s] and -rounds in [1, 10]")
	}
	if os.Geteuid() != 0 {
		log.Fatal("needs root: it creates network namespaces, TAP and veth devices")
	}
	if err := netns.EnsurePrivate(reexecEnv); err != nil {
		log.Fatal(err)
	}

	for r := range *rounds {
		k, err := run(kernelSetup, *mtu, *duration)
		if err != nil {
			log.Fatalf("kernel bridge: %v", err)
		}
		fmt.Printf("round %d: mtu %d, %v TCP stream\n", r+1, *mtu, *duration)
		fmt.Printf("  kernel bridge + veth pairs        %6.2f Gbit/s\n", k)
		prof := *cpuprofile
		if prof != "" && *rounds > 1 {
			prof = fmt.Sprintf("%s.%d", prof, r+1) // one profile per round, none overwritten
		}
		stop := startProfile(prof)
		for _, offload := range []bool{false, true} {
			u, err := run(usernatSetup(offload), *mtu, *duration)
			if err != nil {
				log.Fatalf("usernat bridge: %v", err)
			}
			fmt.Printf("  usernat bridge + TAP, offload %-5v %6.2f Gbit/s  ratio %.2f\n", offload, u, u/k)
		}
		stop()
	}
}

// startProfile starts CPU profiling to path, if not empty, and returns
// the function that stops it.
func startProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// Documentation addresses, used only inside the namespaces made here.
var (
	senderAddr   = netip.MustParsePrefix("192.0.2.1/24")
	receiverAddr = netip.MustParsePrefix("192.0.2.2/24")
)

// setup joins the eth0 of two fresh namespaces at L2 and returns a
// function that undoes it.
type setup func(sender, receiver *netns.NS, mtu int) (func(), error)

func run(s setup, mtu int, d time.Duration) (gbps float64, err error) {
	sender, err := netns.New()
	if err != nil {
		return 0, err
	}
	defer sender.Close()
	receiver, err := netns.New()
	if err != nil {
		return 0, err
	}
	defer receiver.Close()
	undo, err := s(sender, receiver, mtu)
	if err != nil {
		return 0, err
	}
	defer undo()
	for _, x := range []struct {
		ns *netns.NS
		p  netip.Prefix
	}{{sender, senderAddr}, {receiver, receiverAddr}} {
		if err := x.ns.AddAddr("eth0", x.p); err != nil {
			return 0, err
		}
	}
	return stream(sender, receiver, d)
}

// usernatSetup joins the namespaces with a usernat bridge whose ports are
// TAP devices, with checksum offload or without.
func usernatSetup(offload bool) setup {
	return func(sender, receiver *netns.NS, mtu int) (func(), error) {
		return usernat(sender, receiver, mtu, offload)
	}
}

func usernat(sender, receiver *netns.NS, mtu int, offload bool) (func(), error) {
	br, err := bridge.New(bridge.Config{Name: "usernat0"})
	if err != nil {
		return nil, err
	}
	for _, ns := range []*netns.NS{sender, receiver} {
		tap, err := bridge.OpenTAP(bridge.TAPConfig{Name: "eth0", NetNS: ns.Path(), MTU: mtu, Offload: offload})
		if err != nil {
			br.Close()
			return nil, err
		}
		if _, err := br.AddPort(tap, bridge.PortConfig{}); err != nil {
			br.Close()
			return nil, err
		}
	}
	return func() {
		for _, p := range br.Ports() {
			c := p.Counters()
			if d := c.RxDropped() + c.DropQueueFull + c.DropTxError; d > 0 {
				log.Printf("usernat port %s: %d frames dropped: %+v", p.Name(), d, c)
			}
		}
		br.Close()
	}, nil
}

func kernelSetup(sender, receiver *netns.NS, mtu int) (func(), error) {
	// The kernel bridge lives in a namespace of its own too.
	k, err := netns.New()
	if err != nil {
		return nil, err
	}
	steps := [][]string{{"link", "add", "br0", "type", "bridge"}}
	for i, ns := range []*netns.NS{sender, receiver} {
		veth := "veth" + strconv.Itoa(i)
		if err := k.AddVeth(veth, ns, "eth0"); err != nil {
			k.Close()
			return nil, err
		}
		if err := ns.SetLink("eth0", mtu); err != nil {
			k.Close()
			return nil, err
		}
		steps = append(steps,
			[]string{"link", "set", veth, "mtu", strconv.Itoa(mtu)},
			[]string{"link", "set", veth, "master", "br0"},
			[]string{"link", "set", veth, "up"})
	}
	steps = append(steps, []string{"link", "set", "br0", "up"})
	for _, args := range steps {
		if err := k.IP(args...); err != nil {
			k.Close()
			return nil, err
		}
	}
	// Closing the namespace's last handle destroys it, its bridge, and
	// with them the veth pairs.
	return func() { k.Close() }, nil
}

// stream sends TCP data from sender to receiver for d and returns the
// rate the receiver saw, in Gbit/s.
func stream(sender, receiver *netns.NS, d time.Duration) (float64, error) {
	dst := netip.AddrPortFrom(receiverAddr.Addr(), 5201)
	l, err := receiver.Listen("tcp", dst.String())
	if err != nil {
		return 0, err
	}
	defer l.Close()
	type result struct {
		n       int64
		elapsed time.Duration
		err     error
	}
	resc := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(d + 30*time.Second))
		buf := make([]byte, 256<<10)
		start := time.Now()
		var n int64
		for {
			m, err := c.Read(buf)
			n += int64(m)
			if err == io.EOF {
				resc <- result{n, time.Since(start), nil}
				return
			}
			if err != nil {
				resc <- result{err: err}
				return
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sender.Dial(ctx, "tcp", dst.String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	end := time.Now().Add(d)
	c.SetDeadline(end.Add(30 * time.Second))
	buf := make([]byte, 256<<10)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
	}
	c.(*net.TCPConn).CloseWrite()
	r := <-resc
	if r.err != nil {
		return 0, r.err
	}
	return float64(r.n) * 8 / r.elapsed.Seconds() / 1e9, nil
}
