package hostnet

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

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
	// An ICMP echo reply from 10.0.0.2 to 192.0.2.9, id 7, sequence 1.
	b := make([]byte, 28)
	ipv4Header(b, len(b), conntrack.ProtoICMP, defaultTTL, netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("192.0.2.9"))
	ic := b[20:]
	setEcho := func(typ byte) {
		ic[0], ic[1] = typ, 0
		binary.BigEndian.PutUint16(ic[4:], 7)
		binary.BigEndian.PutUint16(ic[6:], 1)
		binary.BigEndian.PutUint16(ic[2:], 0)
		binary.BigEndian.PutUint16(ic[2:], nat.Checksum(ic))
	}
	setEcho(icmpEchoReply)
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
	setEcho(icmpEchoRequest)
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
	if c, f := u.stats.DropConntrack.Load(), u.stats.DropTableFull.Load(); c != 2 || f != 0 {
		t.Errorf("drop_conntrack %d, drop_table_full %d after the table closed; want 2 and 0 still", c, f)
	}
}
