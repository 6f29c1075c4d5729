package hostnet

import (
	"log/slog"
	"testing"

	"github.com/usernat/usernat/conntrack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
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
