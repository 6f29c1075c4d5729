package hostnet

import (
	"log/slog"
	"testing"
	"time"

	"github.com/usernat/usernat/conntrack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The saved SYNs are bounded by maxSaved. Full, they are aged at most
// every synAgeEvery, not on every SYN of a flood (each aging looks at all
// of them); a connection's resent SYN still replaces its last; a SYN with
// no room is not kept; and once the old ones age out there is room again.
func TestSaveSynBounded(t *testing.T) {
	u := &Uplink{tcpSyn: map[synKey]savedSyn{}, cfg: Config{ConnectTimeout: time.Second}}
	id := func(i int) synKey {
		return synKey{RemotePort: uint16(i), LocalPort: uint16(i >> 16), RemoteAddress: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})}
	}
	t0 := time.Unix(1000, 0)
	for i := range maxSaved {
		u.saveSynLocked(id(i), []byte{1}, t0)
	}
	for i := range 1000 {
		u.saveSynLocked(id(maxSaved+i), []byte{2}, t0.Add(time.Duration(i)*time.Microsecond))
	}
	if !u.synAged.Equal(t0) { // aging on every SYN would have it at the last
		t.Errorf("a flood of 1000 SYNs aged the full table last at %v, want only at its first, %v", u.synAged, t0)
	}
	if len(u.tcpSyn) != maxSaved {
		t.Errorf("%d SYNs kept, want the bound %d", len(u.tcpSyn), maxSaved)
	}
	if _, ok := u.tcpSyn[id(maxSaved)]; ok {
		t.Error("a SYN with no room was kept")
	}
	u.saveSynLocked(id(7), []byte{3}, t0.Add(time.Millisecond))
	if s := u.tcpSyn[id(7)]; len(s.b) != 1 || s.b[0] != 3 {
		t.Errorf("a resent SYN did not replace its last: %v", s.b)
	}
	// Past the connect timeout (and a second), the first ones go.
	later := t0.Add(u.cfg.ConnectTimeout + 2*time.Second)
	u.saveSynLocked(id(maxSaved+5000), []byte{4}, later)
	if _, ok := u.tcpSyn[id(maxSaved+5000)]; !ok || len(u.tcpSyn) != 1 {
		t.Errorf("after aging: %d SYNs kept, the new one kept %v; want it alone", len(u.tcpSyn), ok)
	}
}

// A flow conntrack refuses with room in the table counts as
// drop_conntrack, not drop_table_full: an ICMP echo reply as a flow's
// first packet, which is invalid, and a reply tuple of another protocol,
// an error. A table closed (the gateway closing) counts as neither.
func TestTrackRefusedCounter(t *testing.T) {
	tbl, err := conntrack.New(conntrack.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	u := &Uplink{log: slog.New(slog.DiscardHandler)}
	u.tbl.Store(tbl)
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 2}), DstAddr: tcpip.AddrFrom4([4]byte{192, 0, 2, 9}),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(b[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4EchoReply)
	ic.SetIdent(7)
	ic.SetSequence(1)
	var p conntrack.Packet
	if err := p.Decode(b); err != nil {
		t.Fatal(err)
	}
	reply, _ := p.Tuple.Reverse()
	if _, ok := u.track(&p, reply); ok {
		t.Fatal("an echo reply opened a flow")
	}
	// An error with room in the table: an echo request, valid, with a
	// reply of another protocol.
	ic.SetType(header.ICMPv4Echo)
	if err := p.Decode(b); err != nil {
		t.Fatal(err)
	}
	bad, _ := p.Tuple.Reverse()
	bad.Proto = conntrack.ProtoTCP
	if _, ok := u.track(&p, bad); ok {
		t.Fatal("a reply of another protocol opened a flow")
	}
	if c, f := u.stats.DropConntrack.Load(), u.stats.DropTableFull.Load(); c != 2 || f != 0 {
		t.Errorf("drop_conntrack %d, drop_table_full %d; want 2 and 0", c, f)
	}
	// A closed table is no refusal.
	tbl.Close()
	good, _ := p.Tuple.Reverse()
	u.track(&p, good)
	if c := u.stats.DropConntrack.Load(); c != 2 {
		t.Errorf("drop_conntrack %d after the table closed, want 2 still", c)
	}
}
