package benchkit_test

import (
	"fmt"
	"os/exec"

	"github.com/usernat/usernat/internal/benchkit"
)

// A Tail keeps the end of a process's output for an error message.
func ExampleTail() {
	var out benchkit.Tail
	cmd := exec.Command("sh", "-c", "echo starting; echo 'no such device' >&2; exit 1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		fmt.Printf("%v%s\n", err, out.Suffix())
	}
	// Output: exit status 1; output: starting no such device
}
