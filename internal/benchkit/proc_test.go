package benchkit

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// here is the test's own namespace: the processes these tests start send
// no packets, and the ping-pong tests send on its loopback only.
type here struct{}

func (here) Do(fn func() error) error { return fn() }

func TestParseCPUTime(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 250 and 50 ticks; the command
	// name holds a space and a parenthesis.
	stat := "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10"
	got, err := parseCPUTime(42, stat)
	if err != nil || got != 3*time.Second {
		t.Errorf("parseCPUTime = %v, %v; want 3s", got, err)
	}
	for _, bad := range []string{"42 no name", "42 (x) S 1 2", "42 (x) S 1 42 42 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseCPUTime(42, bad); err == nil {
			t.Errorf("parseCPUTime(%q) = nil error", bad)
		}
	}
	if _, err := CPUTime(os.Getpid()); err != nil {
		t.Errorf("CPUTime(self): %v", err)
	}
}

func TestKilledBy(t *testing.T) {
	err := exec.Command("sh", "-c", "kill -TERM $$").Run()
	if !KilledBy(err, syscall.SIGTERM) {
		t.Errorf("KilledBy(%v, SIGTERM) = false", err)
	}
	if KilledBy(err, syscall.SIGKILL) {
		t.Errorf("KilledBy(%v, SIGKILL) = true", err)
	}
	if err := exec.Command("sh", "-c", "exit 3").Run(); KilledBy(err, syscall.SIGTERM) {
		t.Errorf("KilledBy(%v, SIGTERM) = true", err)
	}
	if KilledBy(errors.New("other"), syscall.SIGTERM) {
		t.Error("KilledBy(a plain error) = true")
	}
}

// startReady starts script with a ready pipe as fd 3.
func startReady(t *testing.T, script string) (*Proc, func() error) {
	t.Helper()
	r, w, ready, err := ReadyPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd := exec.Command("sh", "-c", script)
	cmd.ExtraFiles = []*os.File{w}
	p, err := StartProc(here{}, "test process", cmd)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return p, ready
}

func TestProcReady(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, ready := startReady(t, "echo hello; echo 1 >&3; exec sleep 60")
	if err := p.WaitReady(context.Background(), ready); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if err := p.Alive(); err != nil {
		t.Errorf("Alive() after ready: %v", err)
	}
	if p.Name() != "test process" || p.Pid() <= 0 {
		t.Errorf("Name, Pid = %q, %d", p.Name(), p.Pid())
	}
	p.Stop() // sleep has no SIGTERM handler: no log line, and no wait
	err := p.Alive()
	if err == nil || !strings.Contains(err.Error(), "test process exited: signal: terminated; output: hello") {
		t.Errorf("Alive() after Stop = %v", err)
	}
	p.Stop() // again: harmless
}

func TestProcExitsBeforeReady(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, ready := startReady(t, "echo failing; exit 2")
	err := p.WaitReady(context.Background(), ready)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready: exit status 2; output: failing") {
		t.Errorf("WaitReady = %v", err)
	}
	p.Stop()
}

func TestProcWaitReadyCanceled(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, _ := startReady(t, "exec sleep 60")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.WaitReady(ctx, func() error { return ErrNotYet }); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitReady = %v, want context.Canceled", err)
	}
	p.Stop()
}

// As root, a process the harness starts has a cgroup of its own, whose
// CPU time counts to the nanosecond (a process that used 30 ms shows 30
// ms, not 0 or 40 in ticks of 10 ms), and which Stop removes. The process
// joins its group just after it starts, so the harness (and this test)
// count from a first reading on.
func TestIntegrationProcCPUGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: no cgroup of its own, CPU time in ticks")
	}
	defer goleak.VerifyNone(t)
	// After a pause (by which time the process is in its group: the
	// harness measures from then on), a busy loop until the shell itself
	// has run 30 ms more on a CPU (its schedstat, in ns; the loop forks
	// nothing), then a wait for the stop. (A loop for 30 ms of the clock
	// ran 10-20 ms of CPU when it forked date each round.)
	p, err := StartProc(here{}, "busy process", exec.Command("sh", "-c", `sleep 0.3; read s rest < /proc/$$/schedstat; end=$((s + 30000000)); while read t rest < /proc/$$/schedstat && [ $t -lt $end ]; do :; done; echo done; exec sleep 60`))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if !p.CPUPrecise() {
		t.Fatal("no cgroup for the process, as root")
	}
	before, err := p.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	dir := p.cg.dir
	if err := p.WaitReady(context.Background(), func() error {
		if !strings.Contains(p.Output(), "done") {
			return ErrNotYet
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	after, err := p.CPUTime()
	used := after - before
	if err != nil || used < 30*time.Millisecond || used > time.Second || used%(10*time.Millisecond) == 0 {
		t.Errorf("CPU time %v (%v): want 30 ms or a little more, counted finer than ticks", used, err)
	}
	p.Stop()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s after Stop: %v, want it removed", dir, err)
	}
}
