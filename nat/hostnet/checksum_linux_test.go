package hostnet

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

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
