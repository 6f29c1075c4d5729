package hostnet

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// processCPU is the CPU time, user and system, the test process has used.
func processCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A table closed while the uplink attached to it lives on (its owner
// closes them in that order, or nat.New failed after Attach and closed
// its table) closes the uplink's subscription to its events: the uplink
// waits for Close without spinning on the closed channel (it took a
// whole CPU until then).
func TestReapTableClosedFirst(t *testing.T) {
	_, tbl := outboundUplink(t)
	tbl.Close()
	time.Sleep(10 * time.Millisecond) // the reaper sees the channel closed
	const window = 300 * time.Millisecond
	before := processCPU(t)
	time.Sleep(window)
	if used := processCPU(t) - before; used > window/3 {
		t.Errorf("the process used %v of CPU in %v with nothing to do: something spins", used, window)
	}
}
