package conntrack

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// conn drives a TCP connection through a table, keeping both sides'
// sequence numbers, so each segment is in window unless a test wants
// otherwise.
type conn struct {
	t            *testing.T
	tbl          *Table
	clk          *manualClock
	c, s         netip.AddrPort
	cISN, sISN   uint32
	cNext, sNext uint32
}

func newConn(t *testing.T, tbl *Table, clk *manualClock, c, s netip.AddrPort) *conn {
	return &conn{t: t, tbl: tbl, clk: clk, c: c, s: s, cISN: 0xfffff000, sISN: 0x7ffffff0}
}

// exchange makes k an established connection that carried data: the
// handshake, 100 bytes from the client, their acknowledgement.
func (k *conn) exchange() {
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	k.send(Original, TCPAck|TCPPsh, 100)
	k.send(Reply, TCPAck, 0)
}

// send sends a segment with flags and data bytes in dir, with the side's
// next sequence number (its ISN for a SYN) and the other side's next as
// the acknowledgment.
func (k *conn) send(dir Dir, flags uint8, data int) Result {
	k.t.Helper()
	src, dst := k.c, k.s
	next, isn, other := &k.cNext, k.cISN, k.sNext
	if dir == Reply {
		src, dst = k.s, k.c
		next, isn, other = &k.sNext, k.sISN, k.cNext
	}
	s := seg{flags: flags, seq: *next, data: data, win: 4096}
	if flags&TCPSyn != 0 {
		s.seq = isn
		s.opts = []byte{2, 4, 0x05, 0xb4, 4, 2, 3, 3, 7} // MSS, SACK-permitted, window scale 7
	}
	if flags&TCPAck != 0 {
		s.ack = other
	}
	res := track(k.t, k.tbl, tcpPacket(src, dst, s))
	if res.Class != ClassInvalid {
		if end := s.seq + uint32(data) + uint32(flags&TCPSyn>>1) + uint32(flags&TCPFin); seqAfter(end, *next) || flags&TCPSyn != 0 {
			*next = end
		}
	}
	return res
}

func (k *conn) tuple() Tuple {
	return Tuple{Src: k.c.Addr(), Dst: k.s.Addr(), SrcPort: k.c.Port(), DstPort: k.s.Port(), Proto: ProtoTCP}
}

func (k *conn) entry() (Entry, bool) {
	e, _, ok := k.tbl.Get(0, k.tuple())
	return e, ok
}

// To reach each state: the segments that lead there from nothing.
var tcpPaths = map[TCPState][]struct {
	dir   Dir
	flags uint8
}{
	TCPSynSent:     {{Original, TCPSyn}},
	TCPSynRecv:     {{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}},
	TCPEstablished: {{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}, {Original, TCPAck}},
	TCPFinWait:     {{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}, {Original, TCPAck}, {Original, TCPFin | TCPAck}},
	TCPCloseWait:   {{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}, {Original, TCPAck}, {Original, TCPFin | TCPAck}, {Reply, TCPAck}},
	TCPLastAck:     {{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}, {Original, TCPAck}, {Original, TCPFin | TCPAck}, {Reply, TCPAck}, {Reply, TCPFin | TCPAck}},
	TCPTimeWait:    {{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}, {Original, TCPAck}, {Original, TCPFin | TCPAck}, {Reply, TCPAck}, {Reply, TCPFin | TCPAck}, {Original, TCPAck}},
	TCPClose:       {{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}, {Original, TCPAck}, {Original, TCPRst | TCPAck}},
	TCPSynSent2:    {{Original, TCPSyn}, {Reply, TCPSyn}},
}

// The kernel's transition table, as its comments document it, one row per
// segment class, one column per state: NONE SYN_SENT SYN_RECV ESTABLISHED
// FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE SYN_SENT2. "--" marks a
// packet the table finds invalid, "ig" one it ignores, "re" a SYN that
// reopens the connection as a new entry, "xx" a RST that ends a connection
// that never saw a reply (the entry is deleted).
var tcpExpect = map[Dir]map[string]string{
	Original: {
		"syn":    "SS SS ig ig ig ig ig re re S2",
		"synack": "-- -- SR -- -- -- -- -- -- SR",
		"fin":    "-- -- FW FW LA LA LA TW CL --",
		"ack":    "ES -- ES ES CW CW TW TW CL --",
		"rst":    "-- xx CL CL CL CL CL CL CL CL",
	},
	Reply: {
		"syn":    "-- S2 -- -- -- -- -- re -- S2",
		"synack": "-- SR ig ig ig ig ig ig ig SR",
		"fin":    "-- -- FW FW LA LA LA TW CL --",
		"ack":    "-- ig SR ES CW CW TW TW CL ig",
		"rst":    "-- xx CL CL CL CL CL CL CL CL",
	},
}

var (
	segFlags = map[string]uint8{
		"syn": TCPSyn, "synack": TCPSyn | TCPAck, "fin": TCPFin | TCPAck,
		"ack": TCPAck, "rst": TCPRst | TCPAck,
	}
	stateAbbrev = map[string]TCPState{
		"SS": TCPSynSent, "SR": TCPSynRecv, "ES": TCPEstablished, "FW": TCPFinWait,
		"CW": TCPCloseWait, "LA": TCPLastAck, "TW": TCPTimeWait, "CL": TCPClose, "S2": TCPSynSent2,
	}
)

// TestTCPTransitions drives a connection into every state, sends every
// class of segment in both directions, and checks the new state, the
// class of the packet, and the timeout set.
func TestTCPTransitions(t *testing.T) {
	to := DefaultTimeouts()
	for _, fam := range []struct{ name, c, s string }{
		{"ipv4", "192.0.2.10:40001", "198.51.100.200:80"},
		{"ipv6", "[2001:db8:1:2::3]:40001", "[fd12:3456:789a::42]:80"},
	} {
		for dir, rows := range tcpExpect {
			for class, row := range rows {
				for col, want := range strings.Fields(row) {
					from := TCPState(col)
					if from == TCPNone && dir == Reply {
						continue // a flow with no entry has no reply direction
					}
					name := fmt.Sprintf("%s/%v/%s/%v", fam.name, dir, class, from)
					t.Run(name, func(t *testing.T) {
						tbl, clk := newTable(t, Config{})
						k := newConn(t, tbl, clk, ap(fam.c), ap(fam.s))
						for _, s := range tcpPaths[from] {
							if r := k.send(s.dir, s.flags, 0); r.Class == ClassInvalid {
								t.Fatalf("setup segment %#x in %v was invalid", s.flags, s.dir)
							}
						}
						before, existed := k.entry()
						if existed && before.TCPState != from {
							t.Fatalf("setup reached %v, want %v", before.TCPState, from)
						}
						clk.Advance(time.Second)
						res := k.send(dir, segFlags[class], 0)
						after, exists := k.entry()
						switch want {
						case "--":
							if res.Class != ClassInvalid {
								t.Fatalf("class %v, want INVALID", res.Class)
							}
							if existed != exists || exists && (after.TCPState != from || after.Timeout != before.Timeout-time.Second) {
								t.Fatalf("invalid segment changed the entry: %v -> %v", before, after)
							}
						case "ig":
							if res.Class == ClassInvalid {
								t.Fatal("ignored segment classified INVALID")
							}
							if after.TCPState != from || after.Timeout != before.Timeout-time.Second {
								t.Fatalf("ignored segment changed the entry: %v -> %v", before, after)
							}
						case "xx":
							if exists {
								t.Fatalf("RST before any reply left the entry: %v", after)
							}
						case "re":
							if !res.Created || res.ID == before.ID {
								t.Fatalf("SYN did not reopen: %+v", res)
							}
							n, _, ok := tbl.Get(0, res.Orig())
							if !ok || n.TCPState != TCPSynSent || n.Timeout != to.TCPSynSent {
								t.Fatalf("reopened entry %v", n)
							}
							if tbl.Len() != 1 {
								t.Fatalf("%d entries after reopening, want 1", tbl.Len())
							}
						default:
							st := stateAbbrev[want]
							if res.Class == ClassInvalid || !exists {
								t.Fatalf("class %v, entry exists %v", res.Class, exists)
							}
							if after.TCPState != st {
								t.Fatalf("state %v, want %v", after.TCPState, st)
							}
							wantTO := to.tcp(st)
							if class == "rst" {
								wantTO = to.TCPClose
							}
							if class == "syn" && from == TCPSynSent {
								// Like the kernel, no SYN renews the timeout
								// of a connection that has had no reply.
								wantTO = before.Timeout - time.Second
							}
							if class == "ack" && from == TCPNone {
								// Picked up, with no reply yet: the
								// unacknowledged timeout, as the kernel's.
								wantTO = to.TCPUnacknowledged
							}
							if after.Timeout != wantTO {
								t.Fatalf("timeout %v, want %v", after.Timeout, wantTO)
							}
						}
					})
				}
			}
		}
	}
}

func TestTCPHandshakeAssuresAndCloses(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40002"), ap("198.51.100.200:443"))
	steps := []struct {
		dir     Dir
		flags   uint8
		data    int
		state   TCPState
		class   Class
		assured bool
		timeout time.Duration
	}{
		{Original, TCPSyn, 0, TCPSynSent, ClassNew, false, 120 * time.Second},
		{Reply, TCPSyn | TCPAck, 0, TCPSynRecv, ClassEstablished, false, 60 * time.Second},
		{Original, TCPAck, 0, TCPEstablished, ClassEstablished, true, 5 * 24 * time.Hour},
		{Original, TCPAck | TCPPsh, 100, TCPEstablished, ClassEstablished, true, 300 * time.Second}, // unacknowledged data
		{Reply, TCPAck | TCPPsh, 1000, TCPEstablished, ClassEstablished, true, 300 * time.Second},
		{Original, TCPAck, 0, TCPEstablished, ClassEstablished, true, 5 * 24 * time.Hour}, // all acknowledged
		{Original, TCPFin | TCPAck, 0, TCPFinWait, ClassEstablished, true, 120 * time.Second},
		{Reply, TCPAck, 0, TCPCloseWait, ClassEstablished, true, 60 * time.Second},
		{Reply, TCPFin | TCPAck, 0, TCPLastAck, ClassEstablished, true, 30 * time.Second},
		{Original, TCPAck, 0, TCPTimeWait, ClassEstablished, true, 120 * time.Second},
	}
	for i, s := range steps {
		res := k.send(s.dir, s.flags, s.data)
		e, ok := k.entry()
		if !ok {
			t.Fatalf("step %d: no entry", i)
		}
		if res.Class != s.class || e.TCPState != s.state || (e.Status&Assured != 0) != s.assured || e.Timeout != s.timeout {
			t.Fatalf("step %d: class %v state %v status %v timeout %v; want %v %v assured=%v %v",
				i, res.Class, e.TCPState, e.Status, e.Timeout, s.class, s.state, s.assured, s.timeout)
		}
	}
	clk.Advance(120*time.Second - time.Millisecond)
	if _, ok := k.entry(); !ok {
		t.Fatal("TIME_WAIT entry gone before 120 s")
	}
	clk.Advance(time.Millisecond)
	if _, ok := k.entry(); ok {
		t.Fatal("TIME_WAIT entry still there after 120 s")
	}
	if n := tbl.Expire(0); n != 1 || tbl.Len() != 0 {
		t.Fatalf("Expire removed %d, %d left", n, tbl.Len())
	}
}

func TestTCPEstablishedTimeout(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40003"), ap("198.51.100.200:22"))
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	clk.Advance(4 * 24 * time.Hour)
	tbl.Expire(0)
	if _, ok := k.entry(); !ok {
		t.Fatal("ESTABLISHED entry gone after 4 days")
	}
	clk.Advance(24 * time.Hour)
	if _, ok := k.entry(); ok {
		t.Fatal("ESTABLISHED entry still there after 5 days")
	}
	if tbl.Expire(0) != 1 || tbl.Len() != 0 {
		t.Fatal("Expire did not remove the entry")
	}
}

func TestTCPPickupIsLiberalAndNotReapedEarly(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40004"), ap("198.51.100.200:80"))
	k.cNext, k.sNext = 1000, 900000
	res := k.send(Original, TCPAck, 0)
	if !res.Created || res.Class != ClassNew {
		t.Fatalf("mid-stream ACK not picked up: %+v", res)
	}
	e, _ := k.entry()
	if e.TCPState != TCPEstablished || e.Status&Assured != 0 {
		t.Fatalf("picked up as %v %v", e.TCPState, e.Status)
	}
	// A half-open SYN would be gone after 120 s; a picked-up connection is
	// not one.
	clk.Advance(121 * time.Second)
	tbl.Expire(0)
	if _, ok := k.entry(); !ok {
		t.Fatal("picked-up connection reaped like a half-open SYN")
	}
	// Its history is unknown, so wildly different sequence numbers pass.
	k.sNext += 1 << 30
	if res := k.send(Reply, TCPAck, 10); res.Class == ClassInvalid {
		t.Fatal("liberal connection rejected a reply")
	}
	k.send(Original, TCPAck, 0)
	if e, _ := k.entry(); e.Status&Assured == 0 {
		t.Fatalf("answered pickup not assured: %v", e.Status)
	}

	strict, _ := newTable(t, Config{TCPNoPickup: true})
	k2 := newConn(t, strict, clk, ap("192.0.2.10:40005"), ap("198.51.100.200:80"))
	if res := k2.send(Original, TCPAck, 0); res.Class != ClassInvalid || strict.Len() != 0 {
		t.Fatalf("TCPNoPickup picked up a connection: %+v", res)
	}
}

// A connection picked up mid-stream that the other side never answers (an
// ACK of a connection long gone, which its peer drops unanswered) keeps
// its entry, and its masquerade port, for the unacknowledged timeout, as
// Linux's nf_conntrack_tcp_packet caps ESTABLISHED without a reply. Its
// timeout fell to 5 minutes only by the zero window an ACK the window
// check refuses leaves recorded; one it accepts (here the server's next
// sequence number lies just below 2^32, next to where the tracker places
// a side it has not seen) kept the entry for ESTABLISHED's 5 days.
// Answered, it is established as any connection.
func TestTCPUnansweredPickupTimesOut(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40007"), ap("198.51.100.200:80"))
	k.cNext, k.sNext = 1000, 0xfffff800
	unack := DefaultTimeouts().TCPUnacknowledged
	k.send(Original, TCPAck, 0)
	clk.Advance(time.Minute)
	k.send(Original, TCPAck, 0)
	if e, _ := k.entry(); e.TCPState != TCPEstablished || e.Timeout != unack {
		t.Fatalf("unanswered pickup: %v, timeout %v; want ESTABLISHED, %v", e.TCPState, e.Timeout, unack)
	}
	clk.Advance(unack)
	if _, ok := k.entry(); ok {
		t.Fatalf("unanswered pickup alive %v after its last segment", unack)
	}
	if tbl.Expire(0) != 1 {
		t.Fatal("Expire did not remove the unanswered pickup")
	}

	k.send(Original, TCPAck, 0)
	k.send(Reply, TCPAck, 0)
	k.send(Original, TCPAck, 0)
	if e, _ := k.entry(); e.Status&Assured == 0 || e.Timeout != DefaultTimeouts().TCPEstablished {
		t.Fatalf("answered pickup: %v, timeout %v; want ASSURED, %v", e.Status, e.Timeout, DefaultTimeouts().TCPEstablished)
	}
}

func TestTCPOutOfWindowIsInvalid(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40006"), ap("198.51.100.200:80"))
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	before, _ := k.entry()
	for _, s := range []seg{
		{flags: TCPAck, seq: k.cNext + 1<<30, ack: k.sNext, win: 4096},       // far beyond the window
		{flags: TCPAck, seq: k.cNext, ack: k.sNext + 1<<20, win: 4096},       // acknowledges unsent data
		{flags: TCPRst | TCPAck, seq: k.cNext - 1<<20, ack: k.sNext, win: 0}, // a stale RST
		{flags: TCPFin | TCPAck, seq: k.cNext + 1<<31, ack: k.sNext, win: 0}, // a FIN from nowhere
	} {
		res := track(t, tbl, tcpPacket(k.c, k.s, s))
		if res.Class != ClassInvalid {
			t.Errorf("segment %+v: class %v, want INVALID", s, res.Class)
		}
	}
	after, _ := k.entry()
	if after.TCPState != TCPEstablished || after.Packets != before.Packets {
		t.Fatalf("invalid segments changed the entry: %v", after)
	}
	if st := tbl.Stats(); st.Invalid != 4 {
		t.Fatalf("Invalid = %d, want 4", st.Invalid)
	}
}

func TestTCPRstBeforeReplyDeletesEntry(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	sub := tbl.Subscribe(16)
	k := newConn(t, tbl, clk, ap("192.0.2.10:40007"), ap("198.51.100.200:81"))
	k.send(Original, TCPSyn, 0)
	// The refused connection's answer: RST|ACK acknowledging the SYN.
	track(t, tbl, tcpPacket(k.s, k.c, seg{flags: TCPRst | TCPAck, ack: k.cNext}))
	if tbl.Len() != 0 {
		t.Fatal("refused connection left its entry")
	}
	for _, want := range []EventType{EventNew, EventDestroy} {
		ev := <-sub.Events()
		t.Logf("%v %v %v", ev.Type, ev.Reason, ev.Entry)
		if ev.Type != want || want == EventDestroy && ev.Reason != ReasonClosed {
			t.Fatalf("event %v %v, want %v", ev.Type, ev.Reason, want)
		}
	}
}

// A reset in an established connection's window but not at the next byte
// the other side expects leaves the state as it is, as Linux's conntrack
// does ("keep established state to allow a possible challenge ACK"): the
// other side's challenge ACK (RFC 5961), which a splice sends, restores
// the established timeout, and the connection lives on. A reset at that
// byte, or one just after the same side's last segment (a train), closes
// the entry.
func TestTCPInexactResetKeepsEstablished(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seq   uint32
		close bool
	}{
		{"inexact", 1201, false},
		{"exact", 201, true},
		{"train", 0, true}, // just after the container's last segment: set below
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, clk := newTable(t, Config{})
			ctr, remote, host := ap("172.17.0.4:40000"), ap("192.0.2.9:443"), ap("192.168.2.116:51000")
			syn := decode(t, tcpPacket(ctr, remote, seg{flags: TCPSyn, seq: 100, win: 65535}))
			reply := Tuple{Src: remote.Addr(), Dst: host.Addr(), SrcPort: remote.Port(), DstPort: host.Port(), Proto: ProtoTCP}
			if _, err := tbl.Track(0, syn, FixedReply{Reply: reply, Status: SrcNAT, Supersede: true}); err != nil {
				t.Fatal(err)
			}
			step := func(name string, fromProxy bool, s seg) {
				t.Helper()
				from, to := ctr, remote
				if fromProxy {
					from, to = remote, ctr
				}
				if res, ok := tbl.TrackTerminated(0, decode(t, tcpPacket(from, to, s)), fromProxy); !ok || res.Class == ClassInvalid {
					t.Fatalf("%s: ok %v, class %v", name, ok, res.Class)
				}
			}
			step("SYN-ACK", true, seg{flags: TCPSyn | TCPAck, seq: 5000, ack: 101, win: 65535})
			step("ACK", false, seg{flags: TCPAck, seq: 101, ack: 5001, win: 65535})
			step("uplink's bytes", true, seg{flags: TCPAck | TCPPsh, seq: 5001, ack: 101, win: 65535, data: 10})
			step("container's bytes", false, seg{flags: TCPAck | TCPPsh, seq: 101, ack: 5011, win: 65535, data: 100})
			seq := tc.seq
			if tc.name == "train" {
				step("container's ACK", false, seg{flags: TCPAck, seq: 201, ack: 5011, win: 65535})
				seq = 201
				// The uplink acknowledged none of it: 201 is not its
				// highest acknowledgement, only the container's last end.
			} else {
				step("uplink acknowledges", true, seg{flags: TCPAck, seq: 5011, ack: 201, win: 65535})
			}
			step("reset", false, seg{flags: TCPRst | TCPAck, seq: seq, ack: 5011, win: 65535})
			e := mustGet(t, tbl, syn.Tuple)
			if closed := e.TCPState == TCPClose; closed != tc.close {
				t.Fatalf("after the reset at %d: state %v, want closed %v", seq, e.TCPState, tc.close)
			}
			if tc.close {
				return
			}
			step("challenge ACK", true, seg{flags: TCPAck, seq: 5011, ack: 201, win: 65535})
			// Not the close timeout any more: the established one, or,
			// as in Linux, the unacknowledged one (5 minutes), since
			// the reset's sequence number counts as the container's end.
			if e := mustGet(t, tbl, syn.Tuple); e.TCPState != TCPEstablished || e.Timeout < DefaultTimeouts().TCPUnacknowledged {
				t.Errorf("after the challenge ACK: state %v, timeout %v; want ESTABLISHED, a timeout of minutes", e.TCPState, e.Timeout)
			}
			clk.Advance(11 * time.Second)
			if _, _, ok := tbl.Get(0, syn.Tuple); !ok {
				t.Error("the live connection's entry expired 11 s after a reset it survived")
			}
		})
	}
}

// Linux (nf_conntrack_tcp_packet, TCP_CONNTRACK_IGNORE case b): a SYN/ACK
// that acknowledges a SYN the tracker ignored resynchronises the entry
// (the endpoints are in sync, the firewall is not): SYN_RECV, and the
// client's ACK then establishes the new connection.
func TestTCPIgnoredSynResync(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40101"), ap("198.51.100.200:80"))
	k.exchange()
	// Both ends forget the connection (the client reboots, the server
	// times it out); the gateway's entry stays ESTABLISHED. The client
	// reconnects from the same port with a fresh ISN.
	const cISN, sISN = 0x12345678, 0x55550000
	syn := seg{flags: TCPSyn, seq: cISN, win: 4096}
	if r := track(t, tbl, tcpPacket(k.c, k.s, syn)); r.Class == ClassInvalid {
		t.Fatalf("SYN: %v", r.Class)
	}
	synack := seg{flags: TCPSyn | TCPAck, seq: sISN, ack: cISN + 1, win: 4096}
	if r := track(t, tbl, tcpPacket(k.s, k.c, synack)); r.Class == ClassInvalid {
		t.Fatalf("SYN/ACK: %v", r.Class)
	}
	if e, _ := k.entry(); e.TCPState != TCPSynRecv {
		t.Errorf("after SYN/ACK acknowledging the ignored SYN: %v, Linux: SYN_RECV", e.TCPState)
	}
	ack := seg{flags: TCPAck, seq: cISN + 1, ack: sISN + 1, win: 4096}
	if r := track(t, tbl, tcpPacket(k.c, k.s, ack)); r.Class == ClassInvalid {
		t.Fatalf("the new connection's ACK is INVALID (the gateway drops it)")
	}
	data := seg{flags: TCPAck | TCPPsh, seq: cISN + 1, ack: sISN + 1, win: 4096, data: 50}
	if r := track(t, tbl, tcpPacket(k.c, k.s, data)); r.Class == ClassInvalid {
		t.Fatalf("the new connection's data is INVALID")
	}
}

// Linux: SYN_SENT2 marks a simultaneous open, and an ACK from the reply
// side in SYN_RECV then establishes the connection.
func TestTCPSimultaneousOpenReplyAck(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40102"), ap("198.51.100.200:5000"))
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn, 0)
	if e, _ := k.entry(); e.TCPState != TCPSynSent2 {
		t.Fatalf("state %v", e.TCPState)
	}
	k.send(Original, TCPSyn|TCPAck, 0)
	if e, _ := k.entry(); e.TCPState != TCPSynRecv {
		t.Fatalf("state %v", e.TCPState)
	}
	if r := k.send(Reply, TCPAck, 0); r.Class == ClassInvalid {
		t.Fatalf("reply ACK invalid")
	}
	if e, _ := k.entry(); e.TCPState != TCPEstablished {
		t.Fatalf("simultaneous open, reply ACK in SYN_RECV: %v, Linux: ESTABLISHED", e.TCPState)
	}
}

// Linux (TCP_CONNTRACK_CLOSE case): "RST sent to invalid SYN ... we had let
// through": a RST whose ACK is the end of the SYN that was ignored closes
// the entry, without the window check.
func TestTCPResetToIgnoredSyn(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40104"), ap("198.51.100.200:80"))
	k.exchange()
	// The server went away; the client reconnects from the same port.
	const cISN = 0x12345678
	if r := track(t, tbl, tcpPacket(k.c, k.s, seg{flags: TCPSyn, seq: cISN, win: 4096})); r.Class == ClassInvalid {
		t.Fatalf("SYN: %v", r.Class)
	}
	// Nothing listens any more: the server refuses it.
	r := track(t, tbl, tcpPacket(k.s, k.c, seg{flags: TCPRst | TCPAck, seq: 0, ack: cISN + 1}))
	if r.Class == ClassInvalid {
		t.Fatal("the RST refusing the new SYN is INVALID (dropped: the client never hears the refusal)")
	}
}

// Linux counts a segment as a retransmission only when its raw window
// (win_raw) equals the last one. Window updates (same seq and ack, a
// growing window) are not retransmissions, and must not drop an idle
// established connection's timeout from 5 days to tcp_max_retrans (5 min).
func TestTCPWindowUpdatesNotRetransmissions(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40105"), ap("198.51.100.200:80"))
	k.send(Original, TCPSyn, 0) // both SYNs offer window scale 7
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	k.send(Reply, TCPAck|TCPPsh, 1000) // a download
	// The client acknowledges it, then opens its window as the
	// application reads: same seq, same ack, growing raw window.
	for _, w := range []uint16{1000, 2000, 3000, 4000} {
		s := seg{flags: TCPAck, seq: k.cNext, ack: k.sNext, win: w}
		if r := track(t, tbl, tcpPacket(k.c, k.s, s)); r.Class == ClassInvalid {
			t.Fatalf("window update %d invalid", w)
		}
	}
	if e, _ := k.entry(); e.Timeout != DefaultTimeouts().TCPEstablished {
		t.Fatalf("idle ESTABLISHED connection after window updates: timeout %v, Linux: %v", e.Timeout, DefaultTimeouts().TCPEstablished)
	}
}

// Linux (TCP_CONNTRACK_CLOSE case): "Reset in response to a challenge-ack
// we let through earlier": in SYN_SENT, a reply ACK (the server's RFC 5961
// challenge ACK to a SYN of a connection it still holds) is ignored and
// its ack noted; the client's RST at that ack passes without window check.
func TestTCPResetAnsweringChallengeAck(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	c, s := ap("192.0.2.10:40106"), ap("198.51.100.200:80")
	const cISN, oldServerAck, oldServerSeq = 1000, 0x10000000, 0x40000000
	if r := track(t, tbl, tcpPacket(c, s, seg{flags: TCPSyn, seq: cISN, win: 4096})); !r.Created {
		t.Fatal("SYN")
	}
	// The server still holds an old connection on this 4-tuple.
	if r := track(t, tbl, tcpPacket(s, c, seg{flags: TCPAck, seq: oldServerSeq, ack: oldServerAck, win: 4096})); r.Class == ClassInvalid {
		t.Fatal("challenge ACK invalid")
	}
	// The client, which knows no such connection, resets it (RFC 793).
	r := track(t, tbl, tcpPacket(c, s, seg{flags: TCPRst, seq: oldServerAck}))
	if r.Class == ClassInvalid {
		t.Fatal("the client's RST answering the challenge ACK is INVALID: the server never drops its stale connection")
	}
}

// Linux re-initialises a sender's window data on a new SYN (tcph->syn)
// with a higher sequence number in SYN_SENT/SYN_RECV, and on nothing
// else: a server's first data in SYN_RECV (TCP Fast Open, or the client's
// ACK reordered behind it) keeps the server's window scale, so the
// client's data within the scaled window is valid.
func TestTCPDataInSynRecvKeepsWindowScale(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run(fmt.Sprintf("serverDataBeforeClientAck=%v", early), func(t *testing.T) {
			tbl, clk := newTable(t, Config{})
			k := newConn(t, tbl, clk, ap("192.0.2.10:40107"), ap("198.51.100.200:25"))
			k.send(Original, TCPSyn, 0)     // window scale 7
			k.send(Reply, TCPSyn|TCPAck, 0) // window scale 7
			if early {
				k.send(Reply, TCPAck|TCPPsh, 100) // the banner, in SYN_RECV
				k.send(Original, TCPAck, 0)
			} else {
				k.send(Original, TCPAck, 0)
				k.send(Reply, TCPAck|TCPPsh, 100)
			}
			k.send(Original, TCPAck, 0)
			// The server's window is 4096 << 7 = 512 KiB: 10 segments of
			// 1400 bytes fit.
			for i := range 10 {
				if r := k.send(Original, TCPAck|TCPPsh, 1400); r.Class == ClassInvalid {
					t.Fatalf("client segment %d (offset %d) INVALID", i, i*1400)
				}
			}
		})
	}
}

// Linux's table: an original-direction SYN/ACK is INVALID in ESTABLISHED
// (and every later state): "Invalid SYN/ACK packets sent by the client".
func TestTCPOriginalSynAckInvalid(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40108"), ap("198.51.100.200:80"))
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	if r := k.send(Original, TCPSyn|TCPAck, 0); r.Class != ClassInvalid {
		t.Fatalf("client SYN/ACK in ESTABLISHED: %v, Linux: INVALID", r.Class)
	}
}

// Linux (tcp_in_window, tcp_init_sender): a SYN or SYN/ACK with a higher
// sequence number in SYN_SENT or SYN_RECV starts its sender afresh, from
// either side. A server that first answers with a stale SYN/ACK (its ack
// wrong: no state change, but it set up the reply side) and then with the
// right one from a new ISN reaches SYN_RECV; without it the right SYN/ACK
// was INVALID too, and the handshake never completed.
func TestTCPSynAckWithNewISNRestartsReplySide(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	c, s := ap("192.0.2.10:40202"), ap("198.51.100.200:80")
	const cISN, staleSrvISN, staleAck, srvISN = 1365731894, 145824453, 643160523, 162602410
	if r := track(t, tbl, tcpPacket(c, s, seg{flags: TCPSyn, seq: cISN, win: 29200})); !r.Created {
		t.Fatal("SYN")
	}
	tp := Tuple{Src: c.Addr(), Dst: s.Addr(), SrcPort: c.Port(), DstPort: s.Port(), Proto: ProtoTCP}
	track(t, tbl, tcpPacket(s, c, seg{flags: TCPSyn | TCPAck, seq: staleSrvISN, ack: staleAck, win: 65535}))
	if e := mustGet(t, tbl, tp); e.TCPState != TCPSynSent {
		t.Fatalf("stale SYN/ACK: state %v, want SYN_SENT", e.TCPState)
	}
	r := track(t, tbl, tcpPacket(s, c, seg{flags: TCPSyn | TCPAck, seq: srvISN, ack: cISN + 1, win: 65535}))
	if r.Class == ClassInvalid {
		t.Fatal("the server's SYN/ACK from a new ISN is INVALID: the handshake is stuck")
	}
	if e := mustGet(t, tbl, tp); e.TCPState != TCPSynRecv {
		t.Fatalf("state %v, want SYN_RECV", e.TCPState)
	}
}

// Linux (tcp_init_sender, since fb366fc7541a "correct window scaling with
// retransmitted SYN"): a client's SYN with a higher sequence number in
// SYN_SENT restarts the client's side but leaves window scaling to be
// settled by the server's SYN/ACK. Settling it on the client's SYN, when
// the server has offered nothing yet, turned the client's scaling off for
// good, and the server's data beyond the unscaled window went INVALID.
func TestTCPNewSynKeepsWindowScale(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40207"), ap("198.51.100.200:80"))
	k.send(Original, TCPSyn, 0)
	k.cISN += 1000 // the client starts over from a higher ISN
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	// The client's window is 4096 scaled by 2^7: 20000 bytes fit twice.
	for i := range 2 {
		if r := k.send(Reply, TCPAck|TCPPsh, 20000); r.Class == ClassInvalid {
			t.Fatalf("server segment %d in the client's scaled window: INVALID", i)
		}
	}
}

// Linux (nf_conntrack_tcp_packet, TCP_CONNTRACK_CLOSE case): a RST below
// the other side's highest acknowledgment is INVALID even from a side
// tracked liberally (a picked-up connection, or TCPLiberal): be_liberal
// relaxes the window check, not this one. A stale or blind RST closed
// such a connection's entry.
func TestTCPStaleRstInvalidWhenLiberal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		pickup bool
	}{
		{"pickup", Config{}, true},
		{"TCPLiberal", Config{TCPLiberal: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, clk := newTable(t, tc.cfg)
			k := newConn(t, tbl, clk, ap("192.0.2.10:40203"), ap("198.51.100.200:80"))
			if tc.pickup {
				k.cNext, k.sNext = 1000, 900000
				k.send(Original, TCPAck, 0)
				k.send(Reply, TCPAck, 0)
				k.send(Original, TCPAck|TCPPsh, 100)
				k.send(Reply, TCPAck, 0)
			} else {
				k.exchange()
			}
			if e, _ := k.entry(); e.TCPState != TCPEstablished || e.Status&Assured == 0 {
				t.Fatalf("setup: %v %v", e.TCPState, e.Status)
			}
			r := track(t, tbl, tcpPacket(k.c, k.s, seg{flags: TCPRst, seq: k.cNext - 1<<20}))
			if e, _ := k.entry(); r.Class != ClassInvalid || e.TCPState != TCPEstablished {
				t.Fatalf("RST below the server's highest ack: class %v, state %v; Linux: INVALID, ESTABLISHED", r.Class, e.TCPState)
			}
		})
	}
}

// Linux (nf_conntrack_tcp_packet, TCP_CONNTRACK_CLOSE case,
// tcp_can_early_drop; c4edc3ccbc63, 5.14): in FIN_WAIT, CLOSE_WAIT,
// LAST_ACK, TIME_WAIT and CLOSE a RST skips the maxack and window checks
// and closes the entry. It was INVALID: dropped, and the entry lingered
// with the closing state's timeout.
func TestTCPRstWhileClosingUnchecked(t *testing.T) {
	for _, tc := range []struct {
		name string
		seq  func(k *conn) uint32
	}{
		{"below maxack", func(k *conn) uint32 { return k.sNext - 1<<20 }},
		{"beyond window", func(k *conn) uint32 { return k.sNext + 1<<30 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, clk := newTable(t, Config{})
			k := newConn(t, tbl, clk, ap("192.0.2.10:40204"), ap("198.51.100.200:80"))
			k.send(Original, TCPSyn, 0)
			k.send(Reply, TCPSyn|TCPAck, 0)
			k.send(Original, TCPAck, 0)
			k.send(Reply, TCPAck|TCPPsh, 100)
			k.send(Original, TCPAck, 0)
			k.send(Original, TCPFin|TCPAck, 0)
			if e, _ := k.entry(); e.TCPState != TCPFinWait {
				t.Fatalf("setup: %v", e.TCPState)
			}
			r := track(t, tbl, tcpPacket(k.s, k.c, seg{flags: TCPRst, seq: tc.seq(k)}))
			e, _ := k.entry()
			if r.Class == ClassInvalid || e.TCPState != TCPClose || e.Timeout != DefaultTimeouts().TCPClose {
				t.Fatalf("RST in FIN_WAIT: class %v, state %v, timeout %v; Linux: accepted, CLOSE, %v",
					r.Class, e.TCPState, e.Timeout, DefaultTimeouts().TCPClose)
			}
		})
	}
}

// Linux (tcp_in_window, since 6.0): a segment behind the window (its end
// more than a window below what its sender sent: already acknowledged
// data, sent again) and an ACK below the lower bound (overly delayed) are
// NFCT_TCP_IGNORE, let through with no state change, not INVALID: dropping
// them keeps the receiver from answering, which can leave a connection
// stuck after a lost ACK. A segment over the window by no more than the
// receiver's largest window is ignored too, and its end taken, so the
// receiver's ACK of it is in the window.
func TestTCPSegmentsBehindOrJustOverWindowIgnored(t *testing.T) {
	const cISN, sISN, win = 1000, 50000, 1000
	handshake := func(t *testing.T, port uint16) func(fromClient bool, sg seg) Result {
		tbl, _ := newTable(t, Config{})
		c, s := netip.AddrPortFrom(ip("192.0.2.10"), port), ap("198.51.100.200:80")
		send := func(fromClient bool, sg seg) Result {
			t.Helper()
			if fromClient {
				return track(t, tbl, tcpPacket(c, s, sg))
			}
			return track(t, tbl, tcpPacket(s, c, sg))
		}
		// No window scale, no SACK: the windows are 1000 bytes.
		send(true, seg{flags: TCPSyn, seq: cISN, win: win})
		send(false, seg{flags: TCPSyn | TCPAck, seq: sISN, ack: cISN + 1, win: win})
		send(true, seg{flags: TCPAck, seq: cISN + 1, ack: sISN + 1, win: win})
		return send
	}
	t.Run("behind", func(t *testing.T) {
		send := handshake(t, 40205)
		for i := uint32(0); i < 3; i++ {
			if r := send(false, seg{flags: TCPAck | TCPPsh, seq: sISN + 1 + i*1000, ack: cISN + 1, win: win, data: 1000}); r.Class == ClassInvalid {
				t.Fatalf("segment %d invalid", i)
			}
			send(true, seg{flags: TCPAck, seq: cISN + 1, ack: sISN + 1 + (i+1)*1000, win: win})
		}
		if r := send(false, seg{flags: TCPAck | TCPPsh, seq: sISN + 1, ack: cISN + 1, win: win, data: 1000}); r.Class == ClassInvalid {
			t.Errorf("the first segment again, long acknowledged: INVALID; Linux: ignored")
		}
		if r := send(true, seg{flags: TCPAck, seq: cISN + 1, ack: sISN + 1, win: win}); r.Class == ClassInvalid {
			t.Errorf("an overly delayed ACK: INVALID; Linux: ignored")
		}
	})
	t.Run("just over", func(t *testing.T) {
		send := handshake(t, 40208)
		// The server fills the client's window and sends past it.
		send(false, seg{flags: TCPAck | TCPPsh, seq: sISN + 1, ack: cISN + 1, win: win, data: 1000})
		send(false, seg{flags: TCPAck | TCPPsh, seq: sISN + 1001, ack: cISN + 1, win: win, data: 100})
		if r := send(false, seg{flags: TCPAck | TCPPsh, seq: sISN + 1101, ack: cISN + 1, win: win, data: 100}); r.Class == ClassInvalid {
			t.Errorf("200 bytes over the client's window: INVALID; Linux: ignored")
		}
		if r := send(true, seg{flags: TCPAck, seq: cISN + 1, ack: sISN + 1201, win: win}); r.Class == ClassInvalid {
			t.Errorf("the client's ACK of all it took: INVALID")
		}
	})
}

// Linux (nf_conntrack_tcp_packet, TCP_CONNTRACK_TIME_WAIT case,
// IP_CT_EXP_CHALLENGE_ACK): in LAST_ACK, once a SYN from the original
// side was let through, the other side's next ACK is its challenge ACK
// (RFC 5961), not the ACK of the last FIN: the state stays LAST_ACK. It
// moved the entry to TIME_WAIT.
func TestTCPChallengeAckInLastAckKeepsState(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40206"), ap("198.51.100.200:80"))
	for _, s := range tcpPaths[TCPLastAck] {
		k.send(s.dir, s.flags, 0)
	}
	if e, _ := k.entry(); e.TCPState != TCPLastAck {
		t.Fatalf("setup: %v", e.TCPState)
	}
	// The client, closed, connects again from the same port; the server,
	// waiting for the last ACK, answers with a challenge ACK: its next
	// sequence number (its FIN counted), and what it has received.
	if r := track(t, tbl, tcpPacket(k.c, k.s, seg{flags: TCPSyn, seq: 0x12345678, win: 4096})); r.Class == ClassInvalid {
		t.Fatal("SYN invalid")
	}
	r := track(t, tbl, tcpPacket(k.s, k.c, seg{flags: TCPAck, seq: k.sNext, ack: k.cNext, win: 4096}))
	if e, _ := k.entry(); r.Class == ClassInvalid || e.TCPState != TCPLastAck {
		t.Fatalf("challenge ACK in LAST_ACK: class %v, state %v; Linux: accepted, LAST_ACK", r.Class, e.TCPState)
	}
}

// An assured connection whose endpoints and tracker no longer agree on
// the sequence numbers (both sides' FINs beyond the window it knows) is
// not kept for ESTABLISHED's 5 days: the second out-of-window FIN, the
// other side's, drops the timeout to the unacknowledged one (5 min), as
// Linux's nf_tcp_handle_invalid does. One alone changes nothing.
func TestTCPOutOfWindowFinExchangeShrinksTimeout(t *testing.T) {
	tbl, clk := newTable(t, Config{})
	k := newConn(t, tbl, clk, ap("192.0.2.10:40201"), ap("198.51.100.200:80"))
	k.send(Original, TCPSyn, 0)
	k.send(Reply, TCPSyn|TCPAck, 0)
	k.send(Original, TCPAck, 0)
	k.send(Original, TCPAck|TCPPsh, 10)
	k.send(Reply, TCPAck, 0)
	if r := track(t, tbl, tcpPacket(k.s, k.c, seg{flags: TCPFin | TCPAck, seq: k.sNext + 1<<30, ack: k.cNext, win: 4096})); r.Class != ClassInvalid {
		t.Fatalf("the server's FIN beyond the window: %v, want invalid", r.Class)
	}
	if e, _ := k.entry(); e.Timeout <= time.Hour {
		t.Fatalf("after one out-of-window FIN: %v, timeout %v; want ESTABLISHED's still", e.TCPState, e.Timeout)
	}
	if r := track(t, tbl, tcpPacket(k.c, k.s, seg{flags: TCPFin | TCPAck, seq: k.cNext + 1<<30, ack: k.sNext, win: 4096})); r.Class != ClassInvalid {
		t.Fatalf("the client's FIN beyond the window: %v, want invalid", r.Class)
	}
	if e, _ := k.entry(); e.TCPState != TCPEstablished || e.Timeout > DefaultTimeouts().TCPUnacknowledged {
		t.Fatalf("after an out-of-window FIN exchange: %v, timeout %v; want ESTABLISHED, at most %v", e.TCPState, e.Timeout, DefaultTimeouts().TCPUnacknowledged)
	}
}

// Linux lets an acknowledgment lag the data it acknowledges by the
// sender's largest window or 66000 bytes, whichever is more
// (MAXACKWINDOW): a client with a small window whose FIN, sent before two
// windows of a download arrived, reaches the tracker after its ACKs of
// them still closes the connection's original side.
func TestTCPDelayedAckWithinFloorOfSmallWindow(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	c, s := ap("192.0.2.10:40107"), ap("198.51.100.200:80")
	const cISN, sISN, win = 1000, 50000, 1000 // no window scaling
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPSyn, seq: cISN, win: win}))
	track(t, tbl, tcpPacket(s, c, seg{flags: TCPSyn | TCPAck, seq: sISN, ack: cISN + 1, win: win}))
	cNext, sNext := uint32(cISN+1), uint32(sISN+1)
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPAck, seq: cNext, ack: sNext, win: win}))
	// The client's FIN, acknowledging sNext, is held up in the network
	// while a window of data goes each way and is acknowledged twice.
	fin := tcpPacket(c, s, seg{flags: TCPFin | TCPAck, seq: cNext, ack: sNext, win: win})
	for range 2 {
		if r := track(t, tbl, tcpPacket(s, c, seg{flags: TCPAck | TCPPsh, seq: sNext, ack: cNext, win: win, data: win})); r.Class == ClassInvalid {
			t.Fatal("server data in the client's window invalid")
		}
		sNext += win
		if r := track(t, tbl, tcpPacket(c, s, seg{flags: TCPAck, seq: cNext + 1, ack: sNext, win: win})); r.Class == ClassInvalid {
			t.Fatal("the client's ACK invalid")
		}
	}
	if r := track(t, tbl, fin); r.Class == ClassInvalid {
		t.Fatal("the delayed FIN invalid")
	}
	e := mustGet(t, tbl, Tuple{Src: c.Addr(), Dst: s.Addr(), SrcPort: c.Port(), DstPort: s.Port(), Proto: ProtoTCP})
	if e.TCPState != TCPFinWait {
		t.Fatalf("after the client's FIN acknowledging %d bytes behind: %v, Linux: FIN_WAIT (the ACK within 66000 bytes)", 2*win, e.TCPState)
	}
}

// A reply the tracker ignores still marks the entry SEEN_REPLY, as Linux
// marks it for every reply its TCP tracker lets through: the server's
// challenge ACK to a SYN (it holds an old connection on the 4-tuple)
// ends [UNREPLIED], and the client's RST answering it closes the entry
// rather than deleting it as a connection that only a RST answered.
func TestTCPIgnoredReplySetsSeenReply(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	c, s := ap("192.0.2.10:40108"), ap("198.51.100.200:80")
	tp := Tuple{Src: c.Addr(), Dst: s.Addr(), SrcPort: c.Port(), DstPort: s.Port(), Proto: ProtoTCP}
	const cISN, oldServerAck, oldServerSeq = 1000, 0x10000000, 0x40000000
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPSyn, seq: cISN, win: 4096}))
	track(t, tbl, tcpPacket(s, c, seg{flags: TCPAck, seq: oldServerSeq, ack: oldServerAck, win: 4096}))
	if e := mustGet(t, tbl, tp); e.Status&SeenReply == 0 || e.TCPState != TCPSynSent {
		t.Fatalf("after the server's challenge ACK: %v %v, Linux: SYN_SENT with SEEN_REPLY", e.TCPState, e.Status)
	}
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPRst, seq: oldServerAck}))
	e, _, ok := tbl.Get(0, tp)
	if !ok || e.TCPState != TCPClose {
		t.Fatalf("after the client's RST answering the challenge ACK: entry %v (present %v), Linux: CLOSE", e.TCPState, ok)
	}
}

// Linux (nf_conntrack_tcp_packet, TCP_CONNTRACK_CLOSE case): a RST with
// sequence number 0 on a connection not yet established and assured skips
// the check against the other side's highest acknowledgment (most likely
// it answers a SYN let through), and only the window check judges it. It
// was INVALID: dropped, and a SYN_RECV entry lived out its 60 s instead of
// closing. On an established, assured connection it stays INVALID.
func TestTCPRstSeqZeroBeforeEstablished(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cISN    uint32
		steps   int // segments of the handshake sent: SYN, SYN/ACK, ACK
		invalid bool
		state   TCPState
	}{
		// seq 0 is below the server's acknowledgment (1001), but in
		// its window: the connection closes.
		{"SYN_RECV in window", 1000, 2, false, TCPClose},
		// seq 0 is far behind the client's next: let through, ignored.
		{"SYN_RECV behind window", 0x40000000, 2, false, TCPSynRecv},
		{"ESTABLISHED", 1000, 3, true, TCPEstablished},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, clk := newTable(t, Config{})
			k := newConn(t, tbl, clk, ap("192.0.2.10:40205"), ap("198.51.100.200:80"))
			k.cISN = tc.cISN
			for _, s := range []struct {
				dir   Dir
				flags uint8
			}{{Original, TCPSyn}, {Reply, TCPSyn | TCPAck}, {Original, TCPAck}}[:tc.steps] {
				k.send(s.dir, s.flags, 0)
			}
			r := track(t, tbl, tcpPacket(k.c, k.s, seg{flags: TCPRst, seq: 0}))
			e, _ := k.entry()
			if (r.Class == ClassInvalid) != tc.invalid || e.TCPState != tc.state {
				t.Fatalf("RST seq 0: class %v, state %v; Linux: invalid %v, %v", r.Class, e.TCPState, tc.invalid, tc.state)
			}
		})
	}
}

// Linux 6.18 (nf_conntrack_tcp_packet, TCP_CONNTRACK_CLOSE case) skips the
// window check for a RST that answers a SYN let through (its ack the
// SYN's end) only when the RST goes the other way; one from the SYN's own
// sender is checked like any other. It skipped the check both ways: the
// client's RST after its own ignored SYN closed an established connection
// from any sequence number, and in a simultaneous open a RST without ACK
// (ack 0, which lastEnd still was) from the side that sent the last SYN
// closed it from below the window. Linux calls the first INVALID and
// ignores the second.
func TestTCPRstAfterOwnSynChecksWindow(t *testing.T) {
	c, s := ap("192.0.2.10:40206"), ap("198.51.100.200:80")
	type pkt struct {
		fromClient bool
		sg         seg
	}
	for _, tc := range []struct {
		name    string
		pkts    []pkt
		invalid bool
		state   TCPState
	}{
		{"established, client RST after its SYN", []pkt{
			{true, seg{flags: TCPSyn, seq: 1000, win: 64000}},
			{false, seg{flags: TCPSyn | TCPAck, seq: 5000, ack: 1001, win: 64000}},
			{true, seg{flags: TCPAck, seq: 1001, ack: 5001, win: 64000}},
			{true, seg{flags: TCPSyn, seq: 900000, win: 64000}},
			{true, seg{flags: TCPRst, seq: 600000000, ack: 900001}},
		}, true, TCPEstablished},
		{"established, server RST after the client's SYN", []pkt{
			{true, seg{flags: TCPSyn, seq: 1000, win: 64000}},
			{false, seg{flags: TCPSyn | TCPAck, seq: 5000, ack: 1001, win: 64000}},
			{true, seg{flags: TCPAck, seq: 1001, ack: 5001, win: 64000}},
			{true, seg{flags: TCPSyn, seq: 900000, win: 64000}},
			{false, seg{flags: TCPRst, seq: 600000000, ack: 900001}},
		}, false, TCPClose},
		{"SYN_SENT2, server RST after its SYN", []pkt{
			{true, seg{flags: TCPSyn, seq: 1000, win: 64000}},
			{false, seg{flags: TCPSyn, seq: 500000000, win: 64000}},
			{false, seg{flags: TCPRst, seq: 10000}},
		}, false, TCPSynSent2},
		{"SYN_SENT2, client RST after the server's SYN", []pkt{
			{true, seg{flags: TCPSyn, seq: 1000, win: 64000}},
			{false, seg{flags: TCPSyn, seq: 500000000, win: 64000}},
			{true, seg{flags: TCPRst, seq: 600000000}},
		}, false, TCPClose},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, _ := newTable(t, Config{})
			var r Result
			for _, p := range tc.pkts {
				if p.fromClient {
					r = track(t, tbl, tcpPacket(c, s, p.sg))
				} else {
					r = track(t, tbl, tcpPacket(s, c, p.sg))
				}
			}
			e := mustGet(t, tbl, r.Orig())
			if (r.Class == ClassInvalid) != tc.invalid || e.TCPState != tc.state {
				t.Fatalf("RST: class %v, state %v; Linux: invalid %v, %v", r.Class, e.TCPState, tc.invalid, tc.state)
			}
		})
	}
}

// Linux (nf_conntrack_tcp_packet, a SYN/ACK answering an ignored SYN):
// the resynchronised side takes its flags from the SYN alone, so a
// picked-up connection's liberal tracking ends for the SYN's sender; the
// other side keeps its liberal flag (nf_ct_tcp_state_reset). Both kept
// it, so the client of a connection picked up and then reopened from the
// same port went unchecked for good: an acknowledgment of data never sent
// passed where Linux calls it INVALID. With TCPLiberal (Linux's
// tcp_be_liberal) nothing is checked still.
func TestTCPResyncEndsPickupLiberal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		invalid bool
	}{
		{"picked up", Config{}, true},
		{"TCPLiberal", Config{TCPLiberal: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, _ := newTable(t, tc.cfg)
			c, s := ap("192.0.2.10:40207"), ap("198.51.100.200:80")
			for i, p := range []struct {
				fromClient bool
				sg         seg
			}{
				{true, seg{flags: TCPAck, seq: 1001, ack: 5001, win: 64000}},             // picked up
				{false, seg{flags: TCPAck, seq: 5001, ack: 1001, win: 64000}},            // answered
				{true, seg{flags: TCPSyn, seq: 900000, win: 64000}},                      // ignored
				{false, seg{flags: TCPSyn | TCPAck, seq: 7000, ack: 900001, win: 64000}}, // resynchronises
				{true, seg{flags: TCPAck, seq: 900001, ack: 7001, win: 64000}},
			} {
				var r Result
				if p.fromClient {
					r = track(t, tbl, tcpPacket(c, s, p.sg))
				} else {
					r = track(t, tbl, tcpPacket(s, c, p.sg))
				}
				if r.Class == ClassInvalid {
					t.Fatalf("setup segment %d: INVALID", i)
				}
			}
			r := track(t, tbl, tcpPacket(c, s, seg{flags: TCPAck, seq: 900001, ack: 300000, win: 64000}))
			if (r.Class == ClassInvalid) != tc.invalid {
				t.Fatalf("client ACK of data the server never sent: class %v; Linux: invalid %v", r.Class, tc.invalid)
			}
			// The server's side keeps its liberal flag, as in Linux.
			r = track(t, tbl, tcpPacket(s, c, seg{flags: TCPAck | TCPPsh, seq: 207001, ack: 900001, win: 64000, data: 10}))
			if r.Class == ClassInvalid {
				t.Fatalf("server data beyond the window: INVALID; Linux: accepted, the server's side still liberal")
			}
		})
	}
}

// Linux (nf_conntrack_tcp_packet): the mark of a simultaneous open lives
// in last_flags, which an ignored SYN sets afresh, so after the
// originator's SYN sent again in SYN_RECV the reply's ACK no longer
// establishes the connection: it stays SYN_RECV, unassured, until the
// originator's ACK. The mark outlived the SYN here, and that ACK made the
// entry ESTABLISHED and assured, its timeout 5 days instead of 60 s.
func TestTCPIgnoredSynEndsSimultaneousOpen(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	c, s := ap("192.0.2.10:40208"), ap("198.51.100.200:80")
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPSyn, seq: 1000, win: 48505}))
	track(t, tbl, tcpPacket(s, c, seg{flags: TCPSyn, seq: 5000, win: 34297}))
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPSyn | TCPAck, seq: 1000, ack: 5001, win: 48505}))
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPSyn, seq: 1000, win: 48505})) // sent again: ignored
	r := track(t, tbl, tcpPacket(s, c, seg{flags: TCPAck, seq: 5001, ack: 1001, win: 34297}))
	e := mustGet(t, tbl, r.Orig())
	if e.TCPState != TCPSynRecv || e.Status&Assured != 0 || e.Timeout != DefaultTimeouts().TCPSynRecv {
		t.Fatalf("reply ACK after the ignored SYN: %v %v %v; Linux: SYN_RECV, not assured, %v",
			e.TCPState, e.Status, e.Timeout, DefaultTimeouts().TCPSynRecv)
	}
	// The originator's ACK establishes it, as in Linux.
	track(t, tbl, tcpPacket(c, s, seg{flags: TCPAck, seq: 1001, ack: 5001, win: 48505}))
	if e := mustGet(t, tbl, r.Orig()); e.TCPState != TCPEstablished || e.Status&Assured == 0 {
		t.Fatalf("originator's ACK: %v %v; Linux: ESTABLISHED, assured", e.TCPState, e.Status)
	}
}

// Linux counts a packet where its TCP tracker refreshes the entry
// (nf_ct_refresh_acct): a SYN sent again before any reply returns before
// it (it renews no timeout either), and so does every packet the tracker
// ignores. A client that sent its SYN three times to a silent server
// shows packets=1, as in conntrack -L.
func TestTCPSynAgainNotCounted(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	k := newConn(t, tbl, nil, ap("10.0.0.1:40000"), ap("10.0.0.2:80"))
	for range 3 {
		k.send(Original, TCPSyn, 0)
	}
	if e, _ := k.entry(); e.Packets[Original] != 1 {
		t.Errorf("packets after a SYN sent three times: %d, want 1", e.Packets[Original])
	}
}

// A packet the tracker ignores (a SYN on an established connection) is
// let through and not counted.
func TestTCPIgnoredNotCounted(t *testing.T) {
	tbl, _ := newTable(t, Config{})
	k := newConn(t, tbl, nil, ap("10.0.0.1:40000"), ap("10.0.0.2:80"))
	k.exchange()
	before, _ := k.entry()
	k.send(Original, TCPSyn, 0)
	after, _ := k.entry()
	if after.Packets[Original] != before.Packets[Original] || after.Bytes[Original] != before.Bytes[Original] {
		t.Errorf("an ignored SYN counted: packets %d -> %d, bytes %d -> %d", before.Packets[Original], after.Packets[Original], before.Bytes[Original], after.Bytes[Original])
	}
}
