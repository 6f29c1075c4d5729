package main

// This file is the command's only door into nat's rule API (nat.Rules,
// nat.Publish, nat.ParsePublish): the rest of the command speaks
// api.HostFwd and the publisher interface, so a change in nat's rule API
// is a change here alone.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/internal/api"
	"github.com/usernat/usernat/nat"
)

// publisher adds, removes and lists published ports.
type publisher interface {
	// Publish adds f and returns its id.
	Publish(f api.HostFwd) (id int, err error)
	// Unpublish removes the published port with the id; flows already
	// going on keep their translation until they expire.
	Unpublish(id int) error
	// List lists the published ports with their ids.
	List() []api.HostFwd
}

// seqPublisher numbers the ports it publishes through another publisher
// 1, 2, ... in the order they are added, never reusing a number, as
// slirp4netns numbers its forwards (RootlessKit shows them as its ports'
// ids); the rule table's own ids start after its masquerade rule.
type seqPublisher struct {
	publisher
	mu    sync.Mutex
	last  int
	rules map[int]int // by our id, the publisher's
}

func newSeqPublisher(p publisher) *seqPublisher {
	return &seqPublisher{publisher: p, rules: map[int]int{}}
}

func (p *seqPublisher) Publish(f api.HostFwd) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rule, err := p.publisher.Publish(f)
	if err != nil {
		return 0, err
	}
	p.last++
	p.rules[p.last] = rule
	return p.last, nil
}

func (p *seqPublisher) Unpublish(id int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	rule, ok := p.rules[id]
	if !ok {
		return fmt.Errorf("no published port with id %d", id)
	}
	if err := p.publisher.Unpublish(rule); err != nil {
		return err
	}
	delete(p.rules, id)
	return nil
}

func (p *seqPublisher) List() []api.HostFwd {
	p.mu.Lock()
	defer p.mu.Unlock()
	ours := make(map[int]int, len(p.rules))
	for id, rule := range p.rules {
		ours[rule] = id
	}
	l := p.publisher.List()
	for i := range l {
		l[i].ID = ours[l[i].ID]
	}
	slices.SortFunc(l, func(a, b api.HostFwd) int { return a.ID - b.ID })
	return l
}

// rulesPublisher is a publisher over a gateway's rule table.
type rulesPublisher struct{ r *nat.Rules }

var _ publisher = rulesPublisher{}

func newPublisher(r *nat.Rules) publisher { return rulesPublisher{r} }

func (p rulesPublisher) Publish(f api.HostFwd) (int, error) {
	id, err := p.r.AddPublish(publishFromFwd(f))
	if err != nil {
		return 0, err
	}
	return int(id), nil
}

func (p rulesPublisher) Unpublish(id int) error {
	// The table numbers masquerade rules from the same counter: only
	// remove a publish rule.
	for _, pub := range p.r.Publishes() {
		if int(pub.ID) == id && p.r.Remove(pub.ID) {
			return nil
		}
	}
	return fmt.Errorf("no published port with id %d", id)
}

func (p rulesPublisher) List() []api.HostFwd { return fwdsFromPublishes(p.r.Publishes()) }

// fwdsFromPublishes turns publish rules into the API's port forwards.
func fwdsFromPublishes(pubs []nat.Publish) []api.HostFwd {
	out := make([]api.HostFwd, len(pubs))
	for i, pub := range pubs {
		out[i] = fwdFromPublish(pub)
	}
	return out
}

// parsePublish parses the -p syntax,
// [HOSTADDR:]HOSTPORT[-END]:CONTAINERADDR:CONTAINERPORT[-END][/tcp|/udp].
func parsePublish(spec string) (api.HostFwd, error) {
	p, err := nat.ParsePublish(spec)
	if err != nil {
		return api.HostFwd{}, err
	}
	return fwdFromPublish(p), nil
}

// formatPublish writes f back in the -p syntax.
func formatPublish(f api.HostFwd) string { return publishFromFwd(f).String() }

// checkPublishConflicts reports a port published twice among fs, as the
// gateway's rule table would refuse it, naming the two -p flags (the
// rules' ids are not known yet).
func checkPublishConflicts(fs []api.HostFwd) error {
	for i, f := range fs {
		for _, g := range fs[:i] {
			var r nat.Rules
			if _, err := r.AddPublish(publishFromFwd(g)); err != nil {
				return err
			}
			if err := r.CheckPublish(publishFromFwd(f)); errors.Is(err, nat.ErrRuleConflict) {
				return fmt.Errorf("-p %s: port already published by -p %s", formatPublish(f), formatPublish(g))
			} else if err != nil {
				return err
			}
		}
	}
	return nil
}

func publishFromFwd(f api.HostFwd) nat.Publish {
	p := nat.Publish{
		Proto:          conntrack.ProtoTCP,
		HostAddr:       f.HostAddr,
		HostPorts:      portRange(f.HostPort, f.HostPortEnd),
		ContainerAddr:  f.GuestAddr,
		ContainerPorts: portRange(f.GuestPort, f.GuestPortEnd),
	}
	if f.Proto == "udp" {
		p.Proto = conntrack.ProtoUDP
	}
	if p.HostAddr.IsValid() && p.HostAddr.IsUnspecified() {
		p.HostAddr = netip.Addr{}
	}
	return p
}

func fwdFromPublish(p nat.Publish) api.HostFwd {
	f := api.HostFwd{
		ID:        int(p.ID),
		Proto:     p.Proto.String(),
		HostAddr:  p.HostAddr,
		HostPort:  int(p.HostPorts.First),
		GuestAddr: p.ContainerAddr,
		GuestPort: int(p.ContainerPorts.First),
	}
	if !f.HostAddr.IsValid() {
		f.HostAddr = netip.IPv4Unspecified()
		if p.ContainerAddr.Is6() {
			f.HostAddr = netip.IPv6Unspecified()
		}
	}
	if p.HostPorts.Last != p.HostPorts.First {
		f.HostPortEnd = int(p.HostPorts.Last)
	}
	if p.ContainerPorts.Last != p.ContainerPorts.First {
		f.GuestPortEnd = int(p.ContainerPorts.Last)
	}
	return f
}

func portRange(first, end int) nat.PortRange {
	if end == 0 {
		end = first
	}
	return nat.PortRange{First: uint16(first), Last: uint16(end)}
}
