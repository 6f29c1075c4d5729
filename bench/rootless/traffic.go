package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/usernat/usernat/internal/benchkit"
)

// The clients and servers are benchkit's, in any benchkit.Place, with a UDP server
// too; one published port of each protocol carries every measurement.

const (
	probeTimeout  = 10 * time.Second
	probeInterval = 250 * time.Millisecond
)

// probe asks the server at dst, from inside from, which address it sees
// the client at, over TCP or UDP, retrying while the path settles. It
// also warms up the path before anything is timed.
func probe(ctx context.Context, from benchkit.Place, network string, dst netip.AddrPort) (netip.Addr, error) {
	ask := benchkit.AskPeer
	if network == "udp" {
		ask = benchkit.AskPeerUDP
	}
	deadline := time.Now().Add(probeTimeout)
	var err error
	for {
		var peer string
		peer, err = ask(ctx, from, dst)
		if err == nil {
			a, perr := netip.ParseAddr(peer)
			if perr != nil {
				return netip.Addr{}, fmt.Errorf("%s server at %s answered %q", network, dst, peer)
			}
			return a, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(probeInterval)
	}
	return netip.Addr{}, fmt.Errorf("%s %s unreachable: %w", network, dst, benchkit.CtxErr(ctx, err))
}
