package benchkit

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
	pollInterval = 50 * time.Millisecond
	clockTicks   = 100 // USER_HZ, the unit of /proc/PID/stat's times on every Linux
)

// Proc is a process the harness started: a network process such as
// usernat, or one that holds a namespace.
type Proc struct {
	name    string
	cmd     *exec.Cmd
	out     *Tail
	exited  chan struct{}
	waitErr error     // set before exited is closed
	cg      *cpuGroup // where its CPU time is read, when one could be made
}

// StartProc starts cmd inside in, named name in messages. It takes cmd's
// output, for error messages, and its process attributes.
func StartProc(in Place, name string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{name: name, cmd: cmd, out: &Tail{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// Its own process group keeps the terminal's SIGINT from it, so it
	// stops when the harness says (after the measurement), and the
	// parent-death signal keeps it from outliving a harness that crashed.
	// (setpriv clears that signal when it changes the user; give it
	// --pdeathsig to set it again.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// A child it leaves behind may hold the output pipe open: do not wait
	// for that to call the process exited.
	cmd.WaitDelay = time.Second
	if err := in.Do(cmd.Start); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.cg, _ = newCPUGroup(cmd.Process.Pid) // else /proc/PID/stat's ticks
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Name is the process's name in messages.
func (p *Proc) Name() string { return p.name }

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is the end of the process's output for an error message: empty,
// or "; output: ...".
func (p *Proc) Output() string { return p.out.Suffix() }

// Alive returns an error when the process has exited.
func (p *Proc) Alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v%s", p.name, p.waitErr, p.out.Suffix())
	default:
		return nil
	}
}

// WaitReady waits until check returns nil, polling it, or the process
// exits, or 15 seconds pass. A check that returns ErrNotYet (or wraps it)
// is polled again; any other error ends the wait.
func (p *Proc) WaitReady(ctx context.Context, check func() error) error {
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrNotYet) {
			// A closed ready pipe usually means the process is exiting:
			// say so, with its status.
			select {
			case <-p.exited:
				return fmt.Errorf("exited before it was ready: %v%s", p.waitErr, p.out.Suffix())
			case <-time.After(time.Second):
				return fmt.Errorf("%w%s", err, p.out.Suffix())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %v%s", readyTimeout, err, p.out.Suffix())
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited before it was ready: %v%s", p.waitErr, p.out.Suffix())
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// ErrNotYet is what a readiness check returns while it should be polled
// again.
var ErrNotYet = errors.New("not yet")

// ReadyPipe makes the pipe a process signals readiness on (slirp4netns
// --ready-fd, usernat --ready-fd): w goes to the child as fd 3, and the
// check returned, for WaitReady, says whether it has written to it. Close
// w once the child has started, and r when done.
func ReadyPipe() (r, w *os.File, check func() error, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	got := make(chan error, 1)
	go func() { // ends at the signal, or when the child exits and the pipe closes, or at r.Close
		var b [1]byte
		_, err := r.Read(b[:])
		got <- err
	}()
	var done error = ErrNotYet
	check = func() error {
		if done != ErrNotYet {
			return done
		}
		select {
		case err := <-got:
			if err != nil {
				done = fmt.Errorf("closed its ready fd without writing: %w", err)
			} else {
				done = nil
			}
			return done
		default:
			return ErrNotYet
		}
	}
	return r, w, check, nil
}

// Stop ends the process the way a user would, with SIGTERM, so it can
// remove what it created, and kills it if it takes too long. Then it
// kills what is left of its process group: helpers it may have started.
func (p *Proc) Stop() {
	pgid := p.cmd.Process.Pid
	defer func() {
		syscall.Kill(-pgid, syscall.SIGKILL)
		if p.cg != nil {
			p.removeGroup()
		}
	}()
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		// ErrWaitDelay: it exited 0, leaving a child with its output.
		if p.waitErr != nil && !errors.Is(p.waitErr, exec.ErrWaitDelay) && !KilledBy(p.waitErr, syscall.SIGTERM) {
			log.Printf("%s exit after SIGTERM: %v%s", p.name, p.waitErr, p.out.Suffix())
		}
	case <-time.After(stopTimeout):
		log.Printf("%s still running %v after SIGTERM; killing it", p.name, stopTimeout)
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
}

// KilledBy says whether err is the exit of a process that sig ended,
// which is how a process without a handler for it stops.
func KilledBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// CPUTime is the CPU time, user and system, that the process and its
// threads have used so far: to the microsecond from its cgroup, when it
// has one, else in ticks of 10 ms.
func (p *Proc) CPUTime() (time.Duration, error) {
	if p.cg != nil {
		return p.cg.usage()
	}
	return CPUTime(p.Pid())
}

// CPUPrecise says whether CPUTime counts finer than ticks (a cgroup).
func (p *Proc) CPUPrecise() bool { return p.cg != nil }

// removeGroup removes the process's cgroup once what it held has gone
// (the kernel takes a moment to empty it after the last exit).
func (p *Proc) removeGroup() {
	for range 50 {
		if err := p.cg.remove(); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Printf("%s: cgroup %s left behind", p.name, p.cg.dir)
}

// CPUTime is the CPU time, user and system, that the process pid and its
// threads have used: utime and stime of /proc/PID/stat.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseCPUTime(pid, string(b))
}

// parseCPUTime reads utime and stime from the text of /proc/PID/stat.
func parseCPUTime(pid int, s string) (time.Duration, error) {
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields after its closing one. utime and stime are fields 14
	// and 15, so the 12th and 13th after it.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
