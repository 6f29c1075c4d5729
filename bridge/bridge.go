package bridge

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config and PortConfig.
const (
	DefaultName          = "br0"
	DefaultAgeingTime    = 300 * time.Second // as Linux's bridge
	DefaultMaxFDBEntries = 8192
	DefaultMTU           = 65520 // as RootlessKit and slirp4netns use
	DefaultQueueLen      = 1024
	MaxMTU               = 65520
)

// Ethernet header sizes: the header proper, and one 802.1Q tag that a frame
// may carry on top of its MTU.
const (
	etherHeader = 14
	vlanTag     = 4
)

// Config configures a Bridge. The zero value is a bridge named br0 with
// Linux's defaults.
type Config struct {
	// Name is the bridge's name, shown in FDB listings; empty means "br0".
	Name string

	// AgeingTime is how long a learned MAC stays in the FDB after its last
	// frame; zero means 300 s, negative means learned MACs never age.
	AgeingTime time.Duration

	// MaxFDBEntries caps the FDB; zero means 8192. When the table is full,
	// learning a new MAC evicts the least recently seen dynamic entry.
	MaxFDBEntries int

	// MTU is the largest frame payload the bridge forwards; zero means
	// 65520, the most it allows. Frames longer than MTU plus a 14-byte
	// Ethernet header and one 4-byte VLAN tag are dropped as oversize.
	MTU int

	// QueueLen is the default length, in frames, of each port's transmit
	// queue; zero means 1024. What overflows is dropped and counted.
	QueueLen int

	// Clock tells the time for ageing and capture timestamps; nil means
	// the system clock.
	Clock Clock

	// Logger receives port and FDB events; nil means no logging.
	Logger *slog.Logger
}

// Bridge is a learning Ethernet switch. Each port added with AddPort gets a
// receive goroutine and a transmit goroutine; forwarding happens on the
// receive goroutine of the ingress port, which hands frames to the egress
// ports' bounded transmit queues. All methods are safe for concurrent use.
type Bridge struct {
	name     string
	queueLen int
	maxFrame int
	clock    Clock
	epoch    time.Time
	log      *slog.Logger
	fdb      *fdb
	pools    *framePools

	// mu guards the port set and closed. Lock order: mu, then capMu, then
	// fdb.mu.
	mu     sync.Mutex
	ports  atomic.Pointer[[]*Attachment] // copy on write; read lock-free per batch
	enders atomic.Pointer[[]*Attachment] // the ports that are BatchEnders, as ports
	nextID int
	closed bool
	wg     sync.WaitGroup // every port's goroutines, detached ones' too, for Close

	capMu      sync.Mutex // guards changes to the capture sets
	capsClosed bool       // under capMu: Close has taken the bridge's captures
	capture    atomic.Pointer[[]*Capture]

	swChecksums atomic.Uint64 // pending checksums computed for non-offloading ports
	swSegmented atomic.Uint64 // GSO frames cut into segments for non-offloading ports
}

// New returns a bridge with no ports.
func New(cfg Config) (*Bridge, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	switch {
	case cfg.AgeingTime == 0:
		cfg.AgeingTime = DefaultAgeingTime
	case cfg.AgeingTime < 0:
		cfg.AgeingTime = 0
	}
	if cfg.MaxFDBEntries == 0 {
		cfg.MaxFDBEntries = DefaultMaxFDBEntries
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.MaxFDBEntries < 0:
		return nil, fmt.Errorf("bridge: MaxFDBEntries %d < 0", cfg.MaxFDBEntries)
	case cfg.MTU < 0 || cfg.MTU > MaxMTU:
		return nil, fmt.Errorf("bridge: MTU %d not in 1..%d", cfg.MTU, MaxMTU)
	case cfg.QueueLen < 0:
		return nil, fmt.Errorf("bridge: QueueLen %d < 0", cfg.QueueLen)
	}
	maxFrame := cfg.MTU + etherHeader + vlanTag
	b := &Bridge{
		name:     cfg.Name,
		queueLen: cfg.QueueLen,
		maxFrame: maxFrame,
		clock:    cfg.Clock,
		epoch:    cfg.Clock.Now(),
		log:      cfg.Logger.With("bridge", cfg.Name),
		fdb:      newFDB(cfg.AgeingTime, cfg.MaxFDBEntries),
		// One byte more than the largest frame, so a port's truncation of
		// a longer frame shows as oversize.
		pools: newFramePools(maxFrame + 1),
	}
	b.ports.Store(&[]*Attachment{})
	b.enders.Store(&[]*Attachment{})
	return b, nil
}

// Name returns the bridge's name.
func (b *Bridge) Name() string { return b.name }

// now is the bridge's time in nanoseconds since New, monotonic when the
// clock is.
func (b *Bridge) now() int64 { return int64(b.clock.Now().Sub(b.epoch)) }

// AddPort attaches p to the bridge and starts forwarding its frames. The
// bridge owns p from then on: it closes p when the port is detached (by
// Attachment.Close, Bridge.Close, or an error from p). After Close, AddPort
// returns an error wrapping net.ErrClosed and closes p.
func (b *Bridge) AddPort(p Port, cfg PortConfig) (*Attachment, error) {
	if p == nil {
		return nil, errors.New("bridge: add port: nil Port")
	}
	batch := p.BatchSize()
	if batch < 1 {
		return nil, fmt.Errorf("bridge: add port: BatchSize %d < 1", batch)
	}
	if cfg.QueueLen < 0 {
		return nil, fmt.Errorf("bridge: add port: QueueLen %d < 0", cfg.QueueLen)
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = b.queueLen
	}
	var sec *portSecurity
	if cfg.Security != nil {
		var err error
		if sec, err = cfg.Security.compile(); err != nil {
			return nil, fmt.Errorf("bridge: add port: %w", err)
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		p.Close()
		return nil, fmt.Errorf("bridge: add port: %w", net.ErrClosed)
	}
	id := b.nextID
	b.nextID++
	name := cfg.Name
	if name == "" {
		if n, ok := p.(Namer); ok {
			name = n.Name()
		}
	}
	if name == "" {
		name = fmt.Sprintf("port%d", id)
	}
	a := &Attachment{
		b:     b,
		port:  p,
		name:  name,
		batch: min(batch, 256),
		txq:   make(chan *frame, cfg.QueueLen),
		done:  make(chan struct{}),
		gone:  make(chan struct{}, 1),
	}
	if off, ok := p.(OffloadPort); ok && off.Offloading() {
		a.off = off
	}
	if d, ok := p.(DirectWriter); ok && d.WritesDirect() {
		a.direct = true
	}
	if e, ok := p.(BatchEnder); ok {
		a.ender = e
	}
	a.hairpin.Store(cfg.Hairpin)
	a.security.Store(sec)

	b.ports.Store(withPort(*b.ports.Load(), a))
	if a.ender != nil {
		b.enders.Store(withPort(*b.enders.Load(), a))
	}

	a.wg.Add(2)
	b.wg.Add(2)
	go a.rxLoop()
	go a.txLoop()
	b.log.Info("port added", "port", name)
	return a, nil
}

// detach removes a from the port set and forgets the MACs behind it.
func (b *Bridge) detach(a *Attachment) {
	b.mu.Lock()
	b.ports.Store(withoutPort(*b.ports.Load(), a))
	if a.ender != nil {
		b.enders.Store(withoutPort(*b.enders.Load(), a))
	}
	b.mu.Unlock()
	b.fdb.flushPort(a)
}

// withPort returns a copy of ps with a added, for a copy-on-write list.
func withPort(ps []*Attachment, a *Attachment) *[]*Attachment {
	out := make([]*Attachment, len(ps), len(ps)+1)
	copy(out, ps)
	out = append(out, a)
	return &out
}

// withoutPort returns a copy of ps without a.
func withoutPort(ps []*Attachment, a *Attachment) *[]*Attachment {
	out := make([]*Attachment, 0, len(ps))
	for _, p := range ps {
		if p != a {
			out = append(out, p)
		}
	}
	return &out
}

// Ports returns the attached ports in the order they were added.
func (b *Bridge) Ports() []*Attachment {
	ports := *b.ports.Load()
	out := make([]*Attachment, len(ports))
	copy(out, ports)
	return out
}

// Port returns the attached port called name, or nil.
func (b *Bridge) Port(name string) *Attachment {
	for _, p := range *b.ports.Load() {
		if p.name == name {
			return p
		}
	}
	return nil
}

// AddStatic adds a static FDB entry sending frames for mac to port, as
// `bridge fdb add MAC dev PORT master static` does. Static entries never
// age, are not moved by learning, are never evicted, and go away with
// their port. If the FDB is full of static entries it returns an error
// wrapping ErrFDBFull.
func (b *Bridge) AddStatic(mac MAC, port *Attachment) error {
	if !mac.isStation() {
		return fmt.Errorf("bridge: add static %v: not a unicast address", mac)
	}
	if port == nil || port.b != b || port.closing.Load() {
		return fmt.Errorf("bridge: add static %v: port not attached to %s", mac, b.name)
	}
	return b.fdb.addStatic(mac, port, b.now())
}

// DeleteFDB removes mac's entry, static or learned, and reports whether
// there was one.
func (b *Bridge) DeleteFDB(mac MAC) bool { return b.fdb.remove(mac) }

// FDB lists the live entries, sorted by port name then MAC.
func (b *Bridge) FDB() []FDBEntry { return b.fdb.list(b.now()) }

// FDBFull counts MACs that were not learned because the FDB was full of
// static entries.
func (b *Bridge) FDBFull() uint64 { return b.fdb.full.Load() }

// WriteFDB writes the FDB to w one entry a line, as `bridge fdb show`
// prints a bridge's entries:
//
//	02:42:ac:11:00:04 dev veth1 master docker0
//	02:42:ac:11:00:05 dev veth2 master docker0 static
func (b *Bridge) WriteFDB(w io.Writer) error { return writeFDB(w, b.name, b.FDB()) }

// Close detaches and closes every port, stops every capture, and waits for
// the bridge's goroutines to end, those of ports that detached themselves
// too (a port whose Close does not unblock its reads, as the Port contract
// requires, keeps it waiting). Closing twice is harmless.
func (b *Bridge) Close() error {
	b.mu.Lock()
	b.closed = true
	ports := *b.ports.Load()
	b.mu.Unlock()
	var errs []error
	for _, p := range ports {
		if err := p.Close(); err != nil {
			errs = append(errs, fmt.Errorf("port %s: %w", p.name, err))
		}
	}
	b.capMu.Lock()
	b.capsClosed = true
	caps := b.capture.Swap(nil)
	b.capMu.Unlock()
	if caps != nil {
		for _, c := range *caps {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Ports that detached themselves (their port failed) are gone from
	// the set; their goroutines end on their own, and Close waits for
	// them too.
	b.wg.Wait()
	return errors.Join(errs...)
}
