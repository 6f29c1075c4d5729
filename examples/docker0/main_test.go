package main

import (
	"strings"
	"testing"

	"github.com/usernat/usernat/internal/netns"
)

// TestIntegrationDocker0 runs the whole experiment, as the command does.
func TestIntegrationDocker0(t *testing.T) {
	netns.RequirePrivileged(t)
	var out strings.Builder
	ok, err := run(&out)
	t.Log("\n" + out.String())
	if err != nil || !ok {
		t.Fatalf("experiment failed: %v", err)
	}
	if strings.Count(out.String(), "[ok  ]") < 12 {
		t.Fatal("fewer checks than expected ran")
	}
}
