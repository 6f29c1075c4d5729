package benchkit

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/usernat/usernat/internal/netns"
)

// Place is a network namespace that code can run in: a *netns.NS this
// process created, or one another process created and this one holds open
// by path.
type Place interface {
	Do(fn func() error) error
}

var _ Place = (*netns.NS)(nil)

// Listen is net.Listen inside in.
func Listen(in Place, network, addr string) (l net.Listener, err error) {
	err = in.Do(func() error {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// Dial connects over TCP from inside from, giving up after DialTimeout.
func Dial(ctx context.Context, from Place, dst netip.AddrPort) (c net.Conn, err error) {
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	err = from.Do(func() error {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", dst.String())
		return err
	})
	return c, err
}

// Sysctl writes a value under /proc/sys/net in ns. /proc/sys/net shows
// the network namespace of the calling thread, which Do sets.
func Sysctl(ns Place, name, value string) error {
	path := "/proc/sys/net/" + name
	return ns.Do(func() error {
		if err := os.WriteFile(path, []byte(value+"\n"), 0); err != nil {
			return fmt.Errorf("sysctl %s: %w", path, err)
		}
		return nil
	})
}
