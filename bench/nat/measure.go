package main

import (
	"context"
	"fmt"

	"github.com/usernat/usernat/internal/benchkit"
)

// The metrics, in the order they are measured and printed.
const (
	inbound    = "inbound_gbit_s"
	outbound   = "outbound_gbit_s"
	latencyP50 = "latency_p50_us"
	latencyP99 = "latency_p99_us"
	connsPerS  = "conns_per_s"
)

// result is one setup's measurements in one round: a value or an error
// for each metric, or why the setup could not be measured at all.
type result struct {
	Values      map[string]float64 `json:"values,omitempty"`
	Errors      map[string]string  `json:"errors,omitempty"`
	Unavailable string             `json:"unavailable,omitempty"`
}

// measure runs every measurement against a built topology, with servers
// in the container (port 80, published as 8080) and in the client
// (192.168.2.104:5201, which the container reaches through masquerade).
func measure(ctx context.Context, t *topology, cfg config) result {
	limit := cfg.Duration + benchkit.IOGrace
	ctr, err := benchkit.Serve(t.container, fmt.Sprintf(":%d", containerPort), limit)
	if err != nil {
		return result{Unavailable: "server in the container: " + err.Error()}
	}
	defer ctr.Close()
	lan, err := benchkit.Serve(t.client, lanServer.String(), limit)
	if err != nil {
		return result{Unavailable: "server in the client: " + err.Error()}
	}
	defer lan.Close()

	r := result{Values: make(map[string]float64), Errors: make(map[string]string)}
	fail := func(err error, keys ...string) {
		if t.alive != nil {
			if aerr := t.alive(); aerr != nil {
				err = fmt.Errorf("%w; %v", err, aerr)
			}
		}
		for _, k := range keys {
			r.Errors[k] = err.Error()
		}
	}
	// DNAT keeps the client's address; masquerade hides the container's.
	inErr := probe(ctx, t.client, published, clientAddr.Addr())
	if inErr != nil {
		fail(fmt.Errorf("published port: %w", inErr), inbound, latencyP50, latencyP99, connsPerS)
	}
	outErr := probe(ctx, t.container, lanServer, hostAddr.Addr())
	if outErr != nil {
		fail(fmt.Errorf("masquerade: %w", outErr), outbound)
	}

	d := cfg.Duration
	if inErr == nil && ctx.Err() == nil {
		progress("  TCP in through %s for %v", published, d)
		if v, _, err := benchkit.Stream(ctx, t.client, published, d); err != nil {
			fail(err, inbound)
		} else {
			r.Values[inbound] = v
		}
	}
	if outErr == nil && ctx.Err() == nil {
		progress("  TCP out to %s for %v", lanServer, d)
		if v, _, err := benchkit.Stream(ctx, t.container, lanServer, d); err != nil {
			fail(err, outbound)
		} else {
			r.Values[outbound] = v
		}
	}
	if inErr == nil && ctx.Err() == nil {
		progress("  1-byte ping-pong through %s for %v", published, d)
		if p50, p99, _, err := benchkit.PingPong(ctx, t.client, published, d); err != nil {
			fail(err, latencyP50, latencyP99)
		} else {
			r.Values[latencyP50] = benchkit.Micros(p50)
			r.Values[latencyP99] = benchkit.Micros(p99)
		}
	}
	if inErr == nil && ctx.Err() == nil {
		progress("  new connections through %s for %v, %d clients", published, d, cfg.Parallel)
		if v, _, err := benchkit.ConnRate(ctx, t.client, published, d, cfg.Parallel); err != nil {
			fail(err, connsPerS)
		} else {
			r.Values[connsPerS] = v
		}
	}
	return r
}
