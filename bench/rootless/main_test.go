package main

import (
	"maps"
	"slices"
	"testing"
)

// With -interleave each selected metric is measured in a topology of its
// own, in metricNames' order; without it, all in one.
func TestMetricGroups(t *testing.T) {
	sel := map[string]bool{"conns": true, "in": true, "latency-out": true}
	var got []string
	for _, g := range metricGroups(config{Metrics: sel, Interleave: true}) {
		got = append(got, setString(g))
	}
	if want := []string{"in", "conns", "latency-out"}; !slices.Equal(got, want) {
		t.Errorf("interleaved: groups %q, want %q", got, want)
	}
	if g := metricGroups(config{Metrics: sel}); len(g) != 1 || !maps.Equal(g[0], sel) {
		t.Errorf("not interleaved: groups %v, want the one set %v", g, sel)
	}
}

// A peer's round, measured a metric at a time, adds up: every value, the
// errors of metrics not measured, a client address kept only if every
// probe found it kept, and a peer unavailable once unavailable for the
// round.
func TestResultMerge(t *testing.T) {
	measured := func(key string, v float64, kept float64, seen string) result {
		return result{
			Values: map[string]float64{key: v, keptTCP: kept},
			Errors: map[string]string{},
			Seen:   map[string]string{keptTCP: seen, outSource: "10.0.0.1"},
		}
	}
	var r result
	r = r.merge(measured(inbound, 9, 1, "192.168.2.104"))
	// A probe that failed names every metric, the one measured before too.
	failed := measured(connsPerS, 4000, 0, "10.0.2.2")
	delete(failed.Values, connsPerS)
	failed.Errors[connsPerS] = "refused"
	failed.Errors[inbound] = "refused"
	r = r.merge(failed)
	r = r.merge(measured(latencyP50, 90, 1, "192.168.2.104"))
	if r.Values[inbound] != 9 || r.Values[latencyP50] != 90 {
		t.Errorf("values %v, want TCP in 9 and p50 90", r.Values)
	}
	if _, ok := r.Errors[inbound]; ok {
		t.Error("TCP in, measured, carries another topology's probe error")
	}
	if r.Errors[connsPerS] != "refused" {
		t.Errorf("connections, not measured: errors %v, want its error", r.Errors)
	}
	if r.Values[keptTCP] != 0 || r.Seen[keptTCP] != "10.0.2.2" {
		t.Errorf("client address kept %v, seen %q; want not kept, as one probe saw 10.0.2.2", r.Values[keptTCP], r.Seen[keptTCP])
	}
	if got := r.merge(result{Unavailable: "pasta: exited"}); got.Unavailable == "" || got.Values != nil {
		t.Errorf("a topology that could not be measured: %+v, want the round unavailable", got)
	}
	if got := (result{Unavailable: "no pasta"}).merge(measured(inbound, 1, 1, "x")); got.Unavailable != "no pasta" {
		t.Errorf("merged into an unavailable round: %+v, want it unavailable", got)
	}
}

// A probe that fails names only the metrics its topology was to measure
// (and the client address): merged first, an error it named for another
// metric would hide the error of the topology that measured that one.
func TestProbeErrorsOfSelectedMetrics(t *testing.T) {
	for _, m := range metrics {
		keys := []string{m.key}
		if m.total != "" {
			keys = append(keys, m.total)
		}
		for _, k := range keys {
			name, ok := metricOf[k]
			if m.kind != keptKind && (!ok || !slices.Contains(metricNames, name)) {
				t.Errorf("key %s: no measurement of -metrics makes it (%q)", k, name)
			}
		}
	}
	in := map[string]bool{"in": true}
	got := selectedKeys(in, inbound, cpuIn, latencyP50, connsPerS, keptTCP)
	if want := []string{inbound, cpuIn, keptTCP}; !slices.Equal(got, want) {
		t.Errorf("selected keys %q, want %q", got, want)
	}
	// The "in" topology's probe failed; the latency topology's
	// ping-pong failed on its own.
	var r result
	inFailed := result{Values: map[string]float64{}, Errors: map[string]string{}, Seen: map[string]string{}}
	for _, k := range selectedKeys(in, inbound, cpuIn, latencyP50, latencyP99, cpuLatency, keptTCP) {
		inFailed.Errors[k] = "published port: refused"
	}
	r = r.merge(inFailed)
	r = r.merge(result{
		Values: map[string]float64{keptTCP: 1},
		Errors: map[string]string{latencyP50: "timed out", latencyP99: "timed out", cpuLatency: "timed out"},
		Seen:   map[string]string{keptTCP: "192.168.2.104"},
	})
	if r.Errors[latencyP50] != "timed out" || r.Errors[inbound] != "published port: refused" {
		t.Errorf("errors %v, want each metric's from the topology that measured it", r.Errors)
	}
}
