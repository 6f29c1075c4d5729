package main

import (
	"io"
	"net/netip"
	"reflect"
	"strings"
	"unicode"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/internal/api"
)

// backend serves the API socket from a running gateway.
type backend struct {
	br     *bridge.Bridge
	gw     gatewayHandle
	pub    publisher
	subnet netip.Prefix
	uplink netip.Addr
	dns    netip.Addr // the host-socket uplink's DNS address (--dns), no container's; invalid for none
	guest  netip.Addr // the container a request without guest_addr publishes to, if there is one (defaultGuest)
}

// defaultGuest is the container address a published port goes to when a
// request names none, as slirp4netns's default guest (10.0.2.100) is: the
// address of the one --port given one. With none, or several, a request
// must name its container.
func defaultGuest(ports []portSpec) netip.Addr {
	var guest netip.Addr
	for _, p := range ports {
		if p.Addr.IsValid() {
			if guest.IsValid() {
				return netip.Addr{}
			}
			guest = p.Addr.Addr()
		}
	}
	return guest
}

var (
	_ api.Backend   = (*backend)(nil)
	_ api.Inspector = (*backend)(nil)
)

func (b *backend) AddHostFwd(f api.HostFwd) (int, error) {
	if !f.GuestAddr.IsValid() {
		f.GuestAddr = b.guest // Podman's requests have guest_addr "", RootlessKit's may
	}
	if err := checkFwd(f, b.subnet, b.uplink, b.dns); err != nil {
		return 0, err
	}
	return b.pub.Publish(f)
}

func (b *backend) ListHostFwd() ([]api.HostFwd, error) { return b.pub.List(), nil }

func (b *backend) RemoveHostFwd(id int) error { return b.pub.Unpublish(id) }

func (b *backend) ConntrackList(w io.Writer) error { return b.gw.Table().WriteList(w, true) }

func (b *backend) ConntrackFlush() (int, error) { return b.gw.Table().Flush(), nil }

func (b *backend) NATList(w io.Writer) error { return b.gw.WriteRules(w) }

func (b *backend) FDBList(w io.Writer) error { return b.br.WriteFDB(w) }

func (b *backend) Stats() (map[string]uint64, error) {
	m := map[string]uint64{}
	b.gw.Stats(m)
	addCounters(m, "conntrack", b.gw.Table().Stats())
	for _, p := range b.br.Ports() {
		addCounters(m, "port."+p.Name(), p.Counters())
		addKernelCounters(m, "port."+p.Name()+".kernel", p.Port())
	}
	m["bridge.fdb_entries"] = uint64(len(b.br.FDB()))
	m["bridge.fdb_full"] = b.br.FDBFull()
	return m, nil
}

// addKernelCounters adds the frames a port's device lost on its side,
// which the bridge's counters cannot show, when the port has a device
// (bridge.KernelCounter). When they cannot be read (no CAP_NET_ADMIN over
// the device's namespace, a device renamed), prefix.unreadable says so,
// rather than drops no one counted.
func addKernelCounters(m map[string]uint64, prefix string, p bridge.Port) {
	kc, ok := p.(bridge.KernelCounter)
	if !ok {
		return
	}
	if c, err := kc.KernelCounters(); err == nil {
		addCounters(m, prefix, c)
	} else {
		m[prefix+".unreadable"] = 1
	}
}

// addCounters adds the integer fields of the struct v to m, named
// prefix.field_name (DropMalformed becomes drop_malformed), so the
// counters of every package show without a list to keep in step.
func addCounters(m map[string]uint64, prefix string, v any) {
	rv := reflect.ValueOf(v)
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		var n uint64
		switch fv := rv.Field(i); fv.Kind() {
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			n = fv.Uint()
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if fv.Int() < 0 {
				continue
			}
			n = uint64(fv.Int())
		default:
			continue
		}
		m[prefix+"."+snake(f.Name)] = n
	}
}

// snake turns a Go name into snake case: ICMPSent is icmp_sent, IPv4Frags
// ipv4_frags.
func snake(s string) string {
	r := []rune(strings.ReplaceAll(s, "IPv", "Ipv"))
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 &&
			(unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}
