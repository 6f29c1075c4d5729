package benchkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine is what a report says about the machine it ran on.
type Machine struct {
	CPU    string `json:"cpu"`
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// MachineInfo describes this machine: the CPU model /proc/cpuinfo names,
// the kernel release and the Go version; what it cannot read is empty.
func MachineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		m.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// String is the machine as a report's header says it.
func (m Machine) String() string {
	return fmt.Sprintf("%s, %d CPUs, Linux %s, %s", m.CPU, m.CPUs, m.Kernel, m.Go)
}

// WriteJSON writes v as indented JSON, with <, > and & left as they are.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// Median is the median of vs, which it sorts; vs must not be empty.
func Median(vs []float64) float64 {
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// PrintErrors writes errs, the errors of one setup's metrics by key, one
// line per distinct error: "name: key, key: error", the keys in the order
// of metrics.
func PrintErrors[M interface{ Key() string }](w io.Writer, name string, metrics []M, errs map[string]string) {
	var order []string
	cost := make(map[string][]string)
	for _, m := range metrics {
		k := m.Key()
		if e, ok := errs[k]; ok {
			if cost[e] == nil {
				order = append(order, e)
			}
			cost[e] = append(cost[e], k)
		}
	}
	for _, e := range order {
		fmt.Fprintf(w, "%s: %s: %s\n", name, strings.Join(cost[e], ", "), e)
	}
}
