package conntrack

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Errors callers branch on.
var (
	// ErrTableFull: a new flow was refused because the table holds Max
	// entries and none near it could be evicted.
	ErrTableFull = errors.New("conntrack: table full")
	// ErrReplyInUse: the reply tuple chosen for a new flow is a tuple of
	// another live entry.
	ErrReplyInUse = errors.New("conntrack: reply tuple in use")
	// ErrFragment: IP fragments are reassembled before tracking.
	ErrFragment = errors.New("conntrack: fragment: reassemble before tracking")
	// ErrClosed: the table was closed.
	ErrClosed = errors.New("conntrack: table closed")
	// ErrBadReply: a Translator returned a reply tuple of another protocol
	// or without two addresses of one family.
	ErrBadReply = errors.New("conntrack: bad reply tuple")
)

// DefaultMax is the default maximum number of entries, the kernel's
// nf_conntrack_max on a machine with 4 GiB or more.
const DefaultMax = 262144

// maxEntries bounds Config.Max by what an index slot can address.
const maxEntries = 1 << 30

// Clock tells the time. Tests use one they advance by hand.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Table. The zero Config is the default table.
type Config struct {
	// Max is the maximum number of entries; 0 means DefaultMax.
	Max int
	// Timeouts are the idle timeouts; zero fields take the defaults.
	Timeouts Timeouts
	// TCPNoPickup refuses to create entries from TCP segments other than a
	// SYN. By default such a segment (a connection that predates the
	// table) is picked up and tracked liberally.
	TCPNoPickup bool
	// TCPLiberal turns off sequence number checks for every connection.
	TCPLiberal bool
	// Clock tells the time for timeouts. nil means the system clock, read
	// every 10 ms by the reaper and kept (a coarse clock, like the
	// kernel's jiffies: reading the time on every packet costs more than
	// the lookup), or read on every call when the reaper is off. A table
	// that sees no packet for 100 ms stops keeping it, so that an idle
	// table's reaper wakes only to expire entries, and not at all once it
	// is empty; the next packet reads the clock itself, and the reaper
	// keeps it again.
	Clock Clock
	// ExpireInterval is how often the background reaper runs; 0 means
	// 200 ms, and a negative value starts no reaper: the caller calls
	// Expire. An expired entry is never found, reaped or not; reaping
	// frees its memory and emits its Destroy event.
	ExpireInterval time.Duration
	// ExpireBatch is how many index slots the reaper examines per run;
	// 0 means 16384. It bounds the time one run holds a shard.
	ExpireBatch int
	// Logger receives debug logs of invalid packets and evictions; nil
	// means silent.
	Logger *slog.Logger
}

// Translator chooses the reply tuple of a new flow: the NAT hook. The
// table calls Translate when a packet creates an entry, before the
// entry is visible. Translate may call Table.Taken to test candidate
// tuples; a reply tuple that a concurrent insertion took in the meantime
// makes Track call Translate again (see Track). status may carry SrcNAT and
// DstNAT. An error refuses the flow and is returned by Track.
type Translator interface {
	Translate(t *Table, zone Zone, orig Tuple) (reply Tuple, status Status, err error)
}

// FixedReply is the Translator of an entry whose reply tuple is known
// already, and the translation it stands for (SrcNAT, DstNAT): a flow a
// proxy carries, whose other side is its own socket.
type FixedReply struct {
	Reply  Tuple
	Status Status
	// Supersede says Reply is the proxy's own socket's, which the host
	// has just given it: an entry that still holds that tuple as its
	// reply is of a socket gone (a connection closing in the table after
	// its socket closed, a TIME_WAIT the host does not keep) and is
	// destroyed for the new one (ReasonClosed), as a SYN reopens an entry
	// in TIME_WAIT, rather than the new flow refused with ErrReplyInUse.
	// An entry whose original tuple it is stays, and refuses the new.
	Supersede bool
}

// Translate implements Translator.
func (f FixedReply) Translate(*Table, Zone, Tuple) (Tuple, Status, error) {
	return f.Reply, f.Status, nil
}

// Result is what Track made of a packet.
type Result struct {
	Class Class
	// Dir is the direction of the packet; for ClassRelated, the direction
	// the ICMP error travels in its flow.
	Dir Dir
	// Created is set when this packet created the entry.
	Created bool
	// ID identifies the entry: unique among all entries of the table, ever.
	ID uint64
	// Status is the entry's status after the packet.
	Status Status
	// keys are the entry's tuples, kept in the table's compact form and
	// converted only when asked for.
	keys [2]key
}

// Orig returns the original tuple of the packet's entry.
func (r *Result) Orig() Tuple { return r.keys[Original].tuple() }

// Reply returns the reply tuple of the packet's entry: for a translated
// flow, the tuple its replies arrive with.
func (r *Result) Reply() Tuple { return r.keys[Reply].tuple() }

// Tuple returns the entry's tuple in direction d.
func (r *Result) Tuple(d Dir) Tuple { return r.keys[d&1].tuple() }

// Table is a connection-tracking table. It is safe for concurrent use; the
// lookup of an existing flow takes no write lock and does not allocate.
//
// Lock order: shard locks in increasing shard index, then an entry's lock,
// then the slab's lock, then the subscribers' lock.
type Table struct {
	cfg      Config
	to       Timeouts
	max      int
	clock    Clock
	epoch    time.Time
	seed     uint64
	shift    uint // shard of a hash: h >> shift
	shards   []shard
	slab     slab
	nextID   atomic.Uint64
	closed   atomic.Bool
	stats    tableStats
	subs     subscribers
	reap     reaper
	stop     chan struct{}
	done     chan struct{}
	closeOne sync.Once
	// coarse is set when the reaper keeps the time in coarseNow, every
	// coarseTick while packets come (ticking says whether they did), and
	// not at all once the table went quiet (clockParked), when the next
	// packet reads the clock itself and kicks the reaper.
	coarse    bool
	coarseNow atomic.Int64
	ticking   atomic.Int32
	kick      chan struct{}
}

// coarseTick is how often the reaper refreshes the coarse clock.
const coarseTick = 10 * time.Millisecond

// parkAfter is how long a table must see no packet before its reaper
// stops keeping the coarse clock, and ticks only to expire entries, until
// none is left: an idle gateway wakes five times a second at most, not a
// hundred.
const parkAfter = 100 * time.Millisecond

// The states of the coarse clock (Table.ticking).
const (
	clockQuiet  = iota // kept; no packet since the reaper's last tick
	clockActive        // kept; a packet since the reaper's last tick
	clockParked        // not kept: a packet reads the clock and kicks the reaper
)

type tableStats struct {
	inserted, invalid, earlyDrop, refused, clash, expired, deleted atomic.Uint64
}

// New returns an empty table and starts its reaper.
func New(cfg Config) (*Table, error) {
	if cfg.Max < 0 || cfg.Max > maxEntries {
		return nil, fmt.Errorf("conntrack: Max %d out of range [0, %d]", cfg.Max, maxEntries)
	}
	if cfg.ExpireBatch < 0 {
		return nil, fmt.Errorf("conntrack: negative ExpireBatch %d", cfg.ExpireBatch)
	}
	to, err := cfg.Timeouts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Table{cfg: cfg, to: to, max: cfg.Max, clock: cfg.Clock, seed: rand.Uint64()}
	if t.max == 0 {
		t.max = DefaultMax
	}
	if t.clock == nil {
		t.clock = systemClock{}
	}
	if cfg.ExpireInterval == 0 {
		t.cfg.ExpireInterval = 200 * time.Millisecond
	}
	if cfg.ExpireBatch == 0 {
		t.cfg.ExpireBatch = 16384
	}
	t.epoch = t.clock.Now()
	t.coarse = cfg.Clock == nil && t.cfg.ExpireInterval > 0
	// One shard per 4096 entries of capacity, at most 64: enough to spread
	// writers, few enough that a small table is one shard.
	n := min(max(1, t.max/4096), 64)
	nb := bits.Len(uint(n)) - 1 // round down to a power of two
	t.shards = make([]shard, 1<<nb)
	t.shift = 64 - uint(nb)
	t.slab.init(t.max)
	t.stop, t.done, t.kick = make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
	if t.cfg.ExpireInterval > 0 {
		go t.reaper()
	} else {
		close(t.done)
	}
	return t, nil
}

// Close stops the reaper and closes every subscription; later calls to
// Track return ErrClosed. The entries stay where they are (Len, Get and
// List still read them) with no Destroy events, now or later: call Flush
// first if subscribers must see them go. Close is idempotent.
func (t *Table) Close() error {
	t.closeOne.Do(func() {
		t.closed.Store(true)
		close(t.stop)
		<-t.done
		t.subs.closeAll()
	})
	return nil
}

// now is the time for a packet: the coarse clock's. The packet marks
// the table active, and after a quiet spell reads the clock itself and
// has the reaper keep it again.
func (t *Table) now() int64 {
	if !t.coarse {
		return t.readClock()
	}
	switch t.ticking.Load() {
	case clockQuiet:
		t.ticking.CompareAndSwap(clockQuiet, clockActive)
	case clockParked:
		n := t.readClock()
		t.coarseNow.Store(n) // before the state says it is kept again
		if t.ticking.CompareAndSwap(clockParked, clockActive) {
			select {
			case t.kick <- struct{}{}:
			default:
			}
		}
		return n
	}
	return t.coarseNow.Load()
}

// clockNow is the time for the reaper and for readers of the table: now,
// but neither marking the table active nor waking its clock.
func (t *Table) clockNow() int64 {
	if !t.coarse || t.ticking.Load() == clockParked {
		return t.readClock()
	}
	return t.coarseNow.Load()
}

func (t *Table) readClock() int64 { return int64(t.clock.Now().Sub(t.epoch)) }

func (t *Table) shardOf(h uint64) int {
	if t.shift == 64 {
		return 0
	}
	return int(h >> t.shift)
}

// Track classifies packet p, decoded by Packet.Decode, in zone and updates
// its flow: counters, state, status and timeout. A packet that may start a
// flow and matches none creates an entry, whose reply tuple nat chooses
// (nil: no translation, the reverse of the original tuple). The errors are
// ErrTableFull, ErrReplyInUse, ErrBadReply, ErrFragment, ErrClosed and
// those of nat; with an error the packet created nothing. When the reply
// tuple nat chose was taken by a concurrent flow before the insertion,
// Track asks nat again, a few times, before it gives up with
// ErrReplyInUse; so Translate may be called more than once for a packet
// and must hold no resources of its own for the tuple it returns.
func (t *Table) Track(zone Zone, p *Packet, nat Translator) (Result, error) {
	if t.closed.Load() {
		return Result{}, ErrClosed
	}
	switch p.Kind {
	case KindFlow:
	case KindICMPError:
		return t.related(zone, p), nil
	case KindFragment:
		return Result{}, ErrFragment
	default:
		t.stats.invalid.Add(1)
		return Result{}, nil
	}
	now := t.now()
	k := makeKey(zone, p.Tuple)
	h := k.hash(t.seed)
	for attempt, made := 0, 0; ; attempt++ {
		res, again := t.existing(&k, h, p, now, false)
		if !again {
			return res, nil
		}
		res, err := t.create(zone, &k, h, p, now, nat)
		switch {
		case err == nil:
			return res, nil
		case err == errRoom && made < maxRoom:
			// An entry in the way was removed (expired, superseded or
			// evicted): progress, not a lost race.
			made++
			attempt--
		case attempt == 3:
			if err == errRetry || err == errRoom {
				t.stats.refused.Add(1)
				err = ErrTableFull
			}
			return res, err
		case err == errRetry, err == errRoom:
		case nat != nil && errors.Is(err, ErrReplyInUse):
			// A concurrent flow took the tuple the Translator chose
			// after it tested it: choose again, as the kernel does.
		default:
			return res, err
		}
	}
}

// TrackTerminated is Track for a flow a proxy terminates, such as the
// host-socket uplink's: its entry says what crossed the proxy (say a
// container's 172.17.0.4:40000 → 192.0.2.9:443, and the host socket's
// 192.0.2.9:443 → 192.168.2.116:51000), while the packets the table sees
// are those between one end and the proxy, which stands in for the other
// end without translating anything. A packet from that end carries one of
// the entry's tuples and goes in its direction (the container's packets:
// original); a packet from the proxy (fromProxy) carries the reverse of
// one and goes the other way (the proxy's answers to the container:
// reply). So the entry follows the TCP state, window and counters of the
// terminated side, with one lookup per packet. TrackTerminated never
// creates an entry — the proxy does, with Track and a Translator giving
// its real tuple, once it has one — and ok reports whether p belonged to
// a live entry. ICMP errors, fragments and undecodable packets belong to
// none; Track handles the errors.
func (t *Table) TrackTerminated(zone Zone, p *Packet, fromProxy bool) (res Result, ok bool) {
	if t.closed.Load() || p.Kind != KindFlow {
		return Result{}, false
	}
	tp := p.Tuple
	if fromProxy {
		if tp, ok = tp.Reverse(); !ok {
			return Result{}, false
		}
	}
	k := makeKey(zone, tp)
	res, again := t.existing(&k, k.hash(t.seed), p, t.now(), fromProxy)
	return res, !again
}

// errRetry: an insertion lost a race and the lookup should run again.
var errRetry = errors.New("retry")

// errRoom: an insertion removed an entry in its way (an expired one
// holding a tuple, a superseded one, or one evicted from a full table)
// and should run again; this does not count as a lost race, up to
// maxRoom times a packet.
var errRoom = errors.New("retry: room made")

const maxRoom = 64

// existing processes p on the entry of k, if one is live; flip says p
// goes the other way than the direction k has in the entry. again is set
// when there is no live entry (or a SYN reopened a closed one): the caller
// goes on to create one.
func (t *Table) existing(k *key, h uint64, p *Packet, now int64, flip bool) (res Result, again bool) {
	s := &t.shards[t.shardOf(h)]
	s.mu.RLock()
	ref, ok := s.find(&t.slab, k, uint32(h))
	if !ok {
		s.mu.RUnlock()
		return Result{}, true
	}
	e := t.slab.at(ref)
	dir := refDir(ref)
	if flip {
		dir = 1 - dir
	}
	if e.deadline.Load() <= now {
		s.mu.RUnlock()
		return Result{}, true
	}
	s.found.Add(1)
	res, act := t.update(e, dir, p, now, false)
	id := e.id
	s.mu.RUnlock()
	switch act {
	case actReopen:
		t.deleteID(ref, id, ReasonClosed)
		return Result{}, true
	case actKill:
		t.deleteID(ref, id, ReasonClosed)
	}
	return res, false
}

type action uint8

const (
	actNone action = iota
	actReopen
	actKill
)

// update applies p, going in dir, to the live entry e. The caller holds a
// lock of a shard of e, so e cannot be freed meanwhile. creating is set for
// the packet that creates e, whose New event says all an Update would.
func (t *Table) update(e *entry, dir Dir, p *Packet, now int64, creating bool) (Result, action) {
	st := Status(e.status.Load())
	res := Result{Dir: dir, ID: e.id, keys: e.tuple}
	var timeout time.Duration
	var changed, uncounted bool
	switch p.Tuple.Proto {
	case ProtoTCP:
		e.mu.Lock()
		old := e.tcp.state
		v, d := e.tcp.segment(&p.TCP, dir, st, &t.to, t.cfg.TCPLiberal)
		switch v {
		case tcpReopen:
			e.mu.Unlock()
			return res, actReopen
		case tcpBad, tcpBadShrink:
			// An out-of-window FIN or RST answering one: the entry need
			// not outlive a connection its tracking lost, but one due
			// within 120 s keeps its time (nf_tcp_handle_invalid).
			if left := e.deadline.Load() - now; v == tcpBadShrink && left >= int64(120*time.Second) && left > int64(d) {
				e.deadline.Store(now + int64(d))
			}
			e.mu.Unlock()
			t.stats.invalid.Add(1)
			t.debug("invalid tcp segment", e, dir)
			res.Class, res.Status = ClassInvalid, st
			return res, actNone
		case tcpKill:
			e.mu.Unlock()
			e.account(dir, p.Len)
			res.Class, res.Status = classOf(dir, st), st
			return res, actKill
		case tcpIgnored:
			// Let through with no new state or timeout; a reply still
			// marks the entry SEEN_REPLY, as Linux's nf_conntrack_in
			// marks it for every reply its tracker lets through. Not
			// counted: Linux counts in nf_ct_refresh_acct, which an
			// ignored packet does not reach.
			e.mu.Unlock()
			uncounted = true
		default: // tcpAccept
			changed = old != e.tcp.state
			if st&SeenReply != 0 && e.tcp.assures(old) {
				changed = e.setStatus(Assured) || changed
			}
			// The timeout of the state this packet left, stored with
			// the state: two packets of one connection at once (an
			// ACK, an RST) would otherwise store each other's, and a
			// closed connection could keep an established one's five
			// days. (Linux refreshes after its lock, and has that gap.)
			setDeadline(e, now, d)
			e.mu.Unlock()
			// No timeout (d 0) is a SYN sent again before any reply,
			// which renews nothing and, as in Linux, is not counted.
			uncounted = d == 0
		}
	case ProtoUDP:
		timeout = t.to.UDP
		if st&SeenReply != 0 && now >= e.streamAt() {
			timeout = t.to.UDPStream
			changed = e.setStatus(Assured)
		}
	case ProtoICMP, ProtoICMPv6:
		if dir == Reply && icmpIsRequest(p.Tuple.Proto, p.Tuple.ICMPType()) {
			// A request matching a reply tuple is a query of its own
			// going the other way, not an answer.
			t.stats.invalid.Add(1)
			res.Class, res.Status = ClassInvalid, st
			return res, actNone
		}
		timeout = t.to.ICMP
	case protoGRE:
		// Traffic both ways makes it a tunnel, not a probe (gre_packet).
		timeout = t.to.GRE
		if st&SeenReply != 0 {
			timeout = t.to.GREStream
			changed = e.setStatus(Assured)
		}
	default:
		timeout = t.to.Generic
	}
	setDeadline(e, now, timeout)
	if !uncounted {
		e.account(dir, p.Len)
	}
	if dir == Reply && st&SeenReply == 0 {
		changed = e.setStatus(SeenReply) || changed
	}
	res.Status = Status(e.status.Load())
	res.Class = classOf(dir, st)
	if changed && !creating && t.subs.active(EventUpdate) {
		t.subs.emit(Event{Type: EventUpdate, Entry: t.snapshot(e, now)})
	}
	return res, actNone
}

// setDeadline sets e to expire timeout after now; a timeout of zero
// leaves it as it is.
func setDeadline(e *entry, now int64, timeout time.Duration) {
	if d := now + int64(timeout); timeout > 0 && e.deadline.Load() != d {
		// With the coarse clock most packets find the deadline already
		// set: a read costs less than a write to a shared line.
		e.deadline.Store(d)
	}
}

// classOf is the class of a packet going in dir of a flow with status st
// before it.
func classOf(dir Dir, st Status) Class {
	if dir == Original && st&SeenReply == 0 {
		return ClassNew
	}
	return ClassEstablished
}

// related classifies an ICMP error by the flow of the packet it quotes.
func (t *Table) related(zone Zone, p *Packet) Result {
	r, ok := p.Quoted.Reverse()
	if ok && p.Tuple.Dst.Unmap() == p.Quoted.Src.Unmap() {
		// The error goes back to the sender of the quoted packet, so it
		// travels the way replies to that packet travel.
		k := makeKey(zone, r)
		h := k.hash(t.seed)
		s := &t.shards[t.shardOf(h)]
		now := t.now()
		s.mu.RLock()
		ref, found := s.find(&t.slab, &k, uint32(h))
		if found {
			e := t.slab.at(ref)
			if e.deadline.Load() > now {
				res := Result{
					Class: ClassRelated, Dir: refDir(ref), ID: e.id,
					keys:   e.tuple,
					Status: Status(e.status.Load()),
				}
				s.mu.RUnlock()
				s.found.Add(1)
				return res
			}
		}
		s.mu.RUnlock()
	}
	t.stats.invalid.Add(1)
	return Result{}
}

// create makes the entry of a packet that matched no live entry.
func (t *Table) create(zone Zone, k *key, h uint64, p *Packet, now int64, nat Translator) (Result, error) {
	var tcp tcpConn
	switch tp := p.Tuple.Proto; {
	case tp == ProtoTCP:
		if !tcp.start(&p.TCP, t.cfg.TCPNoPickup, t.cfg.TCPLiberal) {
			t.stats.invalid.Add(1)
			return Result{}, nil
		}
	case tp.isICMP():
		if !icmpIsRequest(tp, p.Tuple.ICMPType()) {
			t.stats.invalid.Add(1) // an answer to a query never seen
			return Result{}, nil
		}
	}
	orig := p.Tuple
	reply, _ := orig.Reverse()
	var st Status
	if nat != nil {
		var err error
		reply, st, err = nat.Translate(t, zone, orig)
		if err != nil {
			t.stats.refused.Add(1)
			return Result{}, err
		}
		if reply.Proto != orig.Proto || !reply.IsValid() {
			return Result{}, fmt.Errorf("%w: %v for %v", ErrBadReply, reply, orig)
		}
		st &= natMask
	}
	rk := makeKey(zone, reply)
	rh := rk.hash(t.seed)

	supersede := false
	switch f := nat.(type) {
	case FixedReply:
		supersede = f.Supersede
	case *FixedReply:
		supersede = f.Supersede
	}
	e, err := t.insert(k, h, &rk, rh, supersede)
	if err != nil {
		return Result{}, err
	}
	// e is in the index but unreachable until the shard locks drop; the
	// caller of insert still holds them.
	e.status.Store(uint32(st))
	if p.Tuple.Proto == ProtoTCP {
		e.tcp = tcp
	} else {
		e.setStreamAt(now + int64(2*time.Second))
	}
	e.deadline.Store(now + int64(time.Hour)) // set for real by update
	res, _ := t.update(e, Original, p, now, true)
	res.Created = true
	t.stats.inserted.Add(1)
	if t.subs.active(EventNew) {
		// Under the shard locks, so no event of the entry can overtake it.
		t.subs.emit(Event{Type: EventNew, Entry: t.snapshot(e, now)})
	}
	t.unlockPair(t.shardOf(h), t.shardOf(rh))
	return res, nil
}

// insert adds an entry with keys k and rk to the index and returns it with
// both shard locks held. On an error no lock is held. A live entry that
// holds rk is destroyed when supersede (FixedReply.Supersede), else
// refused.
func (t *Table) insert(k *key, h uint64, rk *key, rh uint64, supersede bool) (*entry, error) {
	a, b := t.shardOf(h), t.shardOf(rh)
	t.lockPair(a, b)
	sa, sb := &t.shards[a], &t.shards[b]
	now := t.now()
	if ref, ok := sa.find(&t.slab, k, uint32(h)); ok {
		e := t.slab.at(ref)
		id, live := e.id, e.deadline.Load() > now
		t.unlockPair(a, b)
		if !live {
			t.deleteID(ref, id, ReasonTimeout)
			return nil, errRoom
		}
		return nil, errRetry // another packet of the flow won the race
	}
	if *rk != *k {
		if ref, ok := sb.find(&t.slab, rk, uint32(rh)); ok {
			e := t.slab.at(ref)
			id, live := e.id, e.deadline.Load() > now
			t.unlockPair(a, b)
			switch {
			case !live:
				t.deleteID(ref, id, ReasonTimeout)
			case supersede && refDir(ref) == Reply:
				// Another socket's reply tuple, gone; an entry whose
				// original tuple this is, is a live flow's, and stays.
				t.deleteID(ref, id, ReasonClosed)
			default:
				t.stats.clash.Add(1)
				return nil, fmt.Errorf("%w: %v", ErrReplyInUse, rk.tuple())
			}
			return nil, errRoom
		}
	}
	idx, ok := t.slab.alloc(k, rk, t.nextID.Add(1))
	if !ok {
		t.unlockPair(a, b)
		if _, _, ok := t.earlyDrop(h); ok || t.slab.len() < t.max {
			// Evicted one, or others freed room since the allocation
			// failed (evicting for flows of their own): try again.
			return nil, errRoom
		}
		t.stats.refused.Add(1)
		return nil, ErrTableFull
	}
	ref := idx << 1
	e := t.slab.at(ref)
	sa.insert(ref|uint32(Original), uint32(h))
	if *rk != *k {
		sb.insert(ref|uint32(Reply), uint32(rh))
	}
	return e, nil
}

func (t *Table) lockPair(a, b int) {
	if a > b {
		a, b = b, a
	}
	t.shards[a].mu.Lock()
	if b != a {
		t.shards[b].mu.Lock()
	}
}

func (t *Table) unlockPair(a, b int) {
	t.shards[a].mu.Unlock()
	if b != a {
		t.shards[b].mu.Unlock()
	}
}

// deleteID removes the entry at ref if it is still the entry id, and emits
// its Destroy event. It reports whether it removed it.
func (t *Table) deleteID(ref uint32, id uint64, why Reason) bool {
	// ref was found under a shard lock since dropped: the slot may have
	// been freed, reused, or even released with its chunk. Which shards
	// to lock depends on the keys, so read them under the slab lock, then
	// check again under the shard locks that the slot still holds entry id.
	t.slab.mu.Lock()
	e := t.slab.atLocked(ref)
	if e == nil || e.id != id {
		t.slab.mu.Unlock()
		return false
	}
	k0, k1 := e.tuple[Original], e.tuple[Reply]
	t.slab.mu.Unlock()
	h0, h1 := k0.hash(t.seed), k1.hash(t.seed)
	a, b := t.shardOf(h0), t.shardOf(h1)
	t.lockPair(a, b)
	defer t.unlockPair(a, b)
	t.slab.mu.Lock()
	same := t.slab.atLocked(ref) == e && e.id == id
	t.slab.mu.Unlock()
	if !same {
		return false
	}
	if why == ReasonTimeout && e.deadline.Load() > t.clockNow() {
		// A packet refreshed it since the reaper picked it (its time
		// read before the reaper's): as Linux's gc checks again
		// before it kills, it lives.
		return false
	}
	if t.subs.active(EventDestroy) {
		t.subs.emit(Event{Type: EventDestroy, Reason: why, Entry: t.snapshot(e, t.clockNow())})
	}
	t.shards[a].remove(ref&^1, uint32(h0))
	if k1 != k0 {
		t.shards[b].remove(ref&^1|uint32(Reply), uint32(h1))
	}
	t.slab.free(ref >> 1)
	switch why {
	case ReasonTimeout:
		t.stats.expired.Add(1)
	case ReasonEvicted:
		t.stats.earlyDrop.Add(1)
	default:
		t.stats.deleted.Add(1)
	}
	return true
}

// earlyDropRange is how many index slots around a new flow's home position
// are searched for an entry to evict, like the kernel's eviction range.
const earlyDropRange = 128

// earlyDrop evicts one entry near the home slot of hash h to make room: an
// expired entry, else one that is not assured, else an assured TCP
// connection that is closing. It reports false when none near may go;
// else the evicted entry's original tuple and ID, or a zero ID when the
// one it picked was gone or refreshed before it could evict it (the
// caller looks again).
func (t *Table) earlyDrop(h uint64) (orig Tuple, id uint64, ok bool) {
	s := &t.shards[t.shardOf(h)]
	now := t.now()
	var (
		best     uint32
		bestID   uint64
		bestRank = 0
	)
	s.mu.RLock()
	n := len(s.slots)
	if n > 0 {
		mask := n - 1
		for i, j := 0, int(uint32(h))&mask; i < min(n, earlyDropRange); i, j = i+1, (j+1)&mask {
			ref := uint32(s.slots[j])
			if ref == 0 {
				continue
			}
			e := t.slab.at(ref)
			rank := 0
			switch st := Status(e.status.Load()); {
			case e.deadline.Load() <= now:
				rank = 3
			case st&Assured == 0:
				rank = 2
			case e.tuple[0].proto == ProtoTCP && e.tcpState().closing():
				rank = 1
			}
			if rank > bestRank {
				best, bestID, bestRank = ref, e.id, rank
				orig = e.tuple[Original].tuple()
				if rank == 3 {
					break
				}
			}
		}
	}
	s.mu.RUnlock()
	if bestRank == 0 {
		return Tuple{}, 0, false
	}
	why := ReasonEvicted
	if bestRank == 3 {
		why = ReasonTimeout
	}
	if !t.deleteID(best, bestID, why) {
		// Someone else freed it first, or a packet refreshed the expired
		// one since it was picked: room perhaps, but none of its making.
		return Tuple{}, 0, true
	}
	return orig, bestID, true
}

// MakeRoom makes room in a full table for a new entry of tp in zone, as
// Track does for a new flow: it evicts one entry near tp's place (an
// expired one, else one not assured, else a closing TCP connection) and
// returns its original tuple and ID; a zero ID when the table had room,
// or others freed it before MakeRoom could. It reports false when the
// table is full and nothing near may go, counted as a refusal. A caller
// that opens a flow before the flow's entry is made (nat/hostnet, for a
// published port's new client, whose entry the gateway makes from its
// first packet) asks first, and ends the evicted entry's flow at once.
func (t *Table) MakeRoom(zone Zone, tp Tuple) (evicted Tuple, id uint64, ok bool) {
	if t.closed.Load() {
		return Tuple{}, 0, false
	}
	k := makeKey(zone, tp)
	h := k.hash(t.seed)
	for range maxRoom {
		if t.slab.len() < t.max {
			return Tuple{}, 0, true
		}
		if evicted, id, ok = t.earlyDrop(h); !ok {
			t.stats.refused.Add(1)
			return Tuple{}, 0, false
		}
		if id != 0 {
			return evicted, id, true
		}
	}
	return Tuple{}, 0, true // lost every race: the caller takes it as no room of its own
}

// Taken reports whether tp is the original or reply tuple of a live entry
// in zone. A port allocator calls it to test candidates.
func (t *Table) Taken(zone Zone, tp Tuple) bool {
	_, _, ok := t.lookup(zone, tp, false)
	return ok
}

// Get returns the live entry that has tp as one of its tuples, and the
// direction tp is in it.
func (t *Table) Get(zone Zone, tp Tuple) (Entry, Dir, bool) {
	e, dir, ok := t.lookup(zone, tp, true)
	return e, dir, ok
}

func (t *Table) lookup(zone Zone, tp Tuple, snap bool) (Entry, Dir, bool) {
	k := makeKey(zone, tp)
	h := k.hash(t.seed)
	s := &t.shards[t.shardOf(h)]
	now := t.clockNow() // a look, not a packet: a parked clock stays parked
	s.mu.RLock()
	defer s.mu.RUnlock()
	ref, ok := s.find(&t.slab, &k, uint32(h))
	if !ok {
		return Entry{}, 0, false
	}
	e := t.slab.at(ref)
	if e.deadline.Load() <= now {
		return Entry{}, 0, false
	}
	if !snap {
		return Entry{}, refDir(ref), true
	}
	return t.snapshot(e, now), refDir(ref), true
}

// Delete removes the entry that has tp as one of its tuples and reports
// whether there was one. Subscribers see it destroyed with ReasonDeleted.
func (t *Table) Delete(zone Zone, tp Tuple) bool { return t.DeleteID(zone, tp, 0) }

// DeleteID is Delete of the entry with ID id only (Result.ID, Entry.ID),
// or of any when id is 0: the caller that made an entry removes it
// without removing another that took its tuple since.
//
// An entry expired but not reaped yet is not found, as Get does not find
// it: it goes now, destroyed as timed out, and DeleteID reports false.
func (t *Table) DeleteID(zone Zone, tp Tuple, id uint64) bool {
	k := makeKey(zone, tp)
	h := k.hash(t.seed)
	s := &t.shards[t.shardOf(h)]
	now := t.clockNow()
	s.mu.RLock()
	ref, ok := s.find(&t.slab, &k, uint32(h))
	var found uint64
	expired := false
	if ok {
		e := t.slab.at(ref)
		found, expired = e.id, e.deadline.Load() <= now
	}
	s.mu.RUnlock()
	if ok && expired {
		t.deleteID(ref, found, ReasonTimeout)
		return false
	}
	return ok && (id == 0 || found == id) && t.deleteID(ref, found, ReasonDeleted)
}

// SetMark sets the mark of the entry that has tp as one of its tuples;
// false when there is none (or it expired).
func (t *Table) SetMark(zone Zone, tp Tuple, mark uint32) bool {
	k := makeKey(zone, tp)
	h := k.hash(t.seed)
	s := &t.shards[t.shardOf(h)]
	now := t.clockNow()
	s.mu.RLock()
	defer s.mu.RUnlock()
	ref, ok := s.find(&t.slab, &k, uint32(h))
	if !ok {
		return false
	}
	e := t.slab.at(ref)
	if e.deadline.Load() <= now {
		return false
	}
	e.mark.Store(mark)
	return true
}

// Flush removes every entry; subscribers see each destroyed with
// ReasonFlushed. It returns how many it removed.
func (t *Table) Flush() int {
	n := 0
	for i := range t.shards {
		// Until a look finds the shard empty: others (the reaper, a
		// Delete, another Flush) may remove every entry of one batch
		// before this one does, and more than a batch may be left.
		for vs := t.collect(i, all); len(vs) > 0; vs = t.collect(i, all) {
			for _, v := range vs {
				if t.deleteID(v.ref, v.id, ReasonFlushed) {
					n++
				}
			}
		}
	}
	return n
}

func all(*entry) bool { return true }

type victim struct {
	ref uint32
	id  uint64
}

// collect returns the original-direction entries of shard i for which
// pick holds, at most 1024.
func (t *Table) collect(i int, pick func(*entry) bool) []victim {
	out, _, _ := t.scan(i, 0, -1, pick)
	return out
}

// LastID returns the ID of the last entry made: entries made later have
// higher IDs. A flow made before its entry (nat/hostnet's, into the
// container) notes it, to know its own entry from an older one of the
// same tuple.
func (t *Table) LastID() uint64 { return t.nextID.Load() }

// Len returns the number of entries in the table, counting expired entries
// the reaper has not removed yet.
func (t *Table) Len() int { return t.slab.len() }

// Max returns the maximum number of entries.
func (t *Table) Max() int { return t.max }

// Stats are the table's counters, like the kernel's conntrack -S.
type Stats struct {
	Entries    int    // entries, including expired ones not yet reaped
	Found      uint64 // packets that matched a live entry
	Inserted   uint64 // entries created
	Invalid    uint64 // packets classified invalid
	EarlyDrop  uint64 // entries evicted to make room for new flows
	Refused    uint64 // new flows refused: table full, or by the Translator
	Clash      uint64 // insertions refused because the reply tuple was in use (each try of a retried Translator counts)
	Expired    uint64 // entries removed because their timeout passed
	Deleted    uint64 // entries removed by Delete, Flush, or their own end (RST, reopen)
	EventsLost uint64 // events no subscriber had room for
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	st := Stats{
		Entries:    t.Len(),
		Inserted:   t.stats.inserted.Load(),
		Invalid:    t.stats.invalid.Load(),
		EarlyDrop:  t.stats.earlyDrop.Load(),
		Refused:    t.stats.refused.Load(),
		Clash:      t.stats.clash.Load(),
		Expired:    t.stats.expired.Load(),
		Deleted:    t.stats.deleted.Load(),
		EventsLost: t.subs.lost.Load(),
	}
	for i := range t.shards {
		st.Found += t.shards[i].found.Load()
	}
	return st
}

func (t *Table) debug(msg string, e *entry, dir Dir) {
	if t.cfg.Logger != nil {
		t.cfg.Logger.Debug("conntrack: "+msg, "orig", e.tuple[Original].tuple(), "dir", dir)
	}
}
