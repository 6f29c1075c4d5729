package topo

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/usernat/usernat/internal/netns"
)

// New that fails part way returns its error and undoes what it built: it
// panicked, closing the nil Topo its error return had set.
func TestIntegrationNewUndo(t *testing.T) {
	netns.RequirePrivileged(t)
	before := runtime.NumGoroutine()
	tp, err := New(Config{Containers: []netip.Prefix{Web, {}}}) // the second container's address fails
	if err == nil || tp != nil {
		t.Fatalf("New = %v, %v; want nil and an error", tp, err)
	}
	// The first container's port and the bridge are closed: their
	// goroutines end.
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d goroutines after the failed New, %d before", runtime.NumGoroutine(), before)
		}
	}
}
