package main

import (
	"fmt"
	"strings"
	"testing"
)

// The summary says how many rounds a median comes from when some failed,
// and gives no verdict on a target against both references when one was
// not measured: the median of one surviving round is not the median of
// three, and a target against both is not met against one.
func TestSummaryPartial(t *testing.T) {
	rep := newReport(config{}, []peer{{name: slirpName}, {name: pastaName}, {name: usernatName}})
	for r := range 3 {
		res := []result{
			{Values: map[string]float64{inbound: 6, outbound: 3}},
			{Values: map[string]float64{inbound: 10}}, // pasta: TCP out fails every round
			{Values: map[string]float64{inbound: 20, outbound: 13}},
		}
		if r < 2 {
			res[0].Values[connsPerS] = 6000 // slirp4netns: conns fail in the last round
			res[1].Values[connsPerS] = 8000
			res[2].Values[connsPerS] = 7000 + float64(r)
		}
		rep.add(res)
	}
	row := func(key string) row {
		for i, m := range metrics {
			if m.key == key {
				return rep.Summary[i]
			}
		}
		t.Fatalf("no row %s", key)
		return row{}
	}
	if in := row(inbound); in.Rounds != nil || in.Met == nil || !*in.Met {
		t.Errorf("TCP in, measured every round: rounds %v, met %v; want no count, met", in.Rounds, in.Met)
	}
	if out := row(outbound); out.Met != nil {
		t.Errorf("TCP out, pasta never measured: met %v, want no verdict", *out.Met)
	}
	c := row(connsPerS)
	if c.Rounds[slirpName] != 2 || c.Rounds[usernatName] != 2 || c.Rounds[pastaName] != 2 {
		t.Errorf("connections, measured in 2 rounds of 3: rounds %v", c.Rounds)
	}
	if c.Met == nil || *c.Met {
		t.Errorf("connections, usernat's failed in a round: met %v, want missed", c.Met)
	}
	var b strings.Builder
	rep.PrintSummary(&b)
	if !strings.Contains(b.String(), "[2 rounds]") {
		t.Errorf("the summary does not mark the medians of 2 rounds:\n%s", b.String())
	}
}

// usernat failing a measurement is a miss, whether in every round or in
// one: its median from the other rounds may leave out its worst. The
// peers' failures leave their comparisons without a verdict.
func TestSummaryUsernatFailedIsMissed(t *testing.T) {
	rep := newReport(config{}, []peer{{name: slirpName}, {name: pastaName}, {name: usernatName}})
	for r := range 3 {
		res := []result{
			{Values: map[string]float64{inbound: 6, latencyP50: 100}},
			{Values: map[string]float64{inbound: 10, latencyP50: 100}},
			{Values: map[string]float64{inbound: 20}}, // usernat: latency fails every round
		}
		if r == 1 {
			delete(res[2].Values, inbound) // and TCP in once
		}
		rep.add(res)
	}
	for i, m := range metrics {
		r := rep.Summary[i]
		switch m.key {
		case inbound, latencyP50:
			if r.Met == nil || *r.Met {
				t.Errorf("%s: usernat failed in some rounds, met %v; want missed", m.key, r.Met)
			}
		case outbound:
			if r.Met != nil {
				t.Errorf("%s, measured for nobody: met %v, want no verdict", m.key, *r.Met)
			}
		}
	}
}

// The summary gives, beside each ratio of the medians, the median of the
// rounds' own ratios, which a machine faster in some rounds than in
// others does not sway: here usernat is 1.1× pasta in three rounds of
// four, while the medians of their values, from different rounds, make
// 0.61.
func TestSummaryRoundRatios(t *testing.T) {
	rep := newReport(config{}, []peer{{name: slirpName}, {name: pastaName}, {name: usernatName}})
	for _, pasta := range []float64{1000, 5000, 4000} {
		rep.add([]result{
			{Values: map[string]float64{connsPerS: pasta / 2}},
			{Values: map[string]float64{connsPerS: pasta}},
			{Values: map[string]float64{connsPerS: pasta * 1.1}},
		})
	}
	// A round where usernat alone was slow.
	rep.add([]result{
		{Values: map[string]float64{connsPerS: 500}},
		{Values: map[string]float64{connsPerS: 6000}},
		{Values: map[string]float64{connsPerS: 660}},
	})
	var r row
	for i, m := range metrics {
		if m.key == connsPerS {
			r = rep.Summary[i]
		}
	}
	if r.RoundRatioPasta == nil || *r.RoundRatioPasta < 1.099 || *r.RoundRatioPasta > 1.101 {
		t.Fatalf("median of the rounds' ratios to pasta: %v, want 1.1", r.RoundRatioPasta)
	}
	if r.RatioPasta == nil || *r.RatioPasta > 1 {
		t.Fatalf("ratio of the medians to pasta: %v, want under 1 (usernat 2750 against 4500)", r.RatioPasta)
	}
	var b strings.Builder
	rep.PrintSummary(&b)
	if want := fmt.Sprintf("%.2f (1.10)", *r.RatioPasta); !strings.Contains(b.String(), want) {
		t.Errorf("the summary does not show %q:\n%s", want, b.String())
	}
}
