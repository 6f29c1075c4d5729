package benchkit

import (
	"errors"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

const (
	// ReexecEnv marks the inner run, the one in private namespaces.
	ReexecEnv = "USERNAT_BENCH_UNSHARED"
	// UnavailEnv tells the inner run why the outer one has no usernat
	// binary for it.
	UnavailEnv = "USERNAT_BENCH_USERNAT_UNAVAILABLE"
	// ExitInterrupt is the exit status of a run a signal ended.
	ExitInterrupt = 130
)

// Outer is the run in the machine's own namespaces, which touches no
// device there: it calls tools, which checks for the programs the harness
// runs and installs those missing when f.Install is set; builds usernat
// unless f.Usernat names one (the module proxy is out of reach from
// inside); and runs this program again with its arguments through
// reexec, which returns the command that puts it in private namespaces
// with env added to its environment. It returns the exit status to exit
// with.
func Outer(f Flags, tools func(install bool) error, reexec func(args, env []string) (*exec.Cmd, error)) int {
	if err := tools(f.Install); err != nil {
		log.Print(err)
		return 1
	}
	args := os.Args[1:]
	env := []string{ReexecEnv + "=1"}
	if f.Usernat == "" {
		dir, err := os.MkdirTemp("", "usernat-bench-bin-")
		if err != nil {
			log.Print(err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin, err := CompileUsernat(dir, f.Tags)
		if err != nil {
			env = append(env, UnavailEnv+"="+err.Error())
		} else {
			// The last -usernat on the command line wins.
			args = append(args, "-usernat", bin)
		}
	}
	cmd, err := reexec(args, env)
	if err != nil {
		log.Print(err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		log.Print(err)
		return 1
	}
	// unshare execs this program, so the child is the inner run: pass it
	// SIGTERM, and outlive it on SIGINT (which the terminal sends to both)
	// to remove the build directory after it has cleaned up.
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigc:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ee.ExitCode() < 0 {
				return ExitInterrupt
			}
			return ee.ExitCode()
		}
		log.Print(err)
		return 1
	}
	return 0
}
