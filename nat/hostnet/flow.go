package hostnet

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
)

// flow is one flow the uplink carries: the conntrack entry that holds it
// (found by its original tuple; its ID once seen) and what releases it.
type flow struct {
	u    *Uplink
	orig conntrack.Tuple
	src  netip.Addr // the container address counted against the per-source cap
	id   uint64     // the entry's ID, 0 until seen; under u.mu
	// after is the ID of the table's last entry when the flow was made
	// (conntrack.Table.LastID): an entry of the flow's original tuple
	// with a higher ID was made for the flow, an older one was not.
	after uint64
	born  time.Time
	stop  func() // closes the flow's sockets
	// supersede, when set (under u.mu), ends the flow for a new one with
	// the same original tuple, more gently than stop.
	supersede func()
	// peer (set once, before the flow is seen) is the real client of a
	// flow into the container: clients on the host's loopback share the
	// gateway's address, and only the same client reusing its port
	// supersedes its last flow.
	peer netip.AddrPort
	// opening (under u.mu) is set while a flow into the container waits
	// for its handshake: a client reusing its port may still have the
	// entry of its last connection in the table, which is not this
	// flow's, so the flow learns its entry only once open (settle).
	opening bool
	once    sync.Once
}

// entryGrace is how long a flow may wait for its entry: an inbound flow's
// is made by the gateway when the flow's first packet crosses it.
const entryGrace = 5 * time.Second

// sweepInterval is how often the uplink checks against the table the
// flows that have not seen their entries yet, and, when the table's
// events were dropped (too many at once) since the last sweep, every
// flow. A variable for tests, which read the events' work alone with the
// sweep put off.
var sweepInterval = time.Second

// eventBuffer is the buffer of the uplink's subscription to the table's
// destroy events (0: conntrack's default). A variable for tests, which
// lose events with a small one.
var eventBuffer = 0

// reserve counts a flow of src about to open, and reports false (counting
// nothing) when src has MaxFlowsPerSource flows open or opening already.
// The flow then either registers (addFlow) or gives its place back
// (unreserve).
func (u *Uplink) reserve(src netip.Addr) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.perSrc.take(src, 0, u.cfg.MaxFlowsPerSource) {
		u.stats.DropPerSource.Add(1)
		return false
	}
	return true
}

func (u *Uplink) unreserve(src netip.Addr) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.unreserveLocked(src)
}

func (u *Uplink) unreserveLocked(src netip.Addr) {
	u.perSrc.give(src)
}

// inboundRoom says whether a published port's new client may have a
// flow, whose entry will be orig, within the table's cap. That entry is
// made by the gateway, from the flow's first packet, so the cap cannot
// refuse it here: the uplink's flows, each to have an entry, stay within
// that cap themselves, and within the table's room. With the flows at
// the cap, or the table full, the table makes room as for a new
// connection through the kernel's NAT, by evicting an entry that is not
// assured (early drop), whose flow ends now; a table of assured entries
// refuses, and so does one whose room is the entries of flows whose
// first packets the gateway has not handled yet: a flow more would
// outnumber the cap. A refusal is counted in DropTableFull.
func (u *Uplink) inboundRoom(orig conntrack.Tuple) bool {
	tbl := u.tbl.Load()
	if tbl == nil {
		return true
	}
	pending := u.Flows() >= tbl.Max()
	if !pending && tbl.Len() < tbl.Max() {
		return true
	}
	evicted, id, ok := tbl.MakeRoom(0, orig)
	if !ok || pending && id == 0 {
		u.stats.DropTableFull.Add(1)
		return false
	}
	if id != 0 {
		u.gone(evicted, id) // at once: the flows stay within the cap
	}
	return true
}

// addFlow registers a flow of src, whose place reserve took, and reports
// false, with its place given back, when the uplink is closed or a flow
// with the same tuple is already carried. id is the entry's when known.
// register, when not nil, enters the flow in the uplink's tables for its
// protocol, in the same critical section, so a release cannot come
// between; it may refuse (false) when its place there was taken
// meanwhile, and addFlow then reports false too.
//
// A flow whose entry id left the table before it was registered (its
// destroy event found no flow) is released at once: addFlow still
// reports it registered, and the caller's next step finds it ended (a
// splice aborted, a reader stopped).
func (u *Uplink) addFlow(orig conntrack.Tuple, src netip.Addr, id uint64, stop func(), register func(*flow) bool) (*flow, bool) {
	f, ok := u.registerFlow(orig, src, id, stop, register)
	if ok && id != 0 {
		u.checkEntry(f, id)
	}
	return f, ok
}

func (u *Uplink) registerFlow(orig conntrack.Tuple, src netip.Addr, id uint64, stop func(), register func(*flow) bool) (*flow, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed || u.flows[orig] != nil {
		u.unreserveLocked(src)
		return nil, false
	}
	f := &flow{u: u, orig: orig, src: src, id: id, born: time.Now(), stop: stop}
	if tbl := u.tbl.Load(); tbl != nil {
		f.after = tbl.LastID()
	}
	if register != nil && !register(f) {
		u.unreserveLocked(src)
		return nil, false
	}
	u.flows[orig] = f
	if id == 0 {
		u.unseen[f] = struct{}{}
	}
	return f, true
}

// seen gives f, which had not seen its entry, the entry id that the
// table was found to hold for it, and releases f if that entry has left
// the table since (its destroy event may have found f without an ID).
// From now on the entry's destroy event releases f, and the sweep does
// not look at it while the events come.
func (u *Uplink) seen(f *flow, id uint64) {
	u.mu.Lock()
	if f.id == 0 {
		f.id = id
	}
	delete(u.unseen, f)
	id = f.id
	u.mu.Unlock()
	u.checkEntry(f, id)
}

// checkEntry releases f unless the table holds its entry id.
func (u *Uplink) checkEntry(f *flow, id uint64) {
	if tbl := u.tbl.Load(); tbl != nil {
		if e, _, ok := tbl.Get(0, f.orig); !ok || e.ID != id {
			f.release()
		}
	}
}

// release ends the flow: it leaves the uplink's tables and its sockets
// close (stop: a TCP flow is reset, but for a container's connection
// still being made, of which it has heard nothing), and its timers stop.
// It is idempotent, and does nothing after ended.
func (f *flow) release() { f.end(true) }

// drop ends the flow, as release does, and deletes its entry: for a flow
// that ends while its entry would live on (its host socket failed, its
// published port went), an entry whose reply tuple names a socket no
// longer there. The flow's next packet makes a new entry, with its new
// socket's tuple. The entry is deleted within the flow's ending, so a
// drop that comes while another ends the flow (Unpublish, and Close
// releasing every flow) returns once it is gone.
func (f *flow) drop() { f.endThen(true, f.deleteEntry) }

// deleteEntry deletes the entry of the flow, which has just left the
// uplink's tables (ours: it held its tuple until then).
func (f *flow) deleteEntry(ours bool) {
	tbl := f.u.tbl.Load()
	f.u.mu.Lock()
	id := f.id
	f.u.mu.Unlock()
	if id == 0 && ours {
		// Not seen yet (an inbound flow, whose entry the gateway made,
		// perhaps from its expectation a moment ago): the entry of its
		// tuple is its own while no other flow holds the tuple.
		if e, _, ok := tbl.Get(0, f.orig); ok {
			f.u.mu.Lock()
			if f.u.flows[f.orig] == nil {
				id = e.ID
			}
			f.u.mu.Unlock()
		}
	}
	if id != 0 {
		tbl.DeleteID(0, f.orig, id)
	}
}

// ended forgets a flow that ended by itself (a TCP flow both sides
// closed), whose sockets are closed already: nothing is reset.
func (f *flow) ended() { f.end(false) }

// replaced ends a flow whose original tuple a new flow takes: a client
// reusing its port for a new connection while the last one's flow was
// still closing.
func (f *flow) replaced() {
	f.u.mu.Lock()
	s := f.supersede
	f.u.mu.Unlock()
	if s == nil {
		f.release()
		return
	}
	f.end(false)
	s()
}

func (f *flow) end(stop bool) { f.endThen(stop, nil) }

// endThen is end, calling then (when not nil) within the ending, with
// whether the flow held its tuple until then: a concurrent end waits for
// it.
func (f *flow) endThen(stop bool, then func(ours bool)) {
	first := false
	f.once.Do(func() {
		first = true
		u := f.u
		u.mu.Lock()
		ours := u.flows[f.orig] == f
		if ours {
			delete(u.flows, f.orig)
			u.unreserveLocked(f.src)
		}
		delete(u.unseen, f)
		u.mu.Unlock()
		u.stats.Released.Add(1)
		if then != nil {
			then(ours)
		}
	})
	// Outside the Once: stopping a flow may end it again (a splice
	// finishes on the spot), which is then nothing.
	if first && stop {
		f.stop()
	}
}

// reap releases the flows whose entries leave the table: at once on the
// table's destroy events, and by a sweep every second of the flows that
// have not seen their entries yet and, when the subscription lost events
// since the last, of every flow. A table closed before the uplink (its
// owner closing them in that order, or a gateway that failed to start
// after it was given the uplink) closes the events' channel, which would
// then be ready at every turn: sweeps of every flow alone go on, until
// Close.
func (u *Uplink) reap(sub *conntrack.Subscription) {
	defer u.wg.Done()
	defer sub.Close()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	events := sub.Events()
	var lost uint64
	for {
		select {
		case <-u.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // never ready again
				continue
			}
			if ev.Type == conntrack.EventDestroy {
				u.gone(ev.Entry.Orig, ev.Entry.ID)
			}
		case <-t.C:
			// Read before the sweep: an event lost during it is
			// swept for at the next.
			n := sub.Lost()
			u.sweep(events == nil || n != lost)
			lost = n
		}
	}
}

// gone releases the flow of the entry orig, id, which left the table. A
// flow that does not know its entry yet (one the gateway creates, for a
// flow into the container) is released when the entry was made after it
// (its own, evicted from a full table, say); an older one's may be the
// entry of a client's last flow, which a new one of the same tuple (the
// client reusing its port) replaces: that flow learns its entry from the
// table, or is left to the sweep.
func (u *Uplink) gone(orig conntrack.Tuple, id uint64) {
	u.mu.Lock()
	f := u.flows[orig]
	var fid, after uint64
	opening := false
	if f != nil {
		fid, after, opening = f.id, f.after, f.opening
	}
	u.mu.Unlock()
	switch {
	case f == nil || opening:
	case fid != 0:
		if fid == id {
			f.release()
		}
	case id > after:
		f.release()
	default:
		if e, _, ok := u.tbl.Load().Get(0, orig); ok && e.ID != id {
			u.seen(f, e.ID)
		}
	}
}

// sweep compares flows with the table (all of them, or those that have
// not seen their entries yet): a flow whose entry is gone, or was
// replaced by another flow's, or never came, is released; one whose
// entry came sees it. Only the flows that have seen their entries can
// count on the entries' destroy events, which the subscription may lose.
func (u *Uplink) sweep(all bool) {
	tbl := u.tbl.Load()
	u.mu.Lock()
	var flows []*flow
	if all {
		u.stats.SweepsAll.Add(1)
		flows = make([]*flow, 0, len(u.flows))
		for _, f := range u.flows {
			flows = append(flows, f)
		}
	} else {
		flows = make([]*flow, 0, len(u.unseen))
		for f := range u.unseen {
			flows = append(flows, f)
		}
	}
	u.mu.Unlock()
	now := time.Now()
	for _, f := range flows {
		e, _, ok := tbl.Get(0, f.orig)
		u.mu.Lock()
		opening, id := f.opening, f.id
		u.mu.Unlock()
		switch {
		case opening: // its handshake has a deadline of its own
		case ok && id == 0:
			u.seen(f, e.ID)
		case ok && e.ID != id, !ok && (id != 0 || now.Sub(f.born) >= entryGrace):
			f.release()
		}
	}
}

// settle ends the opening of f, whose handshake is done, and gives it its
// entry, made by the handshake's first packet; a flow whose entry is
// already gone is left to the sweep, which releases it after entryGrace.
func (u *Uplink) settle(f *flow) {
	e, _, ok := u.tbl.Load().Get(0, f.orig)
	u.mu.Lock()
	f.opening = false
	u.mu.Unlock()
	if ok {
		u.seen(f, e.ID)
	}
}

// lapsed reports whether the datagram flow f, whose entry has been seen
// (seen: f.id, read under u.mu), has no live entry for tp, one of the
// entry's tuples, any more, and then releases f: its entry expired, and
// the table's reaper, which removes expired entries (and so has the
// uplink release their flows) every ExpireInterval, has not come yet. A
// packet that finds it so is a new flow's first, as the kernel's NAT
// takes a packet that finds only an expired entry: through f, without an
// entry, its answer would be dropped at the gateway, and f released
// under it. The caller opens the new flow.
func (u *Uplink) lapsed(f *flow, seen bool, tp conntrack.Tuple) bool {
	if !seen || u.tbl.Load().Taken(0, tp) {
		return false
	}
	f.release()
	return true
}

// claimOpen marks the datagram flow t (UDP, echo) as being opened by the
// caller, and reports false when another goroutine opens it already:
// between that one's entry and its flow, the entry would look like one no
// flow carries (trackNew), and be replaced. The caller drops its packet;
// the flow's next goes through the flow being opened. doneOpen ends the
// mark.
func (u *Uplink) claimOpen(t conntrack.Tuple) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.dgOpening[t] {
		return false
	}
	u.dgOpening[t] = true
	return true
}

func (u *Uplink) doneOpen(t conntrack.Tuple) {
	u.mu.Lock()
	delete(u.dgOpening, t)
	u.mu.Unlock()
}

// socketFailed counts, and logs once, a new flow whose host socket could
// not be made for want of the host's resources (err, from socket() or
// from entering Config.Namespace: EMFILE, ENFILE, ENOBUFS, ENOMEM), or
// of a local port (a datagram socket's connect, which binds one: EAGAIN
// when ip_local_port_range, or the ICMP ids, are all taken): the host's
// trouble, not the network's answer, and the container hears nothing. It
// reports whether err was that.
func (u *Uplink) socketFailed(what string, err error) bool {
	switch {
	case outOfSockets(err):
		u.warnOnce("socket-"+what, "hostnet: cannot make a host socket for a container's flow (counted in drop_no_socket)", "proto", what, "err", err)
	case errors.Is(err, unix.EAGAIN):
		u.warnOnce("port-"+what, "hostnet: the host has no local port left for a container's flow (counted in drop_no_socket)", "proto", what, "err", err)
	default:
		return false
	}
	u.stats.DropNoSocket.Add(1)
	return true
}

// outOfSockets reports whether err says the host could not make a socket
// for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
func outOfSockets(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM)
}

// trackNew is track for a datagram flow's first packet (UDP, ICMP echo),
// which has no flow: an entry the packet finds already is one no flow
// carries any more (whose socket is gone), and is replaced by a new one,
// with this socket's tuple. It reports false when the entry is another
// flow's, made meanwhile by a packet of the same flow on another
// goroutine: the caller drops this packet, and its socket.
func (u *Uplink) trackNew(p *conntrack.Packet, reply conntrack.Tuple) (conntrack.Result, bool) {
	res, ok := u.track(p, reply)
	if !ok || res.Created {
		return res, ok
	}
	orig := res.Orig()
	if u.flowOf(orig) != nil {
		return conntrack.Result{}, false
	}
	u.tbl.Load().DeleteID(0, orig, res.ID)
	u.stats.StaleEntries.Add(1)
	if res, ok = u.track(p, reply); ok && !res.Created {
		return conntrack.Result{}, false // another came between: the next packet goes through it
	}
	return res, ok
}

// untrack takes back the entry orig, id that an opener made (trackNew)
// and then could not give a flow (the uplink closing): no entry is left
// that no flow carries.
func (u *Uplink) untrack(orig conntrack.Tuple, id uint64) {
	if tbl := u.tbl.Load(); tbl != nil && id != 0 {
		tbl.DeleteID(0, orig, id)
	}
}

// track creates the entry of a flow from the bridge, with the packet that
// opened it and the host socket's tuple as the reply, and returns what
// the table said (the entry's ID, whether this packet created it).
func (u *Uplink) track(p *conntrack.Packet, reply conntrack.Tuple) (conntrack.Result, bool) {
	// The host translated the source; the host socket's tuple is the
	// host's to give, and an entry that still holds it is of a socket
	// gone (Supersede).
	res, err := u.tbl.Load().Track(0, p, conntrack.FixedReply{Reply: reply, Status: conntrack.SrcNAT, Supersede: true})
	if err != nil || res.Class == conntrack.ClassInvalid {
		switch {
		case errors.Is(err, conntrack.ErrTableFull):
			u.stats.DropTableFull.Add(1)
		case !errors.Is(err, conntrack.ErrClosed): // closing down: not a refusal
			u.stats.DropConntrack.Add(1)
		}
		u.log.Debug("hostnet: flow refused by conntrack", "tuple", p.Tuple, "err", err)
		return conntrack.Result{}, false
	}
	return res, true
}
