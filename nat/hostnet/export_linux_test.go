package hostnet

import "testing"

// ExhaustFDs is exhaustFDs, for the integration tests: the process's next
// socket() or open() fails with EMFILE until restore.
func ExhaustFDs(t *testing.T) (restore func()) { return exhaustFDs(t) }

// DropCount is dropCount, for the integration tests: the sum of the
// uplink's drop counters.
func DropCount(u *Uplink) uint64 { return dropCount(u) }
