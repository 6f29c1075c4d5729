package hostnet

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// ctrEcho is an echo request from the container, with identifier id and
// sequence number seq, as the gateway hands it to Send.
func ctrEcho(from, to netip.Addr, id, seq uint16) []byte {
	f := make([]byte, nat.Headroom+28+4)
	b := f[nat.Headroom:]
	ipv4Header(b, len(b), conntrack.ProtoICMP, defaultTTL, from, to)
	m := b[20:]
	m[0] = icmpEchoRequest
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "ping")
	binary.BigEndian.PutUint16(m[2:], nat.Checksum(m))
	return f
}

// An echo request of a code other than 0, which an ICMP socket refuses
// to send (EINVAL), is dropped and counted in drop_proto, and opens no
// flow: it opened a socket, an entry and a reader for an echo that never
// left, and counted its loss nowhere.
func TestEchoOtherCodeCounted(t *testing.T) {
	u, tbl := outboundUplink(t)
	echo := ctrEcho(netip.MustParseAddr("10.0.2.100"), u.cfg.Gateway, 0x4321, 1)
	m := echo[nat.Headroom+20:]
	m[1], m[2], m[3] = 1, 0, 0
	binary.BigEndian.PutUint16(m[2:], nat.Checksum(m))
	u.Send(echo, u.cfg.Gateway, bridgeNone)
	if c := u.Counters(); c["drop_proto"] != 1 || c["ping_opened"]+c["drop_ping_refused"] != 0 || u.Flows() != 0 || tbl.Len() != 0 {
		t.Errorf("an echo of code 1: drop_proto %d, ping_opened %d, drop_ping_refused %d, %d flows, %d entries; want it counted in drop_proto, and no flow",
			c["drop_proto"], c["ping_opened"], c["drop_ping_refused"], u.Flows(), tbl.Len())
	}
}
