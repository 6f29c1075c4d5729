package hostnet

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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
	return ns[0], nil
}

// maxNS is how many nameservers of resolv.conf are used, as glibc's
// MAXNS.
const maxNS = 3

// resolvConf returns the IPv4 nameservers of the resolv.conf file at
// path, port 53, in the order the host's own lookups try them, at most
// maxNS; at least one, else an error.
func resolvConf(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ns []netip.AddrPort
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(ns) < maxNS {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// An IPv6 nameserver may carry a zone; the uplink is IPv4.
		if a, err := netip.ParseAddr(fields[1]); err == nil && a.Unmap().Is4() {
			ns = append(ns, netip.AddrPortFrom(a.Unmap(), 53))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("%s: %w", path, ErrNoNameserver)
	}
	return ns, nil
}

// ErrNoNameserver is SystemResolver's error when resolv.conf names no IPv4
// nameserver. New takes such a file, or none at all, for 127.0.0.1:53.
var ErrNoNameserver = errors.New("no IPv4 nameserver")

// resolvWatch is the resolver read from resolv.conf, read again when the
// file has changed (checked at most once a second), as libslirp's
// get_dns_addr does: the host's resolver moves with its network. Of the
// file's nameservers it uses one at a time, the first at first, and
// moves to the next when the one in use fails (fail), as the host's own
// lookups try the next: a container knows only the DNS address, and
// cannot.
type resolvWatch struct {
	path     string
	mu       sync.Mutex
	addrs    []netip.AddrPort
	cur      int
	failedAt time.Time    // when the first was last left
	answered int64        // when the one in use last answered a flow, unix ns
	inUse    atomic.Int64 // since when the one in use is, unix ns (0: from the start); set under mu
	fi       os.FileInfo
	checked  time.Time
}

// failBack is how long the next nameserver stands in for the first after
// the first failed: glibc's lookups try the first again at each query;
// this tries it again after a while, so a blip does not keep every
// container on the second (which may not know the first's names).
const failBack = 30 * time.Second

// newResolvWatch watches path, whose first nameserver is first (or, when
// the file has none, the one used until it has). A file that names
// another first now was rewritten since first was read from it: it is
// read again at the first check, not taken as seen.
func newResolvWatch(path string, first netip.AddrPort) *resolvWatch {
	fi, _ := os.Stat(path)
	w := &resolvWatch{path: path, addrs: []netip.AddrPort{first}, fi: fi, checked: time.Now()}
	switch ns, err := resolvConf(path); {
	case err == nil && ns[0] == first:
		w.addrs = ns
	case err == nil:
		w.fi = nil
	}
	return w
}

// get returns the resolver in use, the last one found when the file has
// none.
func (w *resolvWatch) get() netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur != 0 && time.Since(w.failedAt) >= failBack {
		w.cur, w.answered = 0, 0
		w.inUse.Store(time.Now().UnixNano())
	}
	if time.Since(w.checked) < time.Second {
		return w.addrs[w.cur]
	}
	w.checked = time.Now()
	fi, err := os.Stat(w.path)
	if err != nil || w.fi != nil && os.SameFile(fi, w.fi) && fi.Size() == w.fi.Size() && fi.ModTime().Equal(w.fi.ModTime()) {
		return w.addrs[w.cur]
	}
	switch ns, err := resolvConf(w.path); {
	case err == nil:
		w.fi = fi
		w.addrs, w.cur, w.answered = ns, 0, 0
		w.inUse.Store(time.Now().UnixNano())
	case errors.Is(err, ErrNoNameserver):
		w.fi = fi // read, and names none: the last one found stays
	default:
		// Not read (out of descriptors, say): the file is read again
		// at the next check, not taken as seen.
	}
	return w.addrs[w.cur]
}

// fail reports that the resolver bad did not answer: if it is the one in
// use, the next nameserver is (the first again after the last), and fail
// returns it; else, or with one nameserver, it returns bad's successor
// already chosen, or bad itself.
func (w *resolvWatch) fail(bad netip.AddrPort) (next netip.AddrPort) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.addrs[w.cur] == bad {
		w.cur = (w.cur + 1) % len(w.addrs)
		w.failedAt, w.answered = time.Now(), 0
		w.inUse.Store(time.Now().UnixNano())
	}
	return w.addrs[w.cur]
}

// since returns since when the resolver in use is (unix ns): a flow's
// silence, or an error its host reported, from before then was of
// another resolver, or of this one before it failed and came back. It
// takes no lock: every DNS query asks.
func (w *resolvWatch) since() int64 { return w.inUse.Load() }

// answer notes that the resolver r answered a flow at now (unix ns).
func (w *resolvWatch) answer(r netip.AddrPort, now int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.addrs[w.cur] == r {
		w.answered = now
	}
}

// silentSince reports whether the resolver r, in use since since or
// before, has answered no flow since then (unix ns): one flow's query it
// left unanswered (dropped, malformed, slow) says nothing of the rest.
func (w *resolvWatch) silentSince(r netip.AddrPort, since int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addrs[w.cur] == r && since >= w.inUse.Load() && w.answered < since
}
