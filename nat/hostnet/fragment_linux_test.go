package hostnet

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/nat"
)

// A UDP fragment handed to Send (the gateway reassembles datagrams, but
// Send is the uplink's side of nat.Uplink) is dropped as malformed: its
// UDP length, the whole datagram's, cut the payload past the fragment's
// end, and the uplink panicked.
func TestSendUDPFragment(t *testing.T) {
	u, tbl := outboundUplink(t)
	_, dst := loopbackUDPDst(t, u)
	f := ctrDatagram(netip.MustParseAddrPort("10.0.2.100:40920"), dst, "the first of two fragments")
	b := f[nat.Headroom:]
	binary.BigEndian.PutUint16(b[20+4:], 3000) // the whole datagram's length
	b[6] |= 0x20                               // more fragments
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], nat.Checksum(b[:20]))
	u.Send(f, dst.Addr(), bridgeNone)
	if n := u.Counters()["drop_malformed"]; n != 1 || tbl.Len() != 0 || u.Flows() != 0 {
		t.Errorf("a UDP fragment: drop_malformed %d, %d entries, %d flows; want it dropped as malformed", n, tbl.Len(), u.Flows())
	}
}
