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

// The masqueraded flow's check wants its whole entry on one line: the
// container's original tuple to the client's 9000 and the reply to the
// host's address. Checked by halves, it passed for a table whose entry had
// lost the container's address, since the published flow's reply tuple
// also reads "src=172.17.0.4 dst=192.168.2.104".
func TestMasqueradedCheck(t *testing.T) {
	published := "tcp      6 120 TIME_WAIT src=192.168.2.104 dst=192.168.2.116 sport=44632 dport=8080 src=172.17.0.4 dst=192.168.2.104 sport=80 dport=44632 [ASSURED]\n"
	right := "tcp      6 120 TIME_WAIT src=172.17.0.4 dst=192.168.2.104 sport=51732 dport=9000 src=192.168.2.104 dst=192.168.2.116 sport=9000 dport=51732 [ASSURED]\n"
	translated := "tcp      6 120 TIME_WAIT src=192.168.2.116 dst=192.168.2.104 sport=51732 dport=9000 src=192.168.2.104 dst=192.168.2.116 sport=9000 dport=51732 [ASSURED]\n"
	if !masqueraded.MatchString(published + right) {
		t.Error("the right entry does not match")
	}
	if masqueraded.MatchString(published + translated) {
		t.Error("an entry without the container's address matches")
	}
}
