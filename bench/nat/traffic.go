package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/usernat/usernat/internal/benchkit"
	"github.com/usernat/usernat/internal/netns"
)

// The clients and servers are benchkit's; one published port carries
// every measurement.

const (
	probeTimeout  = 10 * time.Second
	probeAttempts = 40
)

// probe checks that from reaches dst and that the server there sees the
// connection come from wantPeer, retrying while ARP and the gateway
// settle. It also warms up both paths before anything is timed.
func probe(ctx context.Context, from *netns.NS, dst netip.AddrPort, wantPeer netip.Addr) error {
	deadline := time.Now().Add(probeTimeout)
	var err error
	for range probeAttempts {
		var peer string
		peer, err = benchkit.AskPeer(ctx, from, dst)
		if err == nil {
			if peer != wantPeer.String() {
				return fmt.Errorf("the server at %s saw the client as %s, want %s", dst, peer, wantPeer)
			}
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s unreachable: %w", dst, benchkit.CtxErr(ctx, err))
}
