package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/usernat/usernat/internal/benchkit"
)

// The metrics, in the order they are measured and printed. Each cpu key
// is the network process's CPU time per unit moved during the metric
// before it, and its total, in CPU-seconds, is under the Total key.
const (
	inbound         = "inbound_gbit_s"
	cpuIn           = "inbound_cpu_s_per_gb"
	cpuInTotal      = "inbound_cpu_s"
	outbound        = "outbound_gbit_s"
	cpuOut          = "outbound_cpu_s_per_gb"
	cpuOutTotal     = "outbound_cpu_s"
	latencyP50      = "latency_p50_us"
	latencyP99      = "latency_p99_us"
	cpuLatency      = "latency_cpu_s_per_1000_round_trips"
	cpuLatencyTotal = "latency_cpu_s"
	connsPerS       = "conns_per_s"
	cpuConns        = "conns_cpu_s_per_1000_conns"
	cpuConnsTotal   = "conns_cpu_s"
	latencyOutP50   = "latency_out_p50_us"
	latencyOutP99   = "latency_out_p99_us"
	cpuLatencyOut   = "latency_out_cpu_s_per_1000_round_trips"
	cpuLatencyOutT  = "latency_out_cpu_s"
	connsOutPerS    = "conns_out_per_s"
	cpuConnsOut     = "conns_out_cpu_s_per_1000_conns"
	cpuConnsOutT    = "conns_out_cpu_s"
	udpLatencyP50   = "udp_latency_p50_us"
	udpLatencyP99   = "udp_latency_p99_us"
	cpuUDPLatency   = "udp_latency_cpu_s_per_1000_round_trips"
	cpuUDPLatencyT  = "udp_latency_cpu_s"
	udpLatOutP50    = "udp_latency_out_p50_us"
	udpLatOutP99    = "udp_latency_out_p99_us"
	cpuUDPLatOut    = "udp_latency_out_cpu_s_per_1000_round_trips"
	cpuUDPLatOutT   = "udp_latency_out_cpu_s"
	keptTCP         = "client_address_kept_tcp"
	keptUDP         = "client_address_kept_udp"

	outSource = "outbound_source" // a Seen key: where the LAN server saw the container's connection come from
)

// result is one peer's measurements in one round: a value or an error
// for each metric, or why the peer could not be measured at all. Seen
// holds the client address the container's servers saw (keys keptTCP,
// keptUDP), and the container's address the LAN server saw (outSource).
type result struct {
	Values      map[string]float64 `json:"values,omitempty"`
	Errors      map[string]string  `json:"errors,omitempty"`
	Seen        map[string]string  `json:"seen,omitempty"`
	Unavailable string             `json:"unavailable,omitempty"`
}

// merge adds to r (a peer's measurements in a round, so far) what
// another topology of the same peer measured in the same round, o (other
// metrics, with -interleave): its values and errors, and what its probes
// saw, a client's address kept only if every probe found it kept. An
// error of o's for a metric r measured is dropped: a probe that failed
// names every metric it would have stopped, measured there or not. A
// peer that could not be measured once is not measured in the round.
func (r result) merge(o result) result {
	switch {
	case r.Unavailable != "":
		return r
	case o.Unavailable != "":
		return result{Unavailable: o.Unavailable}
	case r.Values == nil:
		return o
	}
	for k, v := range o.Values {
		if k == keptTCP || k == keptUDP {
			if old, ok := r.Values[k]; ok && old <= v {
				continue
			}
			r.Seen[k] = o.Seen[k]
		}
		r.Values[k] = v
	}
	for k, s := range o.Seen {
		if _, ok := r.Seen[k]; !ok {
			r.Seen[k] = s
		}
	}
	for k, e := range o.Errors {
		if _, ok := r.Errors[k]; !ok {
			r.Errors[k] = e
		}
	}
	for k := range r.Errors {
		if _, ok := r.Values[k]; ok {
			delete(r.Errors, k)
		}
	}
	return r
}

// metricOf is the -metrics name of the measurement that makes each key;
// the client-address keys, which every topology's probes make, have none.
var metricOf = map[string]string{
	inbound: "in", cpuIn: "in", cpuInTotal: "in",
	outbound: "out", cpuOut: "out", cpuOutTotal: "out",
	latencyP50: "latency", latencyP99: "latency", cpuLatency: "latency", cpuLatencyTotal: "latency",
	connsPerS: "conns", cpuConns: "conns", cpuConnsTotal: "conns",
	latencyOutP50: "latency-out", latencyOutP99: "latency-out", cpuLatencyOut: "latency-out", cpuLatencyOutT: "latency-out",
	connsOutPerS: "conns-out", cpuConnsOut: "conns-out", cpuConnsOutT: "conns-out",
	udpLatencyP50: "latency-udp", udpLatencyP99: "latency-udp", cpuUDPLatency: "latency-udp", cpuUDPLatencyT: "latency-udp",
	udpLatOutP50: "latency-udp-out", udpLatOutP99: "latency-udp-out", cpuUDPLatOut: "latency-udp-out", cpuUDPLatOutT: "latency-udp-out",
}

// selectedKeys are those of keys that the measurements of selected make,
// and the client-address keys: a probe's failure is an error of the
// metrics this topology was to measure, not of those another topology of
// the round measures (with -interleave), whose own errors it would hide
// when merged first.
func selectedKeys(selected map[string]bool, keys ...string) []string {
	var out []string
	for _, k := range keys {
		if m, ok := metricOf[k]; !ok || selected[m] {
			out = append(out, k)
		}
	}
	return out
}

// measure runs every measurement against a topology whose network process
// is ready, with servers in the container (TCP 80 and UDP 53, published
// as 8080 and 5353) and in the client (192.168.2.104:5201, TCP and UDP,
// which the container connects and sends out to).
func measure(ctx context.Context, t *topology, cfg config) result {
	limit := cfg.Duration + benchkit.IOGrace
	if err := benchkit.Sysctl(t.container, "ipv4/ip_local_port_range", portRange); err != nil {
		return result{Unavailable: "container: " + err.Error()}
	}
	ctr, err := benchkit.Serve(t.container, fmt.Sprintf(":%d", containerPort), limit)
	if err != nil {
		return result{Unavailable: "server in the container: " + err.Error()}
	}
	defer ctr.Close()
	ctrUDP, err := benchkit.ServeUDP(t.container, fmt.Sprintf(":%d", containerUDPPort))
	if err != nil {
		return result{Unavailable: "UDP server in the container: " + err.Error()}
	}
	defer ctrUDP.Close()
	lan, err := benchkit.Serve(t.client, lanServer.String(), limit)
	if err != nil {
		return result{Unavailable: "server in the client: " + err.Error()}
	}
	defer lan.Close()
	lanUDP, err := benchkit.ServeUDP(t.client, lanServer.String())
	if err != nil {
		return result{Unavailable: "UDP server in the client: " + err.Error()}
	}
	defer lanUDP.Close()

	r := result{Values: make(map[string]float64), Errors: make(map[string]string), Seen: make(map[string]string)}
	fail := func(err error, keys ...string) {
		if aerr := t.alive(); aerr != nil {
			err = fmt.Errorf("%w; %v", err, aerr)
		}
		for _, k := range keys {
			r.Errors[k] = err.Error()
		}
	}
	kept := func(key string, seen netip.Addr) {
		r.Seen[key] = seen.String()
		r.Values[key] = 0
		if seen == clientAddr.Addr() {
			r.Values[key] = 1
		}
	}
	// The probes warm the paths up, and show which addresses they keep.
	seen, inErr := probe(ctx, t.client, "tcp", published)
	if inErr != nil {
		fail(fmt.Errorf("published port: %w", inErr), selectedKeys(cfg.Metrics, inbound, cpuIn, latencyP50, latencyP99, cpuLatency, connsPerS, cpuConns, keptTCP)...)
	} else {
		kept(keptTCP, seen)
	}
	seen, inUDPErr := probe(ctx, t.client, "udp", publishedUDP)
	if inUDPErr != nil {
		fail(fmt.Errorf("published UDP port: %w", inUDPErr), selectedKeys(cfg.Metrics, udpLatencyP50, udpLatencyP99, cpuUDPLatency, keptUDP)...)
	} else {
		kept(keptUDP, seen)
	}
	seen, outErr := probe(ctx, t.container, "tcp", lanServer)
	if outErr != nil {
		fail(fmt.Errorf("outbound: %w", outErr), selectedKeys(cfg.Metrics, outbound, cpuOut, latencyOutP50, latencyOutP99, cpuLatencyOut, connsOutPerS, cpuConnsOut, udpLatOutP50, udpLatOutP99, cpuUDPLatOut)...)
	} else {
		r.Seen[outSource] = seen.String()
	}

	// cpu runs f and records the network process's CPU time during it,
	// per unit (what f returns) under key and in all under total.
	cpu := func(key, total string, f func() (units float64, err error)) {
		settle(ctx, t.proc)
		before, berr := t.proc.CPUTime()
		units, err := f()
		if err != nil {
			return
		}
		after, aerr := t.proc.CPUTime()
		if berr != nil || aerr != nil || units <= 0 {
			fail(fmt.Errorf("CPU time of %s (pid %d): %v %v", t.proc.Name(), t.proc.Pid(), berr, aerr), key)
			return
		}
		used := (after - before).Seconds()
		r.Values[key] = used / units
		r.Values[total] = used
	}

	d := cfg.Duration
	if inErr == nil && cfg.Metrics["in"] && ctx.Err() == nil {
		progress("  TCP in through %s for %v", published, d)
		cpu(cpuIn, cpuInTotal, func() (float64, error) {
			v, n, err := benchkit.Stream(ctx, t.client, published, d)
			if err != nil {
				fail(err, inbound, cpuIn)
				return 0, err
			}
			r.Values[inbound] = v
			return float64(n) / 1e9, nil
		})
	}
	if outErr == nil && cfg.Metrics["out"] && ctx.Err() == nil {
		progress("  TCP out to %s for %v", lanServer, d)
		cpu(cpuOut, cpuOutTotal, func() (float64, error) {
			v, n, err := benchkit.Stream(ctx, t.container, lanServer, d)
			if err != nil {
				fail(err, outbound, cpuOut)
				return 0, err
			}
			r.Values[outbound] = v
			return float64(n) / 1e9, nil
		})
	}
	// The ping-pong and the connections, through the published port
	// (in) and from the container to the LAN server (out); the
	// ping-pong over TCP (benchkit.PingPong) or UDP (PingPongUDP).
	pingPong := func(pp func(context.Context, benchkit.Place, netip.AddrPort, time.Duration) (time.Duration, time.Duration, int, error),
		from benchkit.Place, dst netip.AddrPort, p50Key, p99Key, cpuKey, totalKey string) {
		progress("  1-byte ping-pong to %s for %v", dst, d)
		cpu(cpuKey, totalKey, func() (float64, error) {
			p50, p99, n, err := pp(ctx, from, dst, d)
			if err != nil {
				fail(err, p50Key, p99Key, cpuKey)
				return 0, err
			}
			r.Values[p50Key] = benchkit.Micros(p50)
			r.Values[p99Key] = benchkit.Micros(p99)
			return float64(n+benchkit.WarmupPings) / 1000, nil
		})
	}
	conns := func(from benchkit.Place, dst netip.AddrPort, key, cpuKey, totalKey string) {
		progress("  new connections to %s for %v, %d clients", dst, d, cfg.Parallel)
		cpu(cpuKey, totalKey, func() (float64, error) {
			v, n, err := benchkit.ConnRate(ctx, from, dst, d, cfg.Parallel)
			if err != nil {
				fail(err, key, cpuKey)
				return 0, err
			}
			r.Values[key] = v
			return float64(n) / 1000, nil
		})
	}
	if inErr == nil && cfg.Metrics["latency"] && ctx.Err() == nil {
		pingPong(benchkit.PingPong, t.client, published, latencyP50, latencyP99, cpuLatency, cpuLatencyTotal)
	}
	if inErr == nil && cfg.Metrics["conns"] && ctx.Err() == nil {
		conns(t.client, published, connsPerS, cpuConns, cpuConnsTotal)
	}
	if outErr == nil && cfg.Metrics["latency-out"] && ctx.Err() == nil {
		pingPong(benchkit.PingPong, t.container, lanServer, latencyOutP50, latencyOutP99, cpuLatencyOut, cpuLatencyOutT)
	}
	if outErr == nil && cfg.Metrics["conns-out"] && ctx.Err() == nil {
		conns(t.container, lanServer, connsOutPerS, cpuConnsOut, cpuConnsOutT)
	}
	if inUDPErr == nil && cfg.Metrics["latency-udp"] && ctx.Err() == nil {
		pingPong(benchkit.PingPongUDP, t.client, publishedUDP, udpLatencyP50, udpLatencyP99, cpuUDPLatency, cpuUDPLatencyT)
	}
	if outErr == nil && cfg.Metrics["latency-udp-out"] && ctx.Err() == nil {
		pingPong(benchkit.PingPongUDP, t.container, lanServer, udpLatOutP50, udpLatOutP99, cpuUDPLatOut, cpuUDPLatOutT)
	}
	return r
}

// settle waits, up to a second, until the network process is idle (under
// 2 ms of CPU in 100 ms): what the last measurement left it doing
// (closing flows, expiring entries) is not charged to the next.
func settle(ctx context.Context, p *benchkit.Proc) {
	for range 10 {
		a, err := p.CPUTime()
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if b, err := p.CPUTime(); err != nil || b-a < 2*time.Millisecond {
			return
		}
	}
}
