package benchkit

import (
	"bytes"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"median of five", ms(1, 2, 3, 4, 5), 0.5, 3 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(seq(100)...), 0.99, 99 * time.Millisecond},
		{"p99 of 10 is the last", ms(seq(10)...), 0.99, 10 * time.Millisecond},
		{"p0 is the first", ms(1, 2, 3), 0, 1 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		vs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := Median(tc.vs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.vs, got, tc.want)
		}
	}
}

type key string

func (k key) Key() string { return string(k) }

func TestPrintErrors(t *testing.T) {
	var b bytes.Buffer
	PrintErrors(&b, "usernat", []key{"a", "b", "c", "d"}, map[string]string{
		"d": "refused", "a": "timeout", "c": "timeout", "z": "not a metric",
	})
	want := "usernat: a, c: timeout\nusernat: d: refused\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestMachineString(t *testing.T) {
	m := Machine{CPU: "AMD EPYC", CPUs: 2, Kernel: "6.1.0", Go: "go1.26"}
	if got, want := m.String(), "AMD EPYC, 2 CPUs, Linux 6.1.0, go1.26"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestFlagsCheck(t *testing.T) {
	ok := Flags{Duration: time.Second, Rounds: 1, Parallel: 4}
	for _, tc := range []struct {
		name  string
		edit  func(*Flags)
		valid bool
	}{
		{"defaults", func(*Flags) {}, true},
		{"a minute", func(f *Flags) { f.Duration = time.Minute }, true},
		{"zero duration", func(f *Flags) { f.Duration = 0 }, false},
		{"over a minute", func(f *Flags) { f.Duration = time.Minute + 1 }, false},
		{"no rounds", func(f *Flags) { f.Rounds = 0 }, false},
		{"eleven rounds", func(f *Flags) { f.Rounds = 11 }, false},
		{"64 clients", func(f *Flags) { f.Parallel = 64 }, true},
		{"65 clients", func(f *Flags) { f.Parallel = 65 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ok
			tc.edit(&f)
			if err := f.Check(); (err == nil) != tc.valid {
				t.Errorf("Check() = %v, want valid %v", err, tc.valid)
			}
		})
	}
}
