package hostnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// ErrNotAttached is Publish's error before the uplink is given to a
// gateway (nat.New), which holds the rules. A closed uplink's is
// net.ErrClosed.
var ErrNotAttached = errors.New("the uplink is not given to a gateway yet")

// ErrNotPublished is Unpublish's error for an id that names no port
// published through the uplink (never, or no longer).
var ErrNotPublished = errors.New("no such published port")

// Publish publishes p: it listens on the host at p.HostAddr (every
// address when zero) on each of p.HostPorts, for TCP or UDP, and carries
// each client into the container at p.ContainerAddr, on the container port
// at the same place of p.ContainerPorts (or its one port), from the
// client's own address. The container must be on the gateway's bridge
// subnet: another address is refused with an error wrapping
// nat.ErrBadRule, as is a port published already (nat.ErrRuleConflict).
// It returns the rule's id, for Unpublish; a port the host will not let
// the uplink listen on is an error, and nothing is published.
func (u *Uplink) Publish(p nat.Publish) (nat.RuleID, error) {
	p = p.Normal() // as the gateway's rules take it, and will show it
	if err := p.Validate(); err != nil {
		return 0, err
	}
	if !p.ContainerAddr.Is4() {
		return 0, fmt.Errorf("hostnet: %w: publish %v: IPv4 only", nat.ErrBadRule, p)
	}
	// One at a time: two rules for one port at once would both pass
	// the check, and the second fail as an address in use.
	u.pubMu.Lock()
	defer u.pubMu.Unlock()
	u.mu.Lock()
	rules, err := u.publishableLocked()
	u.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("hostnet: publish %v: %w", p, err)
	}
	// A port published already fails as a conflict, before its
	// socket fails as an address in use.
	if err := rules.CheckPublish(p); err != nil {
		return 0, fmt.Errorf("hostnet: %w", err)
	}
	host := p.HostAddr
	if !host.IsValid() {
		host = netip.IPv4Unspecified()
	}
	var ls []listener
	closeAll := func() {
		for _, l := range ls {
			l.Close()
		}
	}
	for i := range p.HostPorts.Len() {
		hp := p.HostPorts.First + uint16(i)
		cp := p.ContainerPort(hp)
		at := netip.AddrPortFrom(host, hp)
		var l listener
		err := u.cfg.Namespace(func() error {
			var err error
			if p.Proto == conntrack.ProtoTCP {
				// The acceptor takes the listening socket over, and
				// accepts with its own calls. A TCP socket, not Go's
				// default MPTCP: a splice's host socket peeks from an
				// offset and takes urgent data inline (sockOpts), which
				// an MPTCP client's socket cannot.
				var lc net.ListenConfig
				lc.SetMultipathTCP(false)
				var nl net.Listener
				nl, err = lc.Listen(context.Background(), "tcp4", at.String())
				if err == nil {
					l, err = u.newAcceptor(nl.(*net.TCPListener), netip.AddrPortFrom(p.ContainerAddr, cp))
				}
			} else {
				var c *net.UDPConn
				if c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(at)); err == nil {
					if l, err = u.newPublishedUDP(c, at, netip.AddrPortFrom(p.ContainerAddr, cp)); err != nil {
						c.Close() // not in ls yet: closeAll does not see it
					}
				}
			}
			return err
		})
		if err != nil {
			closeAll()
			return 0, fmt.Errorf("hostnet: publish %v: %w", p, err)
		}
		ls = append(ls, l)
	}
	u.mu.Lock()
	if rules, err = u.publishableLocked(); err != nil { // closed meanwhile
		u.mu.Unlock()
		closeAll()
		return 0, fmt.Errorf("hostnet: publish %v: %w", p, err)
	}
	id, err := rules.AddPublish(p)
	if err != nil {
		u.mu.Unlock()
		closeAll()
		return 0, err
	}
	u.pubs[id] = ls
	u.mu.Unlock()
	for _, l := range ls {
		if err := l.start(); err != nil {
			u.Unpublish(id)
			return 0, fmt.Errorf("hostnet: publish %v: %w", p, err)
		}
	}
	u.log.Info("hostnet: published", "rule", p)
	return id, nil
}

// pktinfo has the UDP socket c, bound to at, told which address each
// datagram came to (IP_PKTINFO) when at is every address, before the
// first can come: the published port answers each client from the address it sent
// to, where the kernel would answer from the address of its route to the
// client, which a client that sent to another of the host's addresses, on
// a connected socket, drops.
func pktinfo(c *net.UDPConn, at netip.AddrPort) error {
	if !at.Addr().IsUnspecified() {
		return nil
	}
	var err error
	if cerr := rawConn(c).Control(func(fd uintptr) { err = setOn(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO) }); cerr != nil {
		return cerr
	}
	return err
}

// Unpublish stops publishing the rule id: its listeners close. Flows
// already carried go on until they end or their entries expire, as with
// the kernel's NAT — but the UDP flows of the rule lose the socket they
// answered from, and end with their entries: a container's next datagram
// to such a client is a flow of its own, out from a port of its own. An
// id published through the uplink never, or no longer, is an error
// wrapping ErrNotPublished.
func (u *Uplink) Unpublish(id nat.RuleID) error {
	u.mu.Lock()
	ls, ok := u.pubs[id]
	delete(u.pubs, id)
	if ok {
		u.rules.Load().Remove(id)
	}
	u.mu.Unlock()
	if !ok {
		return fmt.Errorf("hostnet: %w: id %d", ErrNotPublished, id)
	}
	for _, l := range ls {
		l.Close() // a UDP port's flows end with it, as they answered from it
	}
	return nil
}

// Published lists the published ports, with their ids.
func (u *Uplink) Published() []nat.Publish {
	if r := u.rules.Load(); r != nil {
		return r.Publishes()
	}
	return nil
}

// publishableLocked returns the gateway's rules, or why nothing can be
// published: the uplink is closed (net.ErrClosed), or not attached to a
// gateway yet (ErrNotAttached). The caller holds u.mu.
func (u *Uplink) publishableLocked() (*nat.Rules, error) {
	switch rules := u.rules.Load(); {
	case u.closed:
		return nil, net.ErrClosed
	case rules == nil:
		return nil, ErrNotAttached
	default:
		return rules, nil
	}
}
