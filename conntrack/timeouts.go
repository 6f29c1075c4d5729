package conntrack

import (
	"fmt"
	"sort"
	"time"
)

// Timeouts are the idle timeouts of the table: an entry expires when no
// packet has refreshed it for the timeout of its current state. A zero field
// means the default given beside it, which is the Linux default.
type Timeouts struct {
	TCPSynSent     time.Duration // 120 s
	TCPSynRecv     time.Duration // 60 s
	TCPEstablished time.Duration // 5 days
	TCPFinWait     time.Duration // 120 s
	TCPCloseWait   time.Duration // 60 s
	TCPLastAck     time.Duration // 30 s
	TCPTimeWait    time.Duration // 120 s
	TCPClose       time.Duration // 10 s
	TCPSynSent2    time.Duration // 120 s
	// TCPMaxRetrans caps the timeout of a connection whose last segment
	// was retransmitted 3 times without being answered.
	TCPMaxRetrans time.Duration // 300 s
	// TCPUnacknowledged caps the timeout while data is in flight that the
	// other side has not acknowledged, and that of a connection picked up
	// mid-stream until the other side answers.
	TCPUnacknowledged time.Duration // 300 s
	// UDP applies until a reply is seen and the flow has lived 2 s.
	UDP time.Duration // 30 s
	// UDPStream applies once a UDP flow is assured.
	UDPStream time.Duration // 120 s
	ICMP      time.Duration // 30 s, for ICMP and ICMPv6 queries
	// GRE applies to a GRE flow until a reply is seen, GREStream after,
	// when the flow is assured (Linux's nf_conntrack_proto_gre).
	GRE       time.Duration // 30 s
	GREStream time.Duration // 180 s
	// Generic applies to the other protocols tracked by address pair only.
	Generic time.Duration // 600 s
}

// DefaultTimeouts returns the Linux defaults.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPSynSent:        120 * time.Second,
		TCPSynRecv:        60 * time.Second,
		TCPEstablished:    5 * 24 * time.Hour,
		TCPFinWait:        120 * time.Second,
		TCPCloseWait:      60 * time.Second,
		TCPLastAck:        30 * time.Second,
		TCPTimeWait:       120 * time.Second,
		TCPClose:          10 * time.Second,
		TCPSynSent2:       120 * time.Second,
		TCPMaxRetrans:     300 * time.Second,
		TCPUnacknowledged: 300 * time.Second,
		UDP:               30 * time.Second,
		UDPStream:         120 * time.Second,
		ICMP:              30 * time.Second,
		GRE:               30 * time.Second,
		GREStream:         180 * time.Second,
		Generic:           600 * time.Second,
	}
}

// timeoutNames maps the names of the kernel's nf_conntrack_*_timeout_*
// sysctls, without their prefix, to the fields.
func (t *Timeouts) fields() map[string]*time.Duration {
	return map[string]*time.Duration{
		"tcp_syn_sent":       &t.TCPSynSent,
		"tcp_syn_recv":       &t.TCPSynRecv,
		"tcp_established":    &t.TCPEstablished,
		"tcp_fin_wait":       &t.TCPFinWait,
		"tcp_close_wait":     &t.TCPCloseWait,
		"tcp_last_ack":       &t.TCPLastAck,
		"tcp_time_wait":      &t.TCPTimeWait,
		"tcp_close":          &t.TCPClose,
		"tcp_syn_sent2":      &t.TCPSynSent2,
		"tcp_max_retrans":    &t.TCPMaxRetrans,
		"tcp_unacknowledged": &t.TCPUnacknowledged,
		"udp":                &t.UDP,
		"udp_stream":         &t.UDPStream,
		"icmp":               &t.ICMP,
		"gre":                &t.GRE,
		"gre_stream":         &t.GREStream,
		"generic":            &t.Generic,
	}
}

// TimeoutNames lists the names Set accepts: the kernel's sysctl names
// without the nf_conntrack_ prefix and _timeout (tcp_established, udp,
// udp_stream, icmp, ...).
func TimeoutNames() []string {
	var t Timeouts
	var names []string
	for n := range t.fields() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Set sets the timeout called name (see TimeoutNames); "icmpv6" is accepted
// as a synonym of "icmp".
func (t *Timeouts) Set(name string, d time.Duration) error {
	if name == "icmpv6" {
		name = "icmp"
	}
	f, ok := t.fields()[name]
	if !ok {
		return fmt.Errorf("conntrack: unknown timeout %q (known: %v)", name, TimeoutNames())
	}
	if d <= 0 {
		return fmt.Errorf("conntrack: timeout %s must be positive, not %v", name, d)
	}
	*f = d
	return nil
}

// withDefaults returns t with its zero fields set to the defaults, or an
// error for a negative one.
func (t Timeouts) withDefaults() (Timeouts, error) {
	def := DefaultTimeouts()
	df := def.fields()
	for name, f := range t.fields() {
		switch {
		case *f < 0:
			return t, fmt.Errorf("conntrack: timeout %s is negative (%v)", name, *f)
		case *f == 0:
			*f = *df[name]
		}
	}
	return t, nil
}
