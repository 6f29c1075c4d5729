package bridge

import (
	"testing"

	"go.uber.org/goleak"
)

// No goroutine may outlive the Close of the bridge, port or capture that
// started it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
