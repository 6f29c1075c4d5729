package netns

import (
	"errors"
	"os"
	"os/exec"
)

// Reexec returns the command that runs this program again, with args, in
// a private network namespace of its own (`unshare --net`, from
// util-linux), with this process's environment plus env and its standard
// streams. Programs that must not send a packet outside namespaces they
// create (the benchmarks, the experiment) run themselves this way and mark
// the inner run through env.
func Reexec(args []string, env ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--", self}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
	return cmd, nil
}

// RunReexec runs Reexec's command to its end and returns its exit code;
// the error says why it could not run at all.
func RunReexec(args []string, env ...string) (int, error) {
	cmd, err := Reexec(args, env...)
	if err != nil {
		return 0, err
	}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), nil
		}
		return 0, err
	}
	return 0, nil
}

// EnsurePrivate returns at once in a private network namespace. Elsewhere,
// in the first run (env, the mark Reexec's inner run gets, unset), it runs
// the program again under `unshare --net` and exits with its status; in
// an inner run that is somehow not private, it returns CheckPrivate's
// error.
func EnsurePrivate(env string) error {
	err := CheckPrivate()
	if err == nil || os.Getenv(env) != "" {
		return err
	}
	code, err := RunReexec(os.Args[1:], env+"=1")
	if err != nil {
		return err
	}
	os.Exit(code)
	return nil
}
