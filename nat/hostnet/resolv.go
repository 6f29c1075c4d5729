package hostnet

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
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

// resolvWatch is the resolver read from resolv.conf, read again when the
// file has changed (checked at most once a second), as libslirp's
// get_dns_addr does: the host's resolver moves with its network.
type resolvWatch struct {
	path    string
	mu      sync.Mutex
	addr    netip.AddrPort
	fi      os.FileInfo
	checked time.Time
}

func newResolvWatch(path string, first netip.AddrPort) *resolvWatch {
	fi, _ := os.Stat(path)
	return &resolvWatch{path: path, addr: first, fi: fi, checked: time.Now()}
}

// get returns the resolver, the last one found when the file has none.
func (w *resolvWatch) get() netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	if time.Since(w.checked) < time.Second {
		return w.addr
	}
	w.checked = time.Now()
	fi, err := os.Stat(w.path)
	if err != nil || w.fi != nil && os.SameFile(fi, w.fi) && fi.Size() == w.fi.Size() && fi.ModTime().Equal(w.fi.ModTime()) {
		return w.addr
	}
	w.fi = fi
	if ns, err := resolvConf(w.path); err == nil {
		w.addr = netip.AddrPortFrom(ns, 53)
	}
	return w.addr
}
