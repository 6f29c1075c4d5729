package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/usernat/usernat/internal/benchkit"
)

// metric describes one row of the table and usernat's target for it,
// relative to the kernel's value.
type metric struct {
	key    string
	name   string
	unit   string
	format string
	higher bool    // higher is better: the target is a minimum ratio, else a maximum
	target float64 // usernat/kernel
}

var metrics = []metric{
	{inbound, fmt.Sprintf("TCP in: client -> %s -> %s:%d", published, containerAddr.Addr(), containerPort), "Gbit/s", "%.2f", true, 0.5},
	{outbound, fmt.Sprintf("TCP out: %s -> masquerade -> %s", containerAddr.Addr(), lanServer), "Gbit/s", "%.2f", true, 0.5},
	{latencyP50, fmt.Sprintf("latency p50: 1-byte ping-pong via :%d", publishedPort), "µs", "%.1f", false, 1.5},
	{latencyP99, fmt.Sprintf("latency p99: 1-byte ping-pong via :%d", publishedPort), "µs", "%.1f", false, 1.5},
	{connsPerS, fmt.Sprintf("new connections via :%d", publishedPort), "conn/s", "%.0f", true, 0.5},
}

func (m metric) targetString() string {
	if m.higher {
		return fmt.Sprintf(">= %.1fx", m.target)
	}
	return fmt.Sprintf("<= %.1fx", m.target)
}

func (m metric) met(ratio float64) bool {
	if m.higher {
		return ratio >= m.target
	}
	return ratio <= m.target
}

// row is one metric compared; absent values are nil.
type row struct {
	Metric  string   `json:"metric"`
	Unit    string   `json:"unit"`
	Kernel  *float64 `json:"kernel,omitempty"`
	Usernat *float64 `json:"usernat,omitempty"`
	Ratio   *float64 `json:"ratio,omitempty"`
	Target  string   `json:"target"`
	Met     *bool    `json:"met,omitempty"`
}

type round struct {
	Kernel  result `json:"kernel"`
	Usernat result `json:"usernat"`
	Rows    []row  `json:"rows"`
}

var _ benchkit.Report = (*report)(nil)

type report struct {
	Date      string           `json:"date"`
	Machine   benchkit.Machine `json:"machine"`
	MTU       int              `json:"mtu"`
	Duration  string           `json:"duration"`
	Parallel  int              `json:"parallel"`
	KernelNAT string           `json:"kernel_nat"`
	Rounds    []round          `json:"rounds"`
	Summary   []row            `json:"summary,omitempty"` // medians over the rounds

	total int // rounds to run
}

func newReport(cfg config, natTool string) *report {
	return &report{
		Date:      time.Now().UTC().Format(time.RFC3339),
		Machine:   benchkit.MachineInfo(),
		MTU:       cfg.mtu,
		Duration:  cfg.Duration.String(),
		Parallel:  cfg.Parallel,
		KernelNAT: natTool,
		total:     cfg.Rounds,
	}
}

func (rep *report) PrintHeader(w io.Writer) {
	fmt.Fprintf(w, "%s, %s\n\n", rep.Date, rep.Machine)
}

func (rep *report) add(k, u result) {
	rep.Rounds = append(rep.Rounds, round{Kernel: k, Usernat: u, Rows: rows(k.Values, u.Values)})
	var ks, us []map[string]float64
	for _, r := range rep.Rounds {
		ks, us = append(ks, r.Kernel.Values), append(us, r.Usernat.Values)
	}
	rep.Summary = rows(medians(ks), medians(us))
}

// Failed says whether any kernel measurement failed: the harness
// itself, not usernat, is then at fault.
func (rep *report) Failed() bool {
	for _, r := range rep.Rounds {
		if r.Kernel.Unavailable != "" || len(r.Kernel.Errors) > 0 {
			return true
		}
	}
	return false
}

func rows(k, u map[string]float64) []row {
	var out []row
	for _, m := range metrics {
		r := row{Metric: m.key, Unit: m.unit, Target: m.targetString()}
		if v, ok := k[m.key]; ok {
			r.Kernel = &v
		}
		if v, ok := u[m.key]; ok {
			r.Usernat = &v
		}
		if r.Kernel != nil && r.Usernat != nil && *r.Kernel > 0 {
			ratio := *r.Usernat / *r.Kernel
			met := m.met(ratio)
			r.Ratio, r.Met = &ratio, &met
		}
		out = append(out, r)
	}
	return out
}

func medians(rounds []map[string]float64) map[string]float64 {
	out := make(map[string]float64)
	for _, m := range metrics {
		var vs []float64
		for _, r := range rounds {
			if v, ok := r[m.key]; ok {
				vs = append(vs, v)
			}
		}
		if len(vs) > 0 {
			out[m.key] = benchkit.Median(vs)
		}
	}
	return out
}

func (rep *report) PrintRound(w io.Writer, i int) {
	r := rep.Rounds[i]
	fmt.Fprintf(w, "round %d of %d: MTU %d, %s per measurement, %d clients for connections/s; kernel NAT by %s\n",
		i+1, rep.total, rep.MTU, rep.Duration, rep.Parallel, rep.KernelNAT)
	printTable(w, r.Rows, r.Kernel, r.Usernat)
}

func (rep *report) PrintSummary(w io.Writer) {
	fmt.Fprintf(w, "median of %d rounds: MTU %d, %s per measurement\n", len(rep.Rounds), rep.MTU, rep.Duration)
	printTable(w, rep.Summary, result{}, result{})
}

func printTable(w io.Writer, rs []row, k, u result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tkernel\tusernat\tusernat/kernel\ttarget\t")
	for i, r := range rs {
		m := metrics[i]
		ratio, target := "-", r.Target
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
			if *r.Met {
				target += " ok"
			} else {
				target += " MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", m.name, cell(m, r.Kernel, k), cell(m, r.Usernat, u), ratio, target)
	}
	tw.Flush()
	for _, s := range []struct {
		name string
		r    result
	}{{"kernel", k}, {"usernat", u}} {
		if s.r.Unavailable != "" {
			fmt.Fprintf(w, "%s: not available (%s)\n", s.name, s.r.Unavailable)
		}
		benchkit.PrintErrors(w, s.name, metrics, s.r.Errors)
	}
	fmt.Fprintln(w)
}

func cell(m metric, v *float64, r result) string {
	switch {
	case v != nil:
		return fmt.Sprintf(m.format+" %s", *v, m.unit)
	case r.Unavailable != "":
		return "not available"
	case r.Errors[m.key] != "":
		return "error"
	}
	return "-"
}

// Key is the metric's key in results and JSON.
func (m metric) Key() string { return m.key }
