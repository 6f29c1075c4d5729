package hostnet

import "testing"

// ExhaustFDs is exhaustFDs, for the integration tests: the process's next
// socket() or open() fails with EMFILE until restore.
func ExhaustFDs(t *testing.T) (restore func()) { return exhaustFDs(t) }
