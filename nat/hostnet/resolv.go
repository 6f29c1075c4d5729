package hostnet

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// resolvConfPath is the host's resolver configuration (a variable for
// tests).
var resolvConfPath = "/etc/resolv.conf"

// SystemResolver is where Config.DNS's queries go when Config.Resolver is
// not set: the first IPv4 nameserver of /etc/resolv.conf, port 53.
func SystemResolver() (netip.AddrPort, error) {
	ns, err := resolvConf(resolvConfPath)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ns, 53), nil
}

// resolvConf returns the first IPv4 nameserver of the resolv.conf file at
// path, the one the host's own lookups try first.
func resolvConf(path string) (netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return netip.Addr{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// An IPv6 nameserver may carry a zone; the uplink is IPv4.
		if a, err := netip.ParseAddr(fields[1]); err == nil && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, err
	}
	return netip.Addr{}, fmt.Errorf("%s: %w", path, errNoNameserver)
}

var errNoNameserver = errors.New("no IPv4 nameserver")
