package nat

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/conntrack"
)

// fuzzTuple makes a tuple of p's family and protocol from fuzzed bytes.
func fuzzTuple(from conntrack.Tuple, addrs []byte, sport, dport uint16) conntrack.Tuple {
	var a [32]byte
	copy(a[:], addrs)
	to := from
	if from.Src.Is4() {
		to.Src = netip.AddrFrom4([4]byte(a[:4]))
		to.Dst = netip.AddrFrom4([4]byte(a[4:8]))
	} else {
		to.Src = netip.AddrFrom16([16]byte(a[:16]))
		to.Dst = netip.AddrFrom16([16]byte(a[16:]))
	}
	to.SrcPort, to.DstPort = sport, dport
	return to
}

// fixChecksums makes every checksum of pkt right, the quote's included, so
// the fuzzer explores the packets whose checksums must survive.
func fixChecksums(pkt []byte) {
	h, err := parseIP(pkt, false)
	if err != nil || h.frag {
		return
	}
	l4 := pkt[h.l4:h.end]
	if (h.proto == conntrack.ProtoICMP || h.proto == conntrack.ProtoICMPv6) && len(l4) >= 8 && isICMPError(h.proto, l4[0]) {
		quote := l4[8:]
		if full, err := parseIP(quote, false); err == nil && full.end == len(quote) && !full.frag {
			fillChecksums(quote)
		} else if q, err := parseIP(quote, true); err == nil && !q.v6 {
			putCksum(quote, 10, 0)
			putCksum(quote, 10, Checksum(quote[:q.l4]))
		}
	}
	fillChecksums(pkt)
}

func rewriteSeeds(f *testing.F) {
	for _, c := range rewriteCases() {
		f.Add(c.pkt, false, []byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\xff\xfe\xfd\xfc"), uint16(7), uint16(9))
	}
	for _, c := range icmpErrorCases() {
		f.Add(c.pkt, true, []byte("\xc0\x00\x02\x01\xc6\x33\x64\x02"), uint16(0), uint16(0xffff))
	}
}

// FuzzRewrite: no panic; a packet with right checksums keeps them; a
// rewrite and its reverse give back the packet.
func FuzzRewrite(f *testing.F) {
	rewriteSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte, fix bool, addrs []byte, sport, dport uint16) {
		if fix {
			fixChecksums(pkt)
		}
		orig := bytes.Clone(pkt)
		var p conntrack.Packet
		if p.Decode(pkt) != nil || p.Kind != conntrack.KindFlow {
			// Still no panic, and no change on error.
			if err := Rewrite(pkt, conntrack.Tuple{Src: host4, Dst: host4, Proto: conntrack.ProtoTCP}); err != nil && !bytes.Equal(pkt, orig) {
				t.Fatalf("changed on error %v", err)
			}
			return
		}
		to := fuzzTuple(p.Tuple, addrs, sport, dport)
		valid := canonical(pkt)
		if err := Rewrite(pkt, to); err != nil {
			if !bytes.Equal(pkt, orig) {
				t.Fatalf("changed on error %v", err)
			}
			return
		}
		var q conntrack.Packet
		if err := q.Decode(pkt); err != nil {
			t.Fatalf("rewritten packet does not decode: %v", err)
		}
		want := to
		if to.Proto == conntrack.ProtoICMP || to.Proto == conntrack.ProtoICMPv6 {
			want.DstPort = p.Tuple.DstPort // the type and code stay
		} else if to.Proto != conntrack.ProtoTCP && to.Proto != conntrack.ProtoUDP {
			want.SrcPort, want.DstPort = 0, 0
		}
		if q.Tuple != want {
			t.Fatalf("tuple %v, want %v", q.Tuple, want)
		}
		if valid {
			if err := verify(pkt); err != nil {
				t.Fatalf("checksums broke: %v", err)
			}
		}
		if err := Rewrite(pkt, p.Tuple); err != nil {
			t.Fatalf("reverse: %v", err)
		}
		if valid && !bytes.Equal(pkt, orig) {
			t.Fatalf("rewrite and back:\n got %x\nwant %x", pkt, orig)
		}
	})
}

// FuzzRewriteICMPError: the same for ICMP errors and their quotes.
func FuzzRewriteICMPError(f *testing.F) {
	rewriteSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte, fix bool, addrs []byte, sport, dport uint16) {
		if fix {
			fixChecksums(pkt)
		}
		orig := bytes.Clone(pkt)
		var p conntrack.Packet
		if p.Decode(pkt) != nil || p.Kind != conntrack.KindICMPError {
			if err := RewriteICMPError(pkt, conntrack.Tuple{Src: host4, Dst: host4, Proto: conntrack.ProtoUDP}); err != nil && !bytes.Equal(pkt, orig) {
				t.Fatalf("changed on error %v", err)
			}
			return
		}
		to := fuzzTuple(p.Quoted, addrs, sport, dport)
		valid := canonical(pkt)
		if err := RewriteICMPError(pkt, to); err != nil {
			if !bytes.Equal(pkt, orig) {
				t.Fatalf("changed on error %v", err)
			}
			return
		}
		var q conntrack.Packet
		if err := q.Decode(pkt); err != nil || q.Kind != conntrack.KindICMPError {
			t.Fatalf("rewritten packet decodes as %v: %v", q.Kind, err)
		}
		want := to
		switch to.Proto {
		case conntrack.ProtoICMP, conntrack.ProtoICMPv6:
			want.DstPort = p.Quoted.DstPort
		case conntrack.ProtoTCP, conntrack.ProtoUDP:
		default:
			want.SrcPort, want.DstPort = 0, 0
		}
		if q.Quoted != want || q.Tuple.Dst != to.Src {
			t.Fatalf("quoting %v to %v, want %v to %v", q.Quoted, q.Tuple.Dst, want, to.Src)
		}
		if valid {
			if err := verify(pkt); err != nil {
				t.Fatalf("checksums broke: %v", err)
			}
		}
		if err := RewriteICMPError(pkt, p.Quoted); err != nil {
			t.Fatalf("reverse: %v", err)
		}
		// The outer addresses come back when the error went to the quoted
		// packet's sender, and a router's source is not mistaken for the
		// new far end.
		restorable := p.Tuple.Dst == p.Quoted.Src && (p.Tuple.Src == p.Quoted.Dst || p.Tuple.Src != to.Dst)
		if valid && restorable && !bytes.Equal(pkt, orig) {
			t.Fatalf("rewrite and back:\n got %x\nwant %x", pkt, orig)
		}
	})
}

// FuzzForward hands the gateway arbitrary packets, from the bridge or from
// outside, with arbitrary offload metadata, as a container's kernel or a
// custom port may send them: whatever comes, the gateway drops or forwards
// it, and never panics (a pending checksum before the IP header, and an
// IPv6 header in an IPv4 frame, each did).
func FuzzForward(f *testing.F) {
	udp := ipPacket(ctrIP, clientIP, conntrack.ProtoUDP, udpHeader(5000, 53, 10))
	f.Add(udp, true, uint8(0), uint8(0), uint16(0), uint16(0), uint16(0), uint16(0))
	f.Add(udp, true, uint8(bridge.OffloadNeedsCsum), uint8(0), uint16(0), uint16(Headroom+20), uint16(6), uint16(0))
	tcp := ipPacket(ctrIP, clientIP, conntrack.ProtoTCP, tcpHeader(5000, 80, 4000))
	f.Add(tcp, true, uint8(bridge.OffloadNeedsCsum), uint8(bridge.GSOTCPv4), uint16(1448), uint16(0), uint16(16), uint16(54))
	f.Add(tcp, false, uint8(bridge.OffloadNeedsCsum), uint8(bridge.GSOTCPv4), uint16(1448), uint16(Headroom+20), uint16(16), uint16(54))
	v6 := make([]byte, 48) // an IPv6 UDP header in an IPv4 frame, 2001:db8::1 to 2001:db8::2
	v6[0], v6[5], v6[6], v6[7], v6[23], v6[39], v6[45] = 0x60, 8, 17, 64, 1, 2, 8
	copy(v6[8:], []byte{0x20, 0x01, 0x0d, 0xb8})
	copy(v6[24:], []byte{0x20, 0x01, 0x0d, 0xb8})
	f.Add(v6, true, uint8(0), uint8(0), uint16(0), uint16(0), uint16(0), uint16(0))
	opts := withOptions(ctrIP, clientIP, []byte{7, 7, 4, 0, 0, 0, 0, 68, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0}, conntrack.ProtoUDP, udpHeader(5000, 53, 10))
	f.Add(opts, true, uint8(0), uint8(0), uint16(0), uint16(0), uint16(0), uint16(0))
	port := &offloadSink{sink: sink{done: make(chan struct{})}}
	gw := sinkGateway(f, port, 1500)
	f.Fuzz(func(t *testing.T, pkt []byte, inside bool, flags, gso uint8, gsoSize, csumStart, csumOffset, hdrLen uint16) {
		src, dst := ctrMAC, gw.MAC()
		if !inside {
			src, dst = clientMAC, gw.inside.mac
		}
		off := bridge.Offload{Flags: flags, GSO: gso, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset, HdrLen: hdrLen}
		gw.forward(frame(dst, src, etherTypeIP4, pkt), inside, off)
	})
}
