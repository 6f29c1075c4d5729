package hostnet

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// badChecksum gives the TCP segment in f (a ctrSegment frame) a correct
// checksum, then corrupts it: a segment a TCP endpoint must discard
// (RFC 9293 3.1), and Linux's conntrack takes as invalid (no NAT).
func badChecksum(f []byte) []byte {
	b := f[nat.Headroom:]
	t := b[20:]
	binary.BigEndian.PutUint16(t[16:], 0)
	binary.BigEndian.PutUint16(t[16:], ^nat.Sum(t, pseudo(b, conntrack.ProtoTCP, len(t))))
	t[16] ^= 0x5a // corrupted
	return f
}

// A container's SYN whose TCP checksum is wrong (a complete frame, no
// checksum pending: bridgeNone) is discarded, as a real server discards
// it (and Linux's conntrack will not NAT it): no host connection is made,
// nothing is answered.
func TestOutboundBadChecksumSyn(t *testing.T) {
	u, tbl := outboundUplink(t)
	l, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:40900")
	syn := badChecksum(ctrSegment(ctr, dst, 1000, 0, conntrack.TCPSyn, 64240, synOpts(true), nil))
	u.Send(syn, dst.Addr(), bridgeNone)
	l.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if c, err := l.Accept(); err == nil {
		c.Close()
		t.Error("a SYN with a bad checksum made a host connection")
	}
	noSegment(t, u, "a SYN with a bad checksum was answered")
	if n := tbl.Len(); n != 0 {
		t.Errorf("%d entries after a SYN with a bad checksum, want none", n)
	}
}

// On an open outbound flow, a reset with a bad checksum ends nothing, as
// with Linux's TCP (and its conntrack): the destination's connection
// lives on.
func TestOutboundBadChecksumReset(t *testing.T) {
	longSynRTO(t)
	u, _ := outboundUplink(t)
	l, dst := loopbackDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:40901")
	sa, _ := synRcvd(t, u, l, ctr, dst, 1000)
	u.Send(ctrSegment(ctr, dst, 1001, sa.seq()+1, conntrack.TCPAck, 502, nil, nil), dst.Addr(), bridgeNone)
	if st := spliceSnapshot(u, ctr, dst).state; st != spliceOpen {
		t.Fatalf("state %d after the handshake, want open", st)
	}
	rst := badChecksum(ctrSegment(ctr, dst, 1001, sa.seq()+1, conntrack.TCPRst|conntrack.TCPAck, 0, nil, nil))
	u.Send(rst, dst.Addr(), bridgeNone)
	if st := spliceSnapshot(u, ctr, dst).state; st != spliceOpen {
		t.Errorf("state %d after a reset with a bad checksum, want still open", st)
	}
}

// A container's UDP datagram or echo request whose checksum is complete
// and wrong is discarded and counted, as Linux's conntrack takes it as
// invalid (no NAT) and its destination's stack discards it: the uplink
// sent the payload on under a good checksum of the host's, so corrupted
// data reached the destination as sound, and a corrupted echo drew a
// reply. A UDP checksum of zero (none) or one pending (the TAP's
// offload) is sent on.
func TestOutboundBadChecksumDatagram(t *testing.T) {
	u, tbl := outboundUplink(t)
	srv, dst := loopbackUDPDst(t, u)
	ctr := netip.MustParseAddrPort("10.0.2.100:40910")
	buf := make([]byte, 64)
	read := func() string {
		srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := srv.ReadFrom(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}

	bad := ctrDatagram(ctr, dst, "corrupted")
	bad[nat.Headroom+26] ^= 0x5a
	u.Send(bad, dst.Addr(), bridgeNone)
	if got := read(); got != "" {
		t.Errorf("a datagram with a bad checksum reached its destination: %q", got)
	}
	if n := u.Counters()["drop_malformed"]; n != 1 {
		t.Errorf("drop_malformed %d after a datagram with a bad checksum, want 1", n)
	}
	if n := tbl.Len(); n != 0 {
		t.Errorf("%d entries after a datagram with a bad checksum, want none", n)
	}

	echo := ctrEcho(ctr.Addr(), dst.Addr(), 0x1234, 1)
	echo[nat.Headroom+20+2] ^= 0x5a
	u.Send(echo, dst.Addr(), bridgeNone)
	if c := u.Counters(); c["drop_malformed"] != 2 || c["ping_opened"]+c["drop_ping_refused"] != 0 {
		t.Errorf("drop_malformed %d, ping_opened %d, drop_ping_refused %d after an echo with a bad checksum; want it discarded as malformed", c["drop_malformed"], c["ping_opened"], c["drop_ping_refused"])
	}

	none := ctrDatagram(ctr, dst, "no checksum")
	none[nat.Headroom+26], none[nat.Headroom+27] = 0, 0
	u.Send(none, dst.Addr(), bridgeNone)
	if got := read(); got != "no checksum" {
		t.Errorf("a datagram without a checksum: %q arrived", got)
	}
	pending := ctrDatagram(ctr, dst, "pending")
	pending[nat.Headroom+26] ^= 0x5a // partial: the offload's to complete
	u.Send(pending, dst.Addr(), bridge.Offload{Flags: bridge.OffloadNeedsCsum, CsumStart: nat.Headroom + 20, CsumOffset: 6})
	if got := read(); got != "pending" {
		t.Errorf("a datagram whose checksum is pending: %q arrived", got)
	}
}
