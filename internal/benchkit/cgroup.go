package benchkit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// cpuGroup is a cgroup of its own for one process the harness started,
// whose CPU time it reads to the microsecond (cgroup v2's usage_usec) or
// the nanosecond (v1's cpuacct.usage): every thread's, exited ones and
// children too. /proc/PID/stat counts in ticks of 10 ms, too coarse
// for a peer that uses 20 ms in a measurement.
type cpuGroup struct {
	dir  string
	read func(dir string) (time.Duration, error)
}

// cgroupRoots are where a cgroup with CPU accounting may be made: the
// cgroup v2 hierarchy (cpu.stat's usage_usec is always kept there), or v1's
// cpuacct controller (cpuacct.usage).
var cgroupRoots = []struct {
	path, probe string
	read        func(dir string) (time.Duration, error)
}{
	{"/sys/fs/cgroup", "cgroup.controllers", readCPUStat},
	{"/sys/fs/cgroup/unified", "cgroup.controllers", readCPUStat},
	{"/sys/fs/cgroup/cpuacct", "cpuacct.usage", readCPUAcct},
}

// newCPUGroup moves the process pid, all its threads, into a cgroup of its
// own, named after the harness's process and pid. It fails where no
// hierarchy takes it (no root, no cgroup file system mounted, v2 with its
// processes elsewhere in leaf cgroups only): the caller falls back on
// /proc/PID/stat.
func newCPUGroup(pid int) (*cpuGroup, error) {
	var errs []error
	for _, r := range cgroupRoots {
		if _, err := os.Stat(filepath.Join(r.path, r.probe)); err != nil {
			continue
		}
		dir := filepath.Join(r.path, fmt.Sprintf("usernat-bench-%d-%d", os.Getpid(), pid))
		if err := os.Mkdir(dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		g := &cpuGroup{dir: dir, read: r.read}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			os.Remove(dir)
			errs = append(errs, err)
			continue
		}
		if _, err := g.usage(); err != nil {
			g.remove()
			errs = append(errs, err)
			continue
		}
		return g, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no cgroup hierarchy with CPU accounting mounted")
	}
	return nil, errors.Join(errs...)
}

// usage is the CPU time the group's processes have used.
func (g *cpuGroup) usage() (time.Duration, error) { return g.read(g.dir) }

// remove removes the group, empty once its processes exited.
func (g *cpuGroup) remove() error { return os.Remove(g.dir) }

// readCPUStat reads usage_usec from a v2 cgroup's cpu.stat.
func readCPUStat(dir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("usage_usec ")); ok {
			us, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("%s/cpu.stat: no usage_usec", dir)
}

// readCPUAcct reads a v1 cpuacct cgroup's cpuacct.usage, in nanoseconds.
func readCPUAcct(dir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	return time.Duration(ns), err
}
