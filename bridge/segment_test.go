package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// gsoFrame builds an Ethernet frame holding one TCP segment over IPv4 or
// IPv6 with payload bytes of data, its checksum pending (the field holds
// the pseudo-header sum, as a sender with offloads leaves it), described
// by the returned Offload with segment size mss.
func gsoFrame(v6 bool, payload []byte, mss int, flags uint8) ([]byte, Offload) {
	l3, iph := etherHeader, 20
	if v6 {
		iph = 40
	}
	const thl = 32 // with options, to check they are copied
	f := make([]byte, l3+iph+thl+len(payload))
	copy(f[0:6], macB[:])
	copy(f[6:12], macA[:])
	ip := f[l3:]
	var pseudo uint64
	if v6 {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(thl+len(payload)))
		ip[6], ip[7] = 6, 64
		copy(ip[8:], net.ParseIP("2001:db8::a"))
		copy(ip[24:], net.ParseIP("2001:db8::b"))
		for i := 8; i < 40; i += 4 {
			pseudo += uint64(binary.BigEndian.Uint32(ip[i:]))
		}
	} else {
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(iph+thl+len(payload)))
		binary.BigEndian.PutUint16(ip[4:], 0xfff0) // the identifier wraps
		ip[6], ip[8], ip[9] = 0x40, 64, 6
		copy(ip[12:], []byte{192, 0, 2, 10, 192, 0, 2, 11})
		pseudo = uint64(binary.BigEndian.Uint32(ip[12:])) + uint64(binary.BigEndian.Uint32(ip[16:]))
		binary.BigEndian.PutUint16(ip[10:], ^sum16(ip[:20]))
	}
	tcp := ip[iph:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], 0xfffff000) // the sequence wraps
	binary.BigEndian.PutUint32(tcp[8:], 12345)
	tcp[12] = thl / 4 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 502)
	for i := 20; i < thl; i++ {
		tcp[i] = 1 // NOPs
	}
	copy(tcp[thl:], payload)
	pseudo += 6 + uint64(len(tcp))
	for pseudo > 0xffff {
		pseudo = pseudo>>16 + pseudo&0xffff
	}
	binary.BigEndian.PutUint16(tcp[16:], uint16(pseudo))
	kind := uint8(GSOTCPv4)
	if v6 {
		kind = GSOTCPv6
	}
	return f, Offload{
		Flags: OffloadNeedsCsum, GSO: kind, HdrLen: uint16(l3 + iph + thl), GSOSize: uint16(mss),
		CsumStart: uint16(l3 + iph), CsumOffset: 16,
	}
}

// checkSegments verifies what Segment made of a GSO frame: every segment
// within the size, its checksums right, its sequence number where its
// payload starts, the flags split as the kernel splits them, and the
// payloads together the original.
func checkSegments(t *testing.T, v6 bool, segs [][]byte, payload []byte, mss int, flags uint8) {
	t.Helper()
	iph := 20
	if v6 {
		iph = 40
	}
	var got []byte
	for i, s := range segs {
		ip := s[etherHeader:]
		tcp := ip[iph:]
		thl := int(tcp[12]>>4) * 4
		data := tcp[thl:]
		if len(data) > mss || (i < len(segs)-1 && len(data) != mss) {
			t.Fatalf("segment %d carries %d bytes, mss %d", i, len(data), mss)
		}
		var pseudo uint64
		if v6 {
			if n := int(binary.BigEndian.Uint16(ip[4:])); n != len(tcp) {
				t.Fatalf("segment %d: payload length %d, want %d", i, n, len(tcp))
			}
			for j := 8; j < 40; j += 4 {
				pseudo += uint64(binary.BigEndian.Uint32(ip[j:]))
			}
		} else {
			if n := int(binary.BigEndian.Uint16(ip[2:])); n != len(ip) {
				t.Fatalf("segment %d: total length %d, want %d", i, n, len(ip))
			}
			if id := binary.BigEndian.Uint16(ip[4:]); id != 0xfff0+uint16(i) {
				t.Fatalf("segment %d: identifier %#x", i, id)
			}
			if naiveSum16(ip[:20]) != 0xffff {
				t.Fatalf("segment %d: IPv4 header checksum does not verify", i)
			}
			pseudo = uint64(binary.BigEndian.Uint32(ip[12:])) + uint64(binary.BigEndian.Uint32(ip[16:]))
		}
		s := pseudo + 6 + uint64(len(tcp)) + uint64(naiveSum16(tcp))
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
		if s != 0xffff {
			t.Fatalf("segment %d: TCP checksum does not verify", i)
		}
		if seq := binary.BigEndian.Uint32(tcp[4:]); seq != 0xfffff000+uint32(len(got)) {
			t.Fatalf("segment %d: sequence %#x, want %#x", i, seq, 0xfffff000+uint32(len(got)))
		}
		want := flags
		if i < len(segs)-1 {
			want &^= tcpFIN | tcpPSH
		}
		if i > 0 {
			want &^= tcpCWR
		}
		if tcp[13] != want {
			t.Fatalf("segment %d: flags %#x, want %#x", i, tcp[13], want)
		}
		got = append(got, data...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("payloads rejoined differ from the original (%d bytes, want %d)", len(got), len(payload))
	}
}

func TestSegment(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const flags = tcpCWR | tcpPSH | tcpFIN | 0x10 // ACK
	for _, v6 := range []bool{false, true} {
		for _, tc := range []struct{ size, mss int }{
			{0, 1448}, {1, 1448}, {1448, 1448}, {1449, 1448}, {64000, 1448}, {65000, 8960}, {3000, 1},
		} {
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(rng.Uint32())
			}
			f, o := gsoFrame(v6, payload, tc.mss, flags)
			orig := bytes.Clone(f)
			var segs [][]byte
			buf := make([]byte, MaxGSOFrame)
			err := Segment(f, etherHeader, o, buf, func(s []byte) { segs = append(segs, bytes.Clone(s)) })
			if err != nil {
				t.Fatalf("v6=%v %d bytes mss %d: %v", v6, tc.size, tc.mss, err)
			}
			if want := max(1, (tc.size+tc.mss-1)/tc.mss); len(segs) != want {
				t.Fatalf("v6=%v %d bytes mss %d: %d segments, want %d", v6, tc.size, tc.mss, len(segs), want)
			}
			checkSegments(t, v6, segs, payload, tc.mss, flags)
			if !bytes.Equal(f, orig) {
				t.Fatal("Segment modified its input")
			}
		}
	}
}

func TestSegmentRefuses(t *testing.T) {
	f, o := gsoFrame(false, make([]byte, 3000), 1448, 0x10)
	buf := make([]byte, MaxGSOFrame)
	emit := func([]byte) { t.Fatal("emitted a segment of a refused frame") }
	bad := []struct {
		name  string
		frame []byte
		o     Offload
		buf   []byte
		err   error
	}{
		{"not GSO", f, Offload{Flags: OffloadNeedsCsum, CsumStart: o.CsumStart, CsumOffset: 16}, buf, ErrNotGSO},
		{"mss 0", f, func() Offload { o := o; o.GSOSize = 0; return o }(), buf, ErrBadGSO},
		{"checksum not pending", f, func() Offload { o := o; o.Flags = 0; return o }(), buf, ErrBadGSO},
		{"wrong transport offset", f, func() Offload { o := o; o.CsumStart += 4; return o }(), buf, ErrBadGSO},
		{"IPv6 type on IPv4", f, func() Offload { o := o; o.GSO = GSOTCPv6; return o }(), buf, ErrBadGSO},
		{"cut short", f[:40], o, buf, ErrBadGSO},
		{"IPv4 header under 20 bytes", func() []byte {
			// IHL 4: the TCP header 16 bytes after the IP header's start,
			// where CsumStart says it is. Linux's inet_gso_segment refuses
			// it; the bridge cut it into segments as malformed as it.
			g := append(bytes.Clone(f[:etherHeader+16]), f[etherHeader+20:]...)
			g[etherHeader] = 0x44
			return g
		}(), func() Offload { o := o; o.CsumStart -= 4; return o }(), buf, ErrBadGSO},
		{"buffer too small", f, o, buf[:100], ErrSegmentBuf},
	}
	for _, tc := range bad {
		if err := Segment(tc.frame, etherHeader, tc.o, tc.buf, emit); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
}

func TestSegmentDoesNotAllocate(t *testing.T) {
	f, o := gsoFrame(false, make([]byte, 60000), 1448, 0x10)
	buf := make([]byte, 2048)
	n := 0
	emit := func([]byte) { n++ }
	var err error
	if a := testing.AllocsPerRun(20, func() { err = Segment(f, etherHeader, o, buf, emit) }); a != 0 {
		t.Fatalf("Segment allocates %v times per frame", a)
	}
	if err != nil || n != 21*42 { // 60000 bytes in 42 segments, 20 runs and a warm-up
		t.Fatalf("Segment made %d segments: %v", n, err)
	}
}

// offloadPipe is a Pipe that claims to pass offloads along, carrying each
// frame's Offload beside it, so tests can feed the bridge GSO frames.
type offloadPipe struct {
	*Pipe
	in  chan Offload // the Offload of each frame the test writes to the peer
	out chan Offload // the Offload of each frame the bridge writes
}

func (p *offloadPipe) Offloading() bool { return true }

func (p *offloadPipe) ReadFramesOffload(bufs [][]byte, sizes []int, meta []Offload) (int, error) {
	n, err := p.Pipe.ReadFrames(bufs[:1], sizes)
	if n == 1 {
		select {
		case meta[0] = <-p.in:
		case <-time.After(5 * time.Second):
			return 0, errors.New("test wrote a frame without its Offload")
		}
	}
	return n, err
}

// WriteFramesOffload writes the frames one at a time, each Offload right
// after its frame: the test reads a frame, then its Offload, and only
// then the next frame, which a batch written whole before its Offloads
// would wait for for ever.
func (p *offloadPipe) WriteFramesOffload(bufs [][]byte, meta []Offload) (int, error) {
	for i := range bufs {
		if _, err := p.Pipe.WriteFrames(bufs[i : i+1]); err != nil {
			return i, err
		}
		select {
		case p.out <- meta[i]:
		default: // the test stopped reading; never hold up Close
		}
	}
	return len(bufs), nil
}

// The bridge hands a GSO frame as it is to a port that passes offloads
// along, and cuts it into segments with complete checksums for one that
// does not; a GSO frame larger than the bridge's MTU is not oversize.
func TestBridgeGSO(t *testing.T) {
	br, err := New(Config{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	oa, ob := NewPipe(PipeConfig{})
	ca, cb := NewPipe(PipeConfig{})
	da, db := NewPipe(PipeConfig{})
	off := &offloadPipe{Pipe: oa, in: make(chan Offload, 4), out: make(chan Offload, 4)}
	offPeer := &offloadPipe{Pipe: ca, in: make(chan Offload, 4), out: make(chan Offload, 4)}
	for _, p := range []Port{off, offPeer, da} {
		if _, err := br.AddPort(p, PortConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	payload := make([]byte, 20000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	f, o := gsoFrame(false, payload, 1448, 0x18)
	// Teach the bridge where macB and macC are first: macB behind the
	// plain port, then the offloading peer.
	send := func(p *Pipe, ch chan Offload, fr []byte, o Offload) {
		if ch != nil {
			ch <- o
		}
		if err := p.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	send(db, nil, ether(macX, macB, 0x88b5, 50, 1), Offload{})
	send(cb, offPeer.in, ether(macX, macC, 0x88b5, 50, 2), Offload{})
	// Both floods arrive at the offloading source; drain them.
	for range 2 {
		recvPipe(t, ob)
		<-off.out
	}
	recvPipe(t, cb) // the plain port's flood at the offloading peer
	<-offPeer.out
	recvPipe(t, db) // the peer's flood at the plain port

	// To the plain port: segments.
	send(ob, off.in, f, o)
	var segs [][]byte
	for n := 0; n < len(payload); {
		s := recvPipe(t, db)
		segs = append(segs, s)
		n += len(s) - (etherHeader + 20 + 32)
	}
	checkSegments(t, false, segs, payload, 1448, 0x18)

	// To the offloading peer: the frame as it came.
	g := bytes.Clone(f)
	copy(g[0:6], macC[:])
	send(ob, off.in, g, o)
	if got := recvPipe(t, cb); !bytes.Equal(got, g) {
		t.Fatal("GSO frame to an offloading port changed")
	}
	if got := <-offPeer.out; got != o {
		t.Fatalf("offload %+v, want %+v", got, o)
	}
}

// A tagged GSO frame is cut like an untagged one, the tag kept in every
// segment.
func TestSegmentVLAN(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		payload := make([]byte, 5000)
		for i := range payload {
			payload[i] = byte(i*13 + 1)
		}
		f, o := gsoFrame(v6, payload, 1000, 0x19) // FIN|PSH|ACK
		tagged := make([]byte, len(f)+4)
		copy(tagged, f[:12])
		binary.BigEndian.PutUint16(tagged[12:], 0x8100)
		binary.BigEndian.PutUint16(tagged[14:], 0x0123)
		copy(tagged[16:], f[12:])
		o.CsumStart += 4
		o.HdrLen += 4
		var segs [][]byte
		buf := make([]byte, 2000)
		if err := Segment(tagged, l3Offset(tagged), o, buf, func(s []byte) {
			if binary.BigEndian.Uint16(s[12:]) != 0x8100 || binary.BigEndian.Uint16(s[14:]) != 0x0123 {
				t.Fatal("tag lost")
			}
			u := make([]byte, len(s)-4)
			copy(u, s[:12])
			copy(u[12:], s[16:])
			segs = append(segs, u)
		}); err != nil {
			t.Fatal(err)
		}
		checkSegments(t, v6, segs, payload, 1000, 0x19)
	}
}

// fullPort takes budget frames, then fails every write without going
// away (a TAP whose queue is full, say).
type fullPort struct {
	mu     sync.Mutex
	budget int
	done   chan struct{}
	once   sync.Once
}

var errNoRoom = errors.New("no buffer space")

func (p *fullPort) ReadFrames([][]byte, []int) (int, error) {
	<-p.done
	return 0, net.ErrClosed
}

func (p *fullPort) WriteFrames(bufs [][]byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(p.budget, len(bufs))
	p.budget -= n
	if n < len(bufs) {
		return n, errNoRoom
	}
	return n, nil
}

func (p *fullPort) BatchSize() int { return 4 }

func (p *fullPort) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// GSO frames cut for a port that takes no offloads, whose writes start
// failing midway through one, are counted segment by segment, as
// Counters promises: each segment is sent (TxFrames) or counted in
// DropTxError, the ones never made after the failure too.
func TestGSOWriteFailureCounted(t *testing.T) {
	br, err := New(Config{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	oa, ob := NewPipe(PipeConfig{})
	off := &offloadPipe{Pipe: oa, in: make(chan Offload, 4), out: make(chan Offload, 4)}
	if _, err := br.AddPort(off, PortConfig{}); err != nil {
		t.Fatal(err)
	}
	fp := &fullPort{budget: 6, done: make(chan struct{})}
	att, err := br.AddPort(fp, PortConfig{})
	if err != nil {
		t.Fatal(err)
	}
	const frames, segs = 3, 14 // 20000 bytes in segments of 1448
	for i := range frames {
		f, o := gsoFrame(false, make([]byte, 20000), 1448, 0x18)
		copy(f[0:6], Broadcast[:])
		f[len(f)-1] = byte(i)
		off.in <- o
		if err := ob.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every segment counted", func() bool {
		c := att.Counters()
		return c.TxFrames+c.DropTxError >= frames*segs
	})
	time.Sleep(50 * time.Millisecond) // nothing more is counted
	if c := att.Counters(); c.TxFrames != 6 || c.DropTxError != frames*segs-6 {
		t.Errorf("sent %d, dropped %d as write errors; want 6 and %d", c.TxFrames, c.DropTxError, frames*segs-6)
	}
}

// A GSO frame with no payload (a pure ACK flagged for GSO) is one
// segment, as Segment cuts it: left counts it before next has made it,
// so a batch whose write failed before it counts it in DropTxError.
func TestGSOWriteFailureCountsEmptyFrame(t *testing.T) {
	for _, n := range []int{0, 1, 1447, 1448, 1449, 5 * 1448} {
		f, o := gsoFrame(false, make([]byte, n), 1448, 0x10)
		segs := 0
		if err := Segment(f, etherHeader, o, make([]byte, 2048), func([]byte) { segs++ }); err != nil {
			t.Fatal(err)
		}
		var s segmenter
		if err := s.init(f, etherHeader, o); err != nil {
			t.Fatal(err)
		}
		if s.left() != segs {
			t.Errorf("payload %d: left %d before any segment, want %d", n, s.left(), segs)
		}
	}

	br, err := New(Config{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	fp := &fullPort{budget: 2, done: make(chan struct{})}
	att, err := br.AddPort(fp, PortConfig{})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(b []byte, o Offload) *frame {
		fr := &frame{buf: b, n: len(b), meta: o, pool: &sync.Pool{}}
		fr.refs.Store(1)
		return fr
	}
	big, bo := gsoFrame(false, make([]byte, 5*1448), 1448, 0x18) // 5 segments
	ack, ao := gsoFrame(false, nil, 1448, 0x10)                  // 1
	plain, _ := gsoFrame(false, make([]byte, 100), 1448, 0x18)   // 1
	att.txMu.Lock()
	att.transmitSegmented([]*frame{mk(big, bo), mk(ack, ao), mk(plain, Offload{})})
	att.txMu.Unlock()
	if c := att.Counters(); c.TxFrames != 2 || c.DropTxError != 5 {
		t.Errorf("sent %d, dropped %d as write errors; want 2 and 5 (7 segments)", c.TxFrames, c.DropTxError)
	}
}

// A GSO frame behind an 802.1ad tag, or behind two stacked tags, is cut
// into segments for a plain port, each keeping the tags, as Linux's
// skb_network_protocol finds the IP header past any 802.1Q and 802.1ad
// tags. An 802.1ad VLAN device over an offloading TAP sends such frames.
func TestBridgeGSOStackedTags(t *testing.T) {
	for _, tc := range []struct {
		name string
		tags []uint16 // TPIDs, outermost first
	}{
		{"802.1ad", []uint16{0x88a8}},
		{"802.1ad then 802.1Q", []uint16{0x88a8, 0x8100}},
		{"802.1Q twice", []uint16{0x8100, 0x8100}},
	} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s v6=%v", tc.name, v6), func(t *testing.T) {
				off, ob, db, in := offloadToPlain(t, Config{})

				payload := make([]byte, 5000)
				for i := range payload {
					payload[i] = byte(i*11 + 3)
				}
				f, o := gsoFrame(v6, payload, 1000, 0x19) // FIN|PSH|ACK
				tl := vlanTag * len(tc.tags)
				tagged := make([]byte, len(f)+tl)
				copy(tagged, f[:12])
				for i, tpid := range tc.tags {
					binary.BigEndian.PutUint16(tagged[12+vlanTag*i:], tpid)
					binary.BigEndian.PutUint16(tagged[14+vlanTag*i:], uint16(0x0123+i))
				}
				copy(tagged[12+tl:], f[12:])
				o.CsumStart += uint16(tl)
				o.HdrLen += uint16(tl)

				off.in <- o
				if err := ob.WriteFrame(tagged); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the frame read", func() bool { return in.Counters().RxFrames == 1 })
				if c := in.Counters(); c.RxDropped() != 0 {
					t.Fatalf("tagged GSO frame dropped on ingress: %+v", c)
				}
				var segs [][]byte
				for n := 0; n < len(payload); {
					s := recvPipe(t, db)
					if !bytes.Equal(s[12:12+tl], tagged[12:12+tl]) {
						t.Fatalf("segment's tags %x, want %x", s[12:12+tl], tagged[12:12+tl])
					}
					u := append(bytes.Clone(s[:12]), s[12+tl:]...)
					segs = append(segs, u)
					n += len(u) - (len(f) - len(payload))
				}
				checkSegments(t, v6, segs, payload, 1000, 0x19)
			})
		}
	}
}

// offloadToPlain is a bridge of cfg, closed when the test ends, with two
// ports: one that takes offloads, whose frames the test writes to ob
// (each frame's Offload first to off.in), and a plain one, whose frames
// the test reads from db. in is the offloading port's attachment.
func offloadToPlain(t *testing.T, cfg Config) (off *offloadPipe, ob, db *Pipe, in *Attachment) {
	t.Helper()
	br, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	oa, ob := NewPipe(PipeConfig{})
	da, db := NewPipe(PipeConfig{})
	off = &offloadPipe{Pipe: oa, in: make(chan Offload, 4), out: make(chan Offload, 4)}
	if in, err = br.AddPort(off, PortConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := br.AddPort(da, PortConfig{}); err != nil {
		t.Fatal(err)
	}
	return off, ob, db, in
}
