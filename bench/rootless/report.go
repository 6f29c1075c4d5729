package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/usernat/usernat/internal/benchkit"
)

// metric describes one row of the table and usernat's target for it,
// relative to slirp4netns and to pasta.
type metric struct {
	key    string
	total  string // of a CPU row: the key of the total
	name   string
	unit   string
	format string
	kind   metricKind
	higher bool // higher is better: the targets are minimum ratios, else maximum ones
	// vs are the target ratios usernat/slirp4netns and usernat/pasta;
	// zero means no target. strict makes them "better than", not "at least".
	vs     [2]float64
	strict bool
}

type metricKind int

const (
	plain    metricKind = iota
	cpuKind             // CPU time per unit, named in the row; the cell adds the total
	keptKind            // 1 when the container saw the client's own address
)

var metrics = slices.Concat([]metric{
	{key: inbound, name: fmt.Sprintf("TCP in: %s -> %s -> container:%d", clientAddr.Addr(), published, containerPort),
		unit: "Gbit/s", format: "%.2f", higher: true, vs: [2]float64{1.5, 1}},
	{key: cpuIn, total: cpuInTotal, name: "  network process CPU: s/GB (total s)", unit: "s/GB", format: "%.2f", kind: cpuKind},
	{key: outbound, name: fmt.Sprintf("TCP out: container -> %s", lanServer),
		unit: "Gbit/s", format: "%.2f", higher: true, vs: [2]float64{1.5, 1}},
	{key: cpuOut, total: cpuOutTotal, name: "  network process CPU: s/GB (total s)", unit: "s/GB", format: "%.2f", kind: cpuKind},
},
	exchangeRows("", fmt.Sprintf("via :%d", publishedPort),
		latencyP50, latencyP99, cpuLatency, cpuLatencyTotal, connsPerS, cpuConns, cpuConnsTotal),
	exchangeRows(" out", fmt.Sprintf("to %s", lanServer),
		latencyOutP50, latencyOutP99, cpuLatencyOut, cpuLatencyOutT, connsOutPerS, cpuConnsOut, cpuConnsOutT),
	latencyRows("UDP ", "", fmt.Sprintf("via :%d", publishedUDPPort), udpLatencyP50, udpLatencyP99, cpuUDPLatency, cpuUDPLatencyT),
	latencyRows("UDP ", " out", fmt.Sprintf("to %s", lanServer), udpLatOutP50, udpLatOutP99, cpuUDPLatOut, cpuUDPLatOutT),
	[]metric{
		{key: keptTCP, name: fmt.Sprintf("client address kept: TCP via :%d", publishedPort), kind: keptKind},
		{key: keptUDP, name: fmt.Sprintf("client address kept: UDP via :%d", publishedUDPPort), kind: keptKind},
	},
)

// exchangeRows are the rows of the TCP ping-pong and the new connections
// one way (dir, "" in through the published port, " out" from the
// container), to where: latency p50 and p99 and the CPU per round trip
// (latencyRows), connections/s and the CPU per connection, each better
// than both peers'.
func exchangeRows(dir, where, p50, p99, cpuRT, cpuRTTotal, conns, cpuConn, cpuConnTotal string) []metric {
	return append(latencyRows("", dir, where, p50, p99, cpuRT, cpuRTTotal),
		metric{key: conns, name: fmt.Sprintf("new connections%s %s", dir, where),
			unit: "conn/s", format: "%.0f", higher: true, vs: [2]float64{1, 1}, strict: true},
		metric{key: cpuConn, total: cpuConnTotal, name: "  network process CPU: s/1000 connections (total s)", unit: "s/1000 connections", format: "%.3f", kind: cpuKind})
}

// latencyRows are the rows of a ping-pong (proto "" for TCP, "UDP " for
// UDP) one way, to where: p50 and p99, each better than both peers', and
// the CPU per round trip.
func latencyRows(proto, dir, where, p50, p99, cpuRT, cpuRTTotal string) []metric {
	return []metric{
		{key: p50, name: fmt.Sprintf("%slatency p50%s: 1-byte ping-pong %s", proto, dir, where),
			unit: "µs", format: "%.1f", vs: [2]float64{1, 1}, strict: true},
		{key: p99, name: fmt.Sprintf("%slatency p99%s: 1-byte ping-pong %s", proto, dir, where),
			unit: "µs", format: "%.1f", vs: [2]float64{1, 1}, strict: true},
		{key: cpuRT, total: cpuRTTotal, name: "  network process CPU: s/1000 round trips (total s)", unit: "s/1000 round trips", format: "%.3f", kind: cpuKind},
	}
}

func (m metric) hasTarget() bool { return m.kind == keptKind || m.vs != [2]float64{} }

func (m metric) targetString() string {
	if m.kind == keptKind {
		return "yes"
	}
	if !m.hasTarget() {
		return ""
	}
	op := map[[2]bool]string{{true, false}: ">=", {true, true}: ">", {false, false}: "<=", {false, true}: "<"}[[2]bool{m.higher, m.strict}]
	if m.vs[0] == m.vs[1] {
		return fmt.Sprintf("%s %gx both", op, m.vs[0])
	}
	return fmt.Sprintf("%s %gx %s, %s %gx %s", op, m.vs[0], slirpName, op, m.vs[1], pastaName)
}

func (m metric) met(ratio, target float64) bool {
	switch {
	case m.higher && m.strict:
		return ratio > target
	case m.higher:
		return ratio >= target
	case m.strict:
		return ratio < target
	}
	return ratio <= target
}

// row is one metric compared across the peers; absent values are left
// out.
type row struct {
	Metric     string             `json:"metric"`
	Unit       string             `json:"unit,omitempty"`
	Values     map[string]float64 `json:"values,omitempty"`
	Totals     map[string]float64 `json:"total_cpu_s,omitempty"` // CPU rows
	Seen       map[string]string  `json:"seen,omitempty"`        // client-address rows
	RatioSlirp *float64           `json:"usernat_per_slirp4netns,omitempty"`
	RatioPasta *float64           `json:"usernat_per_pasta,omitempty"`
	Target     string             `json:"target,omitempty"`
	Met        *bool              `json:"met,omitempty"` // nil: no verdict (usernat, or a reference the target names, not measured)
	// RoundRatioSlirp and RoundRatioPasta, in the summary, are the
	// medians of the rounds' own ratios: each round's peers measured
	// close in time, they do not follow a machine that was faster in
	// some rounds than in others, as the ratios of the medians may.
	RoundRatioSlirp *float64 `json:"usernat_per_slirp4netns_median_of_rounds,omitempty"`
	RoundRatioPasta *float64 `json:"usernat_per_pasta_median_of_rounds,omitempty"`
	// Rounds, in the summary, is how many rounds a value is the median
	// of, where fewer than all measured it (the others failed).
	Rounds map[string]int `json:"rounds,omitempty"`
}

type round struct {
	Results map[string]result `json:"results"`
	Rows    []row             `json:"rows"`
}

type peerInfo struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

var _ benchkit.Report = (*report)(nil)

type report struct {
	Date         string           `json:"date"`
	Machine      benchkit.Machine `json:"machine"`
	Peers        []peerInfo       `json:"peers"`
	LANMTU       int              `json:"lan_mtu"`
	ContainerMTU int              `json:"container_mtu"`
	Duration     string           `json:"duration"`
	Parallel     int              `json:"parallel"`
	Rounds       []round          `json:"rounds"`
	Summary      []row            `json:"summary,omitempty"` // medians over the rounds

	names []string // the peers, in column order
	total int      // rounds to run
}

func newReport(cfg config, peers []peer) *report {
	rep := &report{
		Date:         time.Now().UTC().Format(time.RFC3339),
		Machine:      benchkit.MachineInfo(),
		LANMTU:       1500,
		ContainerMTU: mtu,
		Duration:     cfg.Duration.String(),
		Parallel:     cfg.Parallel,
		total:        cfg.Rounds,
	}
	for _, p := range peers {
		rep.Peers = append(rep.Peers, peerInfo{p.name, p.version})
		rep.names = append(rep.names, p.name)
	}
	return rep
}

func (rep *report) PrintHeader(w io.Writer) {
	fmt.Fprintf(w, "%s, %s\n", rep.Date, rep.Machine)
	for _, p := range rep.Peers {
		if p.Version != "" {
			fmt.Fprintf(w, "%s: %s\n", p.Name, p.Version)
		}
	}
	fmt.Fprintln(w)
}

func (rep *report) add(results []result) {
	rd := round{Results: make(map[string]result)}
	vals := make(map[string]map[string]float64)
	for i, name := range rep.names {
		rd.Results[name] = results[i]
		vals[name] = results[i].Values
	}
	rd.Rows = rep.rows(vals, rd.Results)
	rep.Rounds = append(rep.Rounds, rd)
	med := make(map[string]map[string]float64)
	for _, name := range rep.names {
		var per []map[string]float64
		for _, r := range rep.Rounds {
			per = append(per, r.Results[name].Values)
		}
		med[name] = medians(per)
	}
	rep.Summary = rep.rows(med, nil)
	for i, m := range metrics {
		r := &rep.Summary[i]
		if len(rep.Rounds) > 1 {
			r.RoundRatioSlirp = rep.roundRatios(i, func(r row) *float64 { return r.RatioSlirp })
			r.RoundRatioPasta = rep.roundRatios(i, func(r row) *float64 { return r.RatioPasta })
		}
		for _, name := range rep.names {
			if _, ok := r.Values[name]; !ok {
				continue
			}
			n := 0
			for _, rd := range rep.Rounds {
				if _, ok := rd.Results[name].Values[m.key]; ok {
					n++
				}
			}
			if n < len(rep.Rounds) {
				if r.Rounds == nil {
					r.Rounds = make(map[string]int)
				}
				r.Rounds[name] = n
			}
		}
		// usernat's measurement failing in any round of a metric the
		// others were measured in is a miss: its median from the rounds
		// that worked would leave out what may be its worst. (A peer's
		// failure leaves its comparison without a verdict: they have
		// bugs, and the harness reports them.)
		_, hasU := r.Values[usernatName]
		if m.target() && slices.Contains(rep.names, usernatName) && (len(r.Values) > 0 && !hasU || r.Rounds[usernatName] > 0) {
			r.Met = new(bool)
		}
	}
}

// target says whether m has a target: a ratio to a peer, or the client's
// address kept.
func (m metric) target() bool { return m.kind == keptKind || m.vs != [2]float64{} }

// roundRatios is the median of the ratio of metric i that of picks from
// each round's row, over the rounds that have it; nil when none does.
func (rep *report) roundRatios(i int, of func(row) *float64) *float64 {
	var vs []float64
	for _, rd := range rep.Rounds {
		if p := of(rd.Rows[i]); p != nil {
			vs = append(vs, *p)
		}
	}
	if len(vs) == 0 {
		return nil
	}
	m := benchkit.Median(vs)
	return &m
}

// Failed says whether slirp4netns or pasta, when selected, could not be
// started and measured at all: the harness, or the machine, is then at fault. A
// metric one of them fails is reported as its own (they have bugs).
func (rep *report) Failed() bool {
	for _, r := range rep.Rounds {
		for _, name := range []string{slirpName, pastaName} {
			if res := r.Results[name]; res.Unavailable != "" && res.Unavailable != notSelected {
				return true
			}
		}
	}
	return false
}

// rows compares the peers' values; seen, when not nil, gives the
// addresses behind the client-address rows.
func (rep *report) rows(vals map[string]map[string]float64, seen map[string]result) []row {
	var out []row
	for _, m := range metrics {
		r := row{Metric: m.key, Unit: m.unit, Target: m.targetString(),
			Values: make(map[string]float64)}
		for _, name := range rep.names {
			if v, ok := vals[name][m.key]; ok {
				r.Values[name] = v
			}
			if v, ok := vals[name][m.total]; ok && m.kind == cpuKind {
				if r.Totals == nil {
					r.Totals = make(map[string]float64)
				}
				r.Totals[name] = v
			}
			if s, ok := seen[name].Seen[m.key]; ok && m.kind == keptKind {
				if r.Seen == nil {
					r.Seen = make(map[string]string)
				}
				r.Seen[name] = s
			}
		}
		u, hasU := r.Values[usernatName]
		if m.kind == keptKind {
			if hasU {
				met := u == 1
				r.Met = &met
			}
			out = append(out, r)
			continue
		}
		allMet, compared, missing := true, false, false
		for i, ref := range []string{slirpName, pastaName} {
			v, ok := r.Values[ref]
			if !hasU || !ok || v <= 0 {
				// A target against both is judged against both.
				missing = missing || m.vs[i] != 0
				continue
			}
			ratio := u / v
			if i == 0 {
				r.RatioSlirp = &ratio
			} else {
				r.RatioPasta = &ratio
			}
			if m.vs[i] != 0 {
				compared = true
				allMet = allMet && m.met(ratio, m.vs[i])
			}
		}
		if compared && !missing {
			r.Met = &allMet
		}
		out = append(out, r)
	}
	return out
}

// medians are the median of each value over the rounds; for the
// client-address metrics, the smallest: kept only if kept every round.
func medians(rounds []map[string]float64) map[string]float64 {
	out := make(map[string]float64)
	for _, m := range metrics {
		keys := []string{m.key}
		if m.kind == cpuKind {
			keys = append(keys, m.total)
		}
		for _, key := range keys {
			var vs []float64
			for _, r := range rounds {
				if v, ok := r[key]; ok {
					vs = append(vs, v)
				}
			}
			switch {
			case len(vs) == 0:
			case m.kind == keptKind:
				out[key] = slices.Min(vs)
			default:
				out[key] = benchkit.Median(vs)
			}
		}
	}
	return out
}

func (rep *report) PrintRound(w io.Writer, i int) {
	r := rep.Rounds[i]
	fmt.Fprintf(w, "round %d of %d: %s per measurement, %d clients for connections/s; LAN MTU %d, container MTU %d\n",
		i+1, rep.total, rep.Duration, rep.Parallel, rep.LANMTU, rep.ContainerMTU)
	rep.printTable(w, r.Rows, r.Results)
}

func (rep *report) PrintSummary(w io.Writer) {
	fmt.Fprintf(w, "median of %d rounds: %s per measurement (client address kept: yes only if kept in every round; a ratio's parenthesis: the median of the rounds' own ratios)\n",
		len(rep.Rounds), rep.Duration)
	// A peer no round measured is not available in the summary either,
	// and a metric that failed in every round is an error there too.
	res := make(map[string]result)
	for _, name := range rep.names {
		var why string
		for _, r := range rep.Rounds {
			if why = r.Results[name].Unavailable; why == "" {
				break
			}
		}
		errs := make(map[string]string)
		for _, m := range metrics {
			for i, r := range rep.Rounds {
				e, ok := r.Results[name].Errors[m.key]
				if !ok {
					delete(errs, m.key)
					break
				}
				if i == len(rep.Rounds)-1 {
					errs[m.key] = "in every round; the last: " + e
				}
			}
		}
		res[name] = result{Unavailable: why, Errors: errs}
	}
	rep.printTable(w, rep.Summary, res)
}

func (rep *report) printTable(w io.Writer, rs []row, results map[string]result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "metric\t%s\tusernat/slirp4netns\tusernat/pasta\ttarget\t\n", strings.Join(rep.names, "\t"))
	for i, r := range rs {
		m := metrics[i]
		fmt.Fprintf(tw, "%s\t", m.name)
		for _, name := range rep.names {
			fmt.Fprintf(tw, "%s\t", cell(m, r, name, results[name]))
		}
		target := r.Target
		if r.Met != nil {
			if *r.Met {
				target += " ok"
			} else {
				target += " MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", ratio(r.RatioSlirp, r.RoundRatioSlirp), ratio(r.RatioPasta, r.RoundRatioPasta), target)
	}
	tw.Flush()
	if results != nil {
		var src []string
		for _, name := range rep.names {
			if s := results[name].Seen[outSource]; s != "" {
				src = append(src, name+" "+s)
			}
		}
		if len(src) > 0 {
			fmt.Fprintf(w, "the server at %s saw the container's connection come from: %s\n", lanServer, strings.Join(src, ", "))
		}
	}
	for _, name := range rep.names {
		res := results[name]
		if res.Unavailable != "" {
			fmt.Fprintf(w, "%s: not available (%s)\n", name, res.Unavailable)
		}
		benchkit.PrintErrors(w, name, metrics, res.Errors)
	}
	fmt.Fprintln(w)
}

func cell(m metric, r row, name string, res result) string {
	v, ok := r.Values[name]
	switch {
	case ok && m.kind == keptKind:
		s := "no"
		if v == 1 {
			s = "yes"
		}
		if seen := r.Seen[name]; seen != "" {
			s += " (" + seen + ")"
		}
		return s
	case ok && m.kind == cpuKind:
		return fmt.Sprintf(m.format+" (%.2f)", v, r.Totals[name]) + partial(r, name)
	case ok:
		return fmt.Sprintf(m.format+" %s", v, m.unit) + partial(r, name)
	case res.Unavailable != "":
		return "not available"
	case res.Errors[m.key] != "":
		return "error"
	}
	return "-"
}

// ratio is a ratio's cell: p, and the median of the rounds' ratios,
// rounds, when there is one.
func ratio(p, rounds *float64) string {
	switch {
	case p == nil:
		return "-"
	case rounds == nil:
		return fmt.Sprintf("%.2f", *p)
	}
	return fmt.Sprintf("%.2f (%.2f)", *p, *rounds)
}

// Key is the metric's key in results and JSON.
func (m metric) Key() string { return m.key }

// partial marks a summary value that fewer rounds than all measured.
func partial(r row, name string) string {
	if n, ok := r.Rounds[name]; ok {
		return fmt.Sprintf(" [%d rounds]", n)
	}
	return ""
}
