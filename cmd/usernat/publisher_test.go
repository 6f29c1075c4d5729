package main

import (
	"net/netip"
	"testing"

	"github.com/usernat/usernat/nat"
)

// natRulesForTest is a rule table with Docker's masquerade rule, as the
// gateway makes it, behind the command's publisher.
type natRulesForTest struct {
	r    nat.Rules
	masq int
}

func (n *natRulesForTest) publisher(t *testing.T) publisher {
	id, err := n.r.AddMasquerade(nat.Masquerade{Subnet: netip.MustParsePrefix("172.17.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	n.masq = int(id)
	return newPublisher(&n.r)
}
