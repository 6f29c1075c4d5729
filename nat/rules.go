package nat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/usernat/usernat/conntrack"
)

// Errors of the rule table.
var (
	// ErrBadRule: a rule, or its command-line form, is not valid.
	ErrBadRule = errors.New("nat: bad rule")
	// ErrRuleConflict: a publish rule claims a host address, protocol and
	// port that another rule already publishes.
	ErrRuleConflict = errors.New("nat: port already published")
)

// RuleID identifies a rule of a Rules table. IDs start at 1 and are never
// reused by the table.
type RuleID uint64

// Publish is a published port range, a DNAT rule: packets to HostAddr
// (any address of the gateway if unset) and a port in HostPorts go to
// ContainerAddr, at the port of ContainerPorts in the same position, or at
// its single port.
type Publish struct {
	// ID is set by Rules.AddPublish; it is ignored on input.
	ID RuleID
	// HostAddr is the host address the rule applies to; the zero Addr
	// (and 0.0.0.0 or :: when parsed) means every address of the gateway
	// in ContainerAddr's family, like Docker's -p 8080:80.
	HostAddr netip.Addr
	// Proto is conntrack.ProtoTCP or conntrack.ProtoUDP.
	Proto          conntrack.Proto
	HostPorts      PortRange
	ContainerAddr  netip.Addr
	ContainerPorts PortRange
}

// Validate reports whether p is a rule a table accepts; the error wraps
// ErrBadRule.
func (p Publish) Validate() error {
	if why := p.invalid(); why != "" {
		return fmt.Errorf("%w: publish %v: %s", ErrBadRule, p, why)
	}
	return nil
}

// invalid says what is wrong with p, or "".
func (p Publish) invalid() string {
	bad := fmt.Sprintf
	switch {
	case p.Proto != conntrack.ProtoTCP && p.Proto != conntrack.ProtoUDP:
		return bad("protocol %v is not tcp or udp", p.Proto)
	case p.HostPorts.Len() == 0 || p.HostPorts.First == 0:
		return bad("bad host port range %d-%d", p.HostPorts.First, p.HostPorts.Last)
	case p.ContainerPorts.Len() == 0 || p.ContainerPorts.First == 0:
		return bad("bad container port range %d-%d", p.ContainerPorts.First, p.ContainerPorts.Last)
	case p.ContainerPorts.Len() != 1 && p.ContainerPorts.Len() != p.HostPorts.Len():
		return bad("%d host ports for %d container ports", p.HostPorts.Len(), p.ContainerPorts.Len())
	case !p.ContainerAddr.IsValid() || p.ContainerAddr.IsUnspecified() || p.ContainerAddr.Zone() != "":
		return bad("bad container address")
	case p.HostAddr.IsValid() && (p.HostAddr.Is4() != p.ContainerAddr.Is4() || p.HostAddr.IsUnspecified() || p.HostAddr.Zone() != ""):
		return bad("host address %v does not fit container address %v", p.HostAddr, p.ContainerAddr)
	case p.ContainerAddr.Is4In6() || p.HostAddr.Is4In6():
		return bad("IPv4-mapped address")
	}
	return ""
}

// String formats p in the command-line syntax ParsePublish reads.
func (p Publish) String() string {
	var b strings.Builder
	if p.HostAddr.IsValid() {
		b.WriteString(bracketed(p.HostAddr))
		b.WriteByte(':')
	}
	b.WriteString(p.HostPorts.String())
	b.WriteByte(':')
	b.WriteString(bracketed(p.ContainerAddr))
	b.WriteByte(':')
	b.WriteString(p.ContainerPorts.String())
	b.WriteByte('/')
	b.WriteString(p.Proto.String())
	return b.String()
}

func bracketed(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// ContainerPort returns the container port of host port hp, which the
// rule's HostPorts contain.
func (p *Publish) ContainerPort(hp uint16) uint16 {
	if p.ContainerPorts.Len() == 1 {
		return p.ContainerPorts.First
	}
	return p.ContainerPorts.First + (hp - p.HostPorts.First)
}

// ParsePublish parses a publish rule in the syntax of the -p flag:
//
//	[HOSTADDR:]HOSTPORT[-END]:CONTAINERADDR:CONTAINERPORT[-END][/tcp|/udp]
//
// IPv6 addresses are written in brackets ("[2001:db8::1]:8080:[fd00::4]:80");
// the protocol defaults to tcp. A host address of 0.0.0.0 or :: is the
// same as none: every address of the gateway. The container port range
// has the length of the host port range, or is a single port. The error
// wraps ErrBadRule and says what is wrong.
func ParsePublish(s string) (Publish, error) {
	bad := func(format string, args ...any) (Publish, error) {
		return Publish{}, fmt.Errorf("%w: publish %q: %s", ErrBadRule, s, fmt.Sprintf(format, args...))
	}
	p := Publish{Proto: conntrack.ProtoTCP}
	rest := s
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		switch strings.ToLower(s[i+1:]) {
		case "tcp":
		case "udp":
			p.Proto = conntrack.ProtoUDP
		default:
			return bad("protocol %q is not tcp or udp", s[i+1:])
		}
		rest = s[:i]
	}
	fields, err := splitColons(rest)
	if err != nil {
		return bad("%v", err)
	}
	var hostAddr string
	switch len(fields) {
	case 3:
	case 4:
		hostAddr, fields = fields[0], fields[1:]
	default:
		return bad("want [HOSTADDR:]HOSTPORT[-END]:CONTAINERADDR:CONTAINERPORT[-END][/tcp|/udp]")
	}
	var ha netip.Addr
	if hostAddr != "" {
		if ha, err = parseAddr(hostAddr); err != nil {
			return bad("host address: %v", err)
		}
		if !ha.IsUnspecified() {
			p.HostAddr = ha
		}
	}
	if p.HostPorts, err = parsePorts(fields[0]); err != nil {
		return bad("host port: %v", err)
	}
	if fields[1] == "" {
		return bad("missing container address")
	}
	if p.ContainerAddr, err = parseAddr(fields[1]); err != nil {
		return bad("container address: %v", err)
	}
	if p.ContainerPorts, err = parsePorts(fields[2]); err != nil {
		return bad("container port: %v", err)
	}
	if ha.IsValid() && ha.Is4() != p.ContainerAddr.Is4() {
		return bad("host address %v does not fit container address %v", ha, p.ContainerAddr)
	}
	if why := p.invalid(); why != "" {
		return bad("%s", why)
	}
	return p, nil
}

// splitColons splits s at the colons outside brackets.
func splitColons(s string) ([]string, error) {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			if depth > 0 || i != start {
				return nil, errors.New("misplaced '['")
			}
			depth++
		case ']':
			if depth == 0 || i+1 < len(s) && s[i+1] != ':' {
				return nil, errors.New("misplaced ']'")
			}
			depth--
		case ':':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, errors.New("unclosed '['")
	}
	return append(out, s[start:]), nil
}

func parseAddr(s string) (netip.Addr, error) {
	bracket := strings.HasPrefix(s, "[")
	if bracket {
		s = strings.TrimSuffix(s[1:], "]")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q has a zone", s)
	}
	if a.Is6() && !bracket {
		return netip.Addr{}, fmt.Errorf("IPv6 address %s must be in brackets", s)
	}
	if a.Is4() && bracket {
		return netip.Addr{}, fmt.Errorf("IPv4 address %s in brackets", s)
	}
	return a, nil
}

func parsePorts(s string) (PortRange, error) {
	first, last, isRange := strings.Cut(s, "-")
	f, err := parsePort(first)
	if err != nil {
		return PortRange{}, err
	}
	l := f
	if isRange {
		if l, err = parsePort(last); err != nil {
			return PortRange{}, err
		}
		if l < f {
			return PortRange{}, fmt.Errorf("range %s ends before it starts", s)
		}
	}
	return PortRange{f, l}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// Masquerade is the SNAT rule of a bridge subnet: flows from Subnet that
// leave through the uplink get the uplink address as source (or To), with
// a port the Allocator chooses.
type Masquerade struct {
	// ID is set by Rules.AddMasquerade; it is ignored on input.
	ID     RuleID
	Subnet netip.Prefix
	// To is the source address to use; the zero Addr means the uplink's
	// address at the time of the flow (MASQUERADE rather than SNAT).
	To netip.Addr
	// Ports limits the source ports; zero means Linux's defaults (see
	// Mapping.SrcPorts).
	Ports PortRange
	// Random chooses ports fully at random (--random-fully).
	Random bool
}

// Validate reports whether m is a rule a table accepts; the error wraps
// ErrBadRule.
func (m Masquerade) Validate() error {
	switch {
	case !m.Subnet.IsValid() || m.Subnet.Addr().Is4In6():
		return fmt.Errorf("%w: masquerade: bad subnet %v", ErrBadRule, m.Subnet)
	case m.To.IsValid() && (m.To.Is4() != m.Subnet.Addr().Is4() || m.To.IsUnspecified()):
		return fmt.Errorf("%w: masquerade %v: address %v does not fit", ErrBadRule, m.Subnet, m.To)
	case !m.Ports.IsZero() && (m.Ports.Len() == 0 || m.Ports.First == 0): // port 0 is no port
		return fmt.Errorf("%w: masquerade %v: bad port range %d-%d", ErrBadRule, m.Subnet, m.Ports.First, m.Ports.Last)
	}
	return nil
}

// Rules is the NAT rule table: publish (DNAT) and masquerade (SNAT) rules.
// Rules are added and removed while packets are matched: readers see an
// immutable snapshot, swapped whole by writers, so a match takes no lock
// and does not allocate. Removing a rule affects new flows only; existing
// flows keep their translation until their conntrack entry expires.
//
// The zero Rules is an empty table ready to use.
type Rules struct {
	mu   sync.Mutex // serializes writers
	snap atomic.Pointer[ruleSet]
	last RuleID
	// unrouted, when set (a gateway's rules), reports an address the
	// gateway forwards nothing to, which no publish rule may lead to.
	unrouted func(netip.Addr) bool
	// bridged, when set (the rules of a gateway whose uplink terminates
	// its flows), is the bridge subnet, where that uplink's published
	// ports must lead: it dials the container on the bridge, and the
	// gateway drops a dial to anywhere else.
	bridged netip.Prefix
}

// Bridged returns the bridge subnet of the gateway whose rules these are,
// when its uplink terminates its flows (a Terminator): the gateway's
// address with the bridge's prefix, nat.Config.Subnet. It is invalid for
// rules of no such gateway. A Terminator checks its own addresses on the
// bridge against it when the gateway starts it.
func (r *Rules) Bridged() netip.Prefix { return r.bridged }

type ruleSet struct {
	publish []Publish
	masq    []Masquerade
}

var emptyRules ruleSet

func (r *Rules) load() *ruleSet {
	if s := r.snap.Load(); s != nil {
		return s
	}
	return &emptyRules
}

// AddPublish adds publish rule p and returns its ID. The error wraps
// ErrBadRule for an invalid rule, ErrRuleConflict when a rule already
// publishes one of its ports for the same protocol and an overlapping host
// address (an unset address overlaps every address of its family).
func (r *Rules) AddPublish(p Publish) (RuleID, error) {
	p = p.Normal()
	if err := r.validate(p); err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.load()
	if err := old.conflict(p); err != nil {
		return 0, err
	}
	r.last++
	p.ID = r.last
	r.snap.Store(&ruleSet{publish: append(slices.Clip(old.publish), p), masq: old.masq})
	return p.ID, nil
}

// CheckPublish reports whether AddPublish would take p now: nil, or an
// error that wraps ErrBadRule or ErrRuleConflict. An uplink that opens
// host sockets for a rule asks first, so a port published twice fails
// as a conflict rather than as the socket's "address in use".
func (r *Rules) CheckPublish(p Publish) error {
	p = p.Normal()
	if err := r.validate(p); err != nil {
		return err
	}
	return r.load().conflict(p)
}

// validate is p.Validate, and for a gateway's rules a check of where p
// leads: not to an address the gateway forwards nothing to (the subnet's
// broadcast, loopback, multicast, 0.0.0.0/8, IPv6), as Linux routes no
// DNAT there, and with a terminating uplink, to the bridge subnet.
func (r *Rules) validate(p Publish) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if r.unrouted != nil && r.unrouted(p.ContainerAddr) {
		return fmt.Errorf("%w: publish %v: %v is an address the gateway forwards nothing to", ErrBadRule, p, p.ContainerAddr)
	}
	if r.bridged.IsValid() && !r.bridged.Contains(p.ContainerAddr) {
		return fmt.Errorf("%w: publish %v: %v is not on the bridge subnet %v", ErrBadRule, p, p.ContainerAddr, r.bridged.Masked())
	}
	return nil
}

// Normal is p as the rules keep it (AddPublish): addresses unmapped, an
// unspecified host address unset, container ports set (the host ports
// when unset). An uplink that opens host sockets for a rule publishes
// this, as the rules will show it.
func (p Publish) Normal() Publish {
	p.HostAddr, p.ContainerAddr = p.HostAddr.Unmap(), p.ContainerAddr.Unmap()
	if p.HostAddr.IsValid() && p.HostAddr.IsUnspecified() {
		p.HostAddr = netip.Addr{}
	}
	if p.ContainerPorts.IsZero() {
		p.ContainerPorts = p.HostPorts
	}
	return p
}

// conflict says which rule of s publishes one of the ports of p (Normal)
// for the same protocol and an overlapping host address (an unset address
// overlaps every address of its family), wrapping ErrRuleConflict.
func (s *ruleSet) conflict(p Publish) error {
	for _, q := range s.publish {
		if q.Proto == p.Proto && q.ContainerAddr.Is4() == p.ContainerAddr.Is4() &&
			(!q.HostAddr.IsValid() || !p.HostAddr.IsValid() || q.HostAddr == p.HostAddr) &&
			q.HostPorts.First <= p.HostPorts.Last && p.HostPorts.First <= q.HostPorts.Last {
			return fmt.Errorf("%w: %v overlaps rule %d (%v)", ErrRuleConflict, p, q.ID, q)
		}
	}
	return nil
}

// AddMasquerade adds masquerade rule m and returns its ID; the error wraps
// ErrBadRule for an invalid rule.
func (r *Rules) AddMasquerade(m Masquerade) (RuleID, error) {
	m.To = m.To.Unmap()
	if err := m.Validate(); err != nil {
		return 0, err
	}
	m.Subnet = m.Subnet.Masked()
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.load()
	r.last++
	m.ID = r.last
	r.snap.Store(&ruleSet{publish: old.publish, masq: append(slices.Clip(old.masq), m)})
	return m.ID, nil
}

// Remove removes the rule id and reports whether there was one.
func (r *Rules) Remove(id RuleID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.load()
	pub := slices.DeleteFunc(slices.Clone(old.publish), func(p Publish) bool { return p.ID == id })
	masq := slices.DeleteFunc(slices.Clone(old.masq), func(m Masquerade) bool { return m.ID == id })
	if len(pub) == len(old.publish) && len(masq) == len(old.masq) {
		return false
	}
	r.snap.Store(&ruleSet{publish: pub, masq: masq})
	return true
}

// Publishes returns the publish rules in the order they match.
func (r *Rules) Publishes() []Publish { return slices.Clone(r.load().publish) }

// Masquerades returns the masquerade rules in the order they match.
func (r *Rules) Masquerades() []Masquerade { return slices.Clone(r.load().masq) }

// MatchPublish finds the publish rule for a new flow orig arriving at the
// gateway, as the PREROUTING chain does. local says whether orig.Dst is an
// address of the gateway, which rules without a host address require. It
// returns the Mapping to translate the flow with (destination address and
// the single port of the container) and the rule's ID.
func (r *Rules) MatchPublish(orig conntrack.Tuple, local bool) (Mapping, RuleID, bool) {
	if orig.Proto != conntrack.ProtoTCP && orig.Proto != conntrack.ProtoUDP {
		return Mapping{}, 0, false
	}
	dst := orig.Dst.Unmap()
	s := r.load()
	for i := range s.publish {
		p := &s.publish[i]
		if p.Proto != orig.Proto || !p.HostPorts.Contains(orig.DstPort) || p.ContainerAddr.Is4() != dst.Is4() {
			continue
		}
		if p.HostAddr.IsValid() && p.HostAddr != dst || !p.HostAddr.IsValid() && !local {
			continue
		}
		cp := p.ContainerPort(orig.DstPort)
		return Mapping{DstAddr: p.ContainerAddr, DstPorts: PortRange{cp, cp}}, p.ID, true
	}
	return Mapping{}, 0, false
}

// MatchMasquerade finds the masquerade rule for a new flow orig leaving
// through the uplink, whose address is uplink, as the POSTROUTING chain
// does. The gateway asks only about flows that leave the bridge: Docker's
// rule is "-s 172.17.0.0/16 ! -o docker0". It returns the Mapping to
// translate the flow with and the rule's ID.
func (r *Rules) MatchMasquerade(orig conntrack.Tuple, uplink netip.Addr) (Mapping, RuleID, bool) {
	src := orig.Src.Unmap()
	s := r.load()
	for i := range s.masq {
		m := &s.masq[i]
		if !m.Subnet.Contains(src) {
			continue
		}
		to := m.To
		if !to.IsValid() {
			to = uplink.Unmap()
		}
		if !to.IsValid() || to.Is4() != src.Is4() {
			continue
		}
		return Mapping{SrcAddr: to, SrcPorts: m.Ports, Random: m.Random}, m.ID, true
	}
	return Mapping{}, 0, false
}

// WriteList writes the IPv4 rules the way `iptables -t nat -L -n` lists
// the rules Docker installs for them: the built-in chains, PREROUTING
// jumping to a DOCKER chain for local destinations, POSTROUTING with the
// masquerade rules and the hairpin masquerade of each published port, and
// the DOCKER chain with one DNAT line per publish rule. It is a picture
// of these rules, in Docker's shape, not a copy of Docker's own listing:
// Docker also has OUTPUT jump to DOCKER and a RETURN rule for its
// bridge first in DOCKER, and cuts a published port range into a DNAT
// and a masquerade line per port, where a range is one rule here (dpts).
// Protocols are named ("tcp", "all") as iptables before 1.8.8 printed
// them; later versions print numbers with -n.
func (r *Rules) WriteList(w io.Writer) error { return r.writeList(w, false) }

// WriteList6 is WriteList for the IPv6 rules, as `ip6tables -t nat -L -n`
// lists them.
func (r *Rules) WriteList6(w io.Writer) error { return r.writeList(w, true) }

func (r *Rules) writeList(w io.Writer, v6 bool) error {
	s := r.load()
	bw := bufio.NewWriter(w)
	anyAddr := "0.0.0.0/0"
	if v6 {
		anyAddr = "::/0"
	}
	line := func(target, proto, src, dst, extra string) {
		fmt.Fprintf(bw, "%-9s  %-5s--  %-19s  %-19s %s\n", target, proto, src, dst, extra)
	}
	chain := func(name, policy string) {
		fmt.Fprintf(bw, "Chain %s (%s)\n", name, policy)
		fmt.Fprintf(bw, "%-9s  prot opt %-19s  %-19s \n", "target", "source", "destination")
	}
	chain("PREROUTING", "policy ACCEPT")
	line("DOCKER", "all", anyAddr, anyAddr, " ADDRTYPE match dst-type LOCAL")
	bw.WriteString("\n")
	chain("INPUT", "policy ACCEPT")
	bw.WriteString("\n")
	chain("OUTPUT", "policy ACCEPT")
	bw.WriteString("\n")
	chain("POSTROUTING", "policy ACCEPT")
	for _, m := range s.masq {
		if m.Subnet.Addr().Is4() == v6 {
			continue
		}
		target, extra := "MASQUERADE", ""
		if m.To.IsValid() {
			target, extra = "SNAT", " to:"+bracketedIf(m.To, v6 && !m.Ports.IsZero())
			if !m.Ports.IsZero() {
				extra += ":" + m.Ports.String()
			}
		} else if !m.Ports.IsZero() {
			extra = " masq ports: " + m.Ports.String()
		}
		if m.Random {
			extra += " random-fully"
		}
		line(target, "all", prefixString(m.Subnet), anyAddr, extra)
	}
	for _, p := range s.publish {
		if p.ContainerAddr.Is4() == v6 {
			continue
		}
		c := p.ContainerAddr.String()
		line("MASQUERADE", p.Proto.String(), c, c, " "+p.Proto.String()+" "+dports(p.ContainerPorts))
	}
	bw.WriteString("\n")
	chain("DOCKER", "1 references")
	for _, p := range s.publish {
		if p.ContainerAddr.Is4() == v6 {
			continue
		}
		dst := anyAddr
		if p.HostAddr.IsValid() {
			dst = p.HostAddr.String()
		}
		to := " to:" + bracketedIf(p.ContainerAddr, v6) + ":" + p.ContainerPorts.String()
		if p.ContainerPorts.Len() > 1 {
			to += "/" + strconv.Itoa(int(p.HostPorts.First))
		}
		line("DNAT", p.Proto.String(), anyAddr, dst, " "+p.Proto.String()+" "+dports(p.HostPorts)+to)
	}
	return bw.Flush()
}

// dports formats a destination port match the way iptables lists it.
func dports(r PortRange) string {
	if r.First == r.Last {
		return "dpt:" + strconv.Itoa(int(r.First))
	}
	return "dpts:" + strconv.Itoa(int(r.First)) + ":" + strconv.Itoa(int(r.Last))
}

func bracketedIf(a netip.Addr, b bool) string {
	if b {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// prefixString prints a prefix as iptables -n does: without the length for
// a single address.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
