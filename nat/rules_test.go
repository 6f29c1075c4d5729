package nat

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/usernat/usernat/conntrack"
)

// must returns a function that fails t on an error of Add.
func must(t *testing.T) func(RuleID, error) RuleID {
	return func(id RuleID, err error) RuleID {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
}

// The golden files are what iptables 1.8.9 (legacy) and ip6tables 1.8.9
// (nf_tables) print with `-t nat -L -n` for the rules Docker installs for
// the same configuration, made in a private network namespace, with the
// protocol numbers iptables 1.8.8 and later print under -n put back as the
// names earlier versions printed (0 → all, 6 → tcp, 17 → udp).
func TestWriteListGolden(t *testing.T) {
	var r Rules
	must(t)(r.AddMasquerade(Masquerade{Subnet: netip.MustParsePrefix("172.17.0.0/16")}))
	must(t)(r.AddMasquerade(Masquerade{Subnet: netip.MustParsePrefix("10.0.0.0/8"), To: host4, Random: true}))
	must(t)(r.AddMasquerade(Masquerade{Subnet: netip.MustParsePrefix("fd00:1111::/64")}))
	for _, s := range []string{
		"8080:172.17.0.4:80",
		"192.168.2.116:5000-5005:172.17.0.5:6000-6005/udp",
		"9000-9001:172.17.0.6:9999/tcp",
		"[2001:db8::1]:8080:[fd00:1111::4]:80",
	} {
		p, err := ParsePublish(s)
		if err != nil {
			t.Fatal(err)
		}
		must(t)(r.AddPublish(p))
	}
	for _, tc := range []struct {
		file  string
		write func(*Rules, *bytes.Buffer) error
	}{
		{"testdata/iptables.golden", func(r *Rules, b *bytes.Buffer) error { return r.WriteList(b) }},
		{"testdata/ip6tables.golden", func(r *Rules, b *bytes.Buffer) error { return r.WriteList6(b) }},
	} {
		want, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := tc.write(&r, &got); err != nil {
			t.Fatal(err)
		}
		if got.String() != string(want) {
			t.Errorf("%s: listing differs\n got:\n%s\nwant:\n%s", tc.file, strings.ReplaceAll(got.String(), " \n", "·\n"), strings.ReplaceAll(string(want), " \n", "·\n"))
		}
	}
}

func TestWriteListEmpty(t *testing.T) {
	var r Rules
	var b bytes.Buffer
	if err := r.WriteList(&b); err != nil {
		t.Fatal(err)
	}
	want := "Chain PREROUTING (policy ACCEPT)\n" +
		"target     prot opt source               destination         \n" +
		"DOCKER     all  --  0.0.0.0/0            0.0.0.0/0            ADDRTYPE match dst-type LOCAL\n\n" +
		"Chain INPUT (policy ACCEPT)\n" +
		"target     prot opt source               destination         \n\n" +
		"Chain OUTPUT (policy ACCEPT)\n" +
		"target     prot opt source               destination         \n\n" +
		"Chain POSTROUTING (policy ACCEPT)\n" +
		"target     prot opt source               destination         \n\n" +
		"Chain DOCKER (1 references)\n" +
		"target     prot opt source               destination         \n"
	if b.String() != want {
		t.Errorf("got:\n%q\nwant:\n%q", b.String(), want)
	}
}

func TestParsePublish(t *testing.T) {
	c := netip.MustParseAddr
	for _, tc := range []struct {
		in   string
		want Publish
		err  string // part of the error, "" for none
	}{
		{in: "8080:172.17.0.4:80", want: Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8080}, ContainerAddr: c("172.17.0.4"), ContainerPorts: PortRange{80, 80}}},
		{in: "192.168.2.116:8080:172.17.0.4:80/udp", want: Publish{HostAddr: host4, Proto: conntrack.ProtoUDP, HostPorts: PortRange{8080, 8080}, ContainerAddr: c("172.17.0.4"), ContainerPorts: PortRange{80, 80}}},
		{in: "0.0.0.0:8080:172.17.0.4:80/TCP", want: Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8080}, ContainerAddr: c("172.17.0.4"), ContainerPorts: PortRange{80, 80}}},
		{in: "8080-8085:172.17.0.4:80-85", want: Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8085}, ContainerAddr: c("172.17.0.4"), ContainerPorts: PortRange{80, 85}}},
		{in: "8080-8085:172.17.0.4:80", want: Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8085}, ContainerAddr: c("172.17.0.4"), ContainerPorts: PortRange{80, 80}}},
		{in: "[2001:db8::1]:8080:[fd00::4]:80/udp", want: Publish{HostAddr: c("2001:db8::1"), Proto: conntrack.ProtoUDP, HostPorts: PortRange{8080, 8080}, ContainerAddr: c("fd00::4"), ContainerPorts: PortRange{80, 80}}},
		{in: "[::]:443:[fd00::4]:8443", want: Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{443, 443}, ContainerAddr: c("fd00::4"), ContainerPorts: PortRange{8443, 8443}}},
		{in: "65535:172.17.0.4:1", want: Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{65535, 65535}, ContainerAddr: c("172.17.0.4"), ContainerPorts: PortRange{1, 1}}},

		{in: "", err: "want [HOSTADDR:]"},
		{in: "8080:80", err: "want [HOSTADDR:]"},
		{in: "1.2.3.4:8080:172.17.0.4:80:9", err: "want [HOSTADDR:]"},
		{in: "8080:172.17.0.4:80/sctp", err: `protocol "sctp"`},
		{in: "0:172.17.0.4:80", err: `host port: "0" is not a port`},
		{in: "65536:172.17.0.4:80", err: `host port: "65536" is not a port`},
		{in: "http:172.17.0.4:80", err: `host port: "http" is not a port`},
		{in: "8085-8080:172.17.0.4:80", err: "ends before it starts"},
		{in: "8080-8085:172.17.0.4:80-82", err: "6 host ports for 3 container ports"},
		{in: "8080:172.17.0.4:", err: `container port: "" is not a port`},
		{in: "8080::80", err: "missing container address"},
		{in: "8080:container:80", err: `container address: "container" is not an IP address`},
		{in: "8080:0.0.0.0:80", err: "bad container address"},
		{in: "2001:db8::1:8080:[fd00::4]:80", err: "want [HOSTADDR:]"},
		{in: "8080:fd00::4:80", err: "want [HOSTADDR:]"},
		{in: "[1.2.3.4]:8080:172.17.0.4:80", err: "IPv4 address 1.2.3.4 in brackets"},
		{in: "[2001:db8::1:8080:[fd00::4]:80", err: "misplaced '['"},
		{in: "[2001:db8::1]x:8080:[fd00::4]:80", err: "misplaced ']'"},
		{in: "[2001:db8::1:8080", err: "unclosed '['"},
		{in: "192.168.2.116:8080:[fd00::4]:80", err: "does not fit container address"},
		{in: "0.0.0.0:8080:[fd00::4]:80", err: "does not fit container address"},
		{in: "[fe80::1%eth0]:8080:[fd00::4]:80", err: "has a zone"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePublish(tc.in)
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrBadRule) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			again, err := ParsePublish(got.String())
			if err != nil || again != got {
				t.Fatalf("String %q parses to %+v, %v", got.String(), again, err)
			}
		})
	}
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"8080:172.17.0.4:80", "[2001:db8::1]:8080-8090:[fd00::4]:80-90/udp", "1.2.3.4:1:5.6.7.8:2/tcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublish(s)
		if err != nil {
			if !errors.Is(err, ErrBadRule) {
				t.Fatalf("error %v does not wrap ErrBadRule", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed an invalid rule: %v", err)
		}
		again, err := ParsePublish(p.String())
		if err != nil || again != p {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, p, p.String(), again, err)
		}
	})
}

func TestMatchPublish(t *testing.T) {
	var r Rules
	anyRule := must(t)(r.AddPublish(Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8080}, ContainerAddr: cont4, ContainerPorts: PortRange{80, 80}}))
	rng := must(t)(r.AddPublish(Publish{HostAddr: host4, Proto: conntrack.ProtoUDP, HostPorts: PortRange{5000, 5005}, ContainerAddr: cont4, ContainerPorts: PortRange{6000, 6005}}))
	v6 := must(t)(r.AddPublish(Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8080}, ContainerAddr: cont6}))
	for _, tc := range []struct {
		name  string
		orig  conntrack.Tuple
		local bool
		id    RuleID
		to    netip.AddrPort
	}{
		{"published", tup(client4, host4, 52140, 8080, conntrack.ProtoTCP), true, anyRule, netip.AddrPortFrom(cont4, 80)},
		{"not local", tup(client4, router4, 52140, 8080, conntrack.ProtoTCP), false, 0, netip.AddrPort{}},
		{"other port", tup(client4, host4, 52140, 8081, conntrack.ProtoTCP), true, 0, netip.AddrPort{}},
		{"other proto", tup(client4, host4, 52140, 8080, conntrack.ProtoUDP), true, 0, netip.AddrPort{}},
		{"range start", tup(client4, host4, 1, 5000, conntrack.ProtoUDP), true, rng, netip.AddrPortFrom(cont4, 6000)},
		{"range middle", tup(client4, host4, 1, 5003, conntrack.ProtoUDP), false, rng, netip.AddrPortFrom(cont4, 6003)},
		{"range other host address", tup(client4, router4, 1, 5003, conntrack.ProtoUDP), true, 0, netip.AddrPort{}},
		{"ipv6", tup(client6, host6, 1, 8080, conntrack.ProtoTCP), true, v6, netip.AddrPortFrom(cont6, 8080)},
		{"icmp", conntrack.ICMPTuple(client4, host4, 8, 0, 1), true, 0, netip.AddrPort{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, id, ok := r.MatchPublish(tc.orig, tc.local)
			if ok != (tc.id != 0) || id != tc.id {
				t.Fatalf("matched rule %d (%v), want %d", id, ok, tc.id)
			}
			if ok && (m.DstAddr != tc.to.Addr() || m.DstPorts != (PortRange{tc.to.Port(), tc.to.Port()}) || m.SrcAddr.IsValid()) {
				t.Fatalf("mapping %+v, want DNAT to %v", m, tc.to)
			}
		})
	}
	if !r.Remove(anyRule) || r.Remove(anyRule) {
		t.Fatal("Remove did not remove once")
	}
	if _, _, ok := r.MatchPublish(tup(client4, host4, 52140, 8080, conntrack.ProtoTCP), true); ok {
		t.Fatal("removed rule still matches")
	}
}

// AddPublish and CheckPublish refuse the same rules.
func TestAddPublishConflict(t *testing.T) {
	var r Rules
	base := Publish{HostAddr: host4, Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8090}, ContainerAddr: cont4, ContainerPorts: PortRange{80, 80}}
	must(t)(r.AddPublish(base))
	for _, tc := range []struct {
		name string
		edit func(*Publish)
		err  error
	}{
		{"same", func(p *Publish) {}, ErrRuleConflict},
		{"overlap, any address", func(p *Publish) { p.HostAddr, p.HostPorts = netip.Addr{}, PortRange{8090, 9000} }, ErrRuleConflict},
		{"other address", func(p *Publish) { p.HostAddr = router4 }, nil},
		{"other proto", func(p *Publish) { p.Proto = conntrack.ProtoUDP }, nil},
		{"other ports", func(p *Publish) { p.HostPorts = PortRange{8091, 8095} }, nil},
		{"other family", func(p *Publish) { p.HostAddr, p.ContainerAddr = netip.Addr{}, cont6 }, nil},
		{"bad proto", func(p *Publish) { p.Proto = conntrack.ProtoICMP; p.HostPorts = PortRange{1, 1} }, ErrBadRule},
		{"bad ports", func(p *Publish) { p.HostPorts = PortRange{20, 10} }, ErrBadRule},
		{"unspecified address, normalised", func(p *Publish) { p.HostAddr = netip.IPv4Unspecified() }, ErrRuleConflict},
		{"container ports unset, normalised", func(p *Publish) { p.ContainerPorts = PortRange{} }, ErrRuleConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			tc.edit(&p)
			// CheckPublish gives AddPublish's answer and adds nothing.
			if err := r.CheckPublish(p); !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("CheckPublish: error %v, want %v", err, tc.err)
			}
			if n := len(r.Publishes()); n != 1 {
				t.Fatalf("%d rules after CheckPublish, want 1", n)
			}
			id, err := r.AddPublish(p)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err == nil {
				r.Remove(id)
			}
		})
	}
}

func TestMatchMasquerade(t *testing.T) {
	var r Rules
	sub := must(t)(r.AddMasquerade(Masquerade{Subnet: netip.MustParsePrefix("172.17.0.0/16")}))
	fixed := must(t)(r.AddMasquerade(Masquerade{Subnet: netip.MustParsePrefix("fd00:1111::/32"), To: host6, Ports: PortRange{2000, 3000}, Random: true}))
	m, id, ok := r.MatchMasquerade(tup(cont4, client4, 1, 2, conntrack.ProtoUDP), host4)
	if !ok || id != sub || m.SrcAddr != host4 || m.DstAddr.IsValid() {
		t.Fatalf("masquerade: %+v %d %v", m, id, ok)
	}
	m, id, ok = r.MatchMasquerade(tup(cont6, client6, 1, 2, conntrack.ProtoUDP), netip.Addr{})
	if !ok || id != fixed || m.SrcAddr != host6 || m.SrcPorts != (PortRange{2000, 3000}) || !m.Random {
		t.Fatalf("snat: %+v %d %v", m, id, ok)
	}
	if _, _, ok := r.MatchMasquerade(tup(router4, client4, 1, 2, conntrack.ProtoUDP), host4); ok {
		t.Fatal("matched a source outside the subnet")
	}
	if _, _, ok := r.MatchMasquerade(tup(cont4, client4, 1, 2, conntrack.ProtoUDP), netip.Addr{}); ok {
		t.Fatal("masqueraded without an uplink address")
	}
	if _, err := r.AddMasquerade(Masquerade{Subnet: netip.MustParsePrefix("10.0.0.0/8"), To: host6}); !errors.Is(err, ErrBadRule) {
		t.Fatalf("mixed families: %v", err)
	}
}

// Rules change while packets are matched: readers never see a torn table.
func TestRulesConcurrent(t *testing.T) {
	var r Rules
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			orig := tup(client4, host4, 1, 8080, conntrack.ProtoTCP)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if m, _, ok := r.MatchPublish(orig, true); ok && m.DstAddr != cont4 {
					t.Error("torn rule")
					return
				}
				r.Publishes()
			}
		})
	}
	for range 500 {
		id, err := r.AddPublish(Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8080}, ContainerAddr: cont4, ContainerPorts: PortRange{80, 80}})
		if err != nil {
			t.Fatal(err)
		}
		r.Remove(id)
	}
	close(stop)
	wg.Wait()
}

func TestMatchPublishAllocs(t *testing.T) {
	var r Rules
	must(t)(r.AddPublish(Publish{Proto: conntrack.ProtoTCP, HostPorts: PortRange{8080, 8080}, ContainerAddr: cont4, ContainerPorts: PortRange{80, 80}}))
	must(t)(r.AddMasquerade(Masquerade{Subnet: netip.MustParsePrefix("172.17.0.0/16")}))
	orig := tup(client4, host4, 1, 8080, conntrack.ProtoTCP)
	if n := testing.AllocsPerRun(100, func() {
		r.MatchPublish(orig, true)
		r.MatchMasquerade(orig, host4)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// A masquerade rule's port range is refused when empty or when it holds
// port 0, which is no port (a flow masqueraded to it could not be
// answered); the zero range is Linux's choice and stays valid.
func TestMasqueradePortsValidate(t *testing.T) {
	sub := netip.MustParsePrefix("172.17.0.0/16")
	for _, c := range []struct {
		ports PortRange
		ok    bool
	}{
		{PortRange{}, true},
		{PortRange{1, 1}, true},
		{PortRange{2000, 3000}, true},
		{PortRange{0, 100}, false},
		{PortRange{3000, 2000}, false},
	} {
		err := Masquerade{Subnet: sub, Ports: c.ports}.Validate()
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrBadRule) {
			t.Errorf("ports %d-%d: %v, want ok %v", c.ports.First, c.ports.Last, err, c.ok)
		}
	}
}
