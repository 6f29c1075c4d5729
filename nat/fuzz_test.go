package nat

import (
	"bytes"
	"errors"
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

// decodeSeeds are packets of every kind the rewriters take, with ICMP
// errors quoting the other family's ICMP (which conntrack once decoded
// with the wrong protocol).
func decodeSeeds() [][]byte {
	var s [][]byte
	for _, c := range rewriteCases() {
		s = append(s, c.pkt)
	}
	for _, c := range icmpErrorCases() {
		s = append(s, c.pkt)
	}
	return append(s,
		withHopByHop(ipPacket(cont6, client6, conntrack.ProtoUDP, udpHeader(1, 2, 40))),
		ipPacket(cont4, client4, conntrack.ProtoTCP, tcpHeader(1, 2, 40)),
		ipPacket(cont6, client6, conntrack.ProtoICMPv6, icmpHeader(128, 0, 7, []byte("abcd"))),
		ipPacket(router6, cont6, conntrack.ProtoICMPv6, icmpHeader(1, 4, 0, ipPacket(cont6, client6, conntrack.ProtoICMP, icmpHeader(8, 0, 7, nil)))),
		ipPacket(router4, cont4, conntrack.ProtoICMP, icmpHeader(3, 3, 0, ipPacket(cont4, client4, conntrack.ProtoICMPv6, icmpHeader(128, 0, 7, nil)))),
	)
}

// conntrack's decoder and nat's rewriters agree on what a packet is: a
// packet conntrack decodes nat parses, as a fragment when conntrack says
// so; a flow rewritten to its own tuple (in full, and with the checksum
// left partial) is unchanged; an ICMP error rewritten to its own quote
// still decodes with that quote.
func FuzzParseAgree(f *testing.F) {
	for _, s := range decodeSeeds() {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, fix bool) {
		if fix {
			fixChecksums(pkt)
		}
		orig := bytes.Clone(pkt)
		var p conntrack.Packet
		if err := p.Decode(pkt); err != nil {
			return
		}
		h, err := parseIP(pkt, false)
		if err != nil {
			t.Fatalf("conntrack decodes a %v, nat: %v", p.Kind, err)
		}
		if (p.Kind == conntrack.KindFragment) != h.frag {
			t.Fatalf("conntrack decodes a %v, nat's fragment flag %v", p.Kind, h.frag)
		}
		switch p.Kind {
		case conntrack.KindFlow:
			if err := Rewrite(pkt, p.Tuple); err != nil || !bytes.Equal(pkt, orig) {
				t.Fatalf("rewritten to its own tuple %v: %v, changed %v", p.Tuple, err, !bytes.Equal(pkt, orig))
			}
			if p.Tuple.Proto == conntrack.ProtoTCP || p.Tuple.Proto == conntrack.ProtoUDP {
				if err := RewritePartial(pkt, p.Tuple); err != nil || !bytes.Equal(pkt, orig) {
					t.Fatalf("RewritePartial to its own tuple %v: %v, changed %v", p.Tuple, err, !bytes.Equal(pkt, orig))
				}
			}
		case conntrack.KindICMPError:
			if err := RewriteICMPError(pkt, p.Quoted); err != nil {
				t.Fatalf("an error rewritten to its own quote %v: %v", p.Quoted, err)
			}
			var q conntrack.Packet
			if err := q.Decode(pkt); err != nil || q.Kind != conntrack.KindICMPError || q.Quoted != p.Quoted {
				t.Fatalf("after the rewrite: %v, a %v quoting %v; want an error quoting %v", err, q.Kind, q.Quoted, p.Quoted)
			}
		}
	})
}

// An ICMP error the gateway builds about any flow's packet (unreachable,
// time exceeded, fragmentation needed) decodes as an error quoting that
// flow, to its source from the router, with checksums that verify when
// the packet's did.
func FuzzICMPErrorQuote(f *testing.F) {
	for _, s := range decodeSeeds() {
		f.Add(s, true, uint8(0))
	}
	f.Fuzz(func(t *testing.T, pkt []byte, fix bool, which uint8) {
		if fix {
			fixChecksums(pkt)
		}
		var p conntrack.Packet
		if p.Decode(pkt) != nil || p.Kind != conntrack.KindFlow {
			return
		}
		valid := verify(pkt) == nil
		from := router4
		if p.Tuple.Src.Is6() {
			from = router6
		}
		var out []byte
		var err error
		switch which % 3 {
		case 0:
			out, err = Unreachable(nil, pkt, from, 3)
		case 1:
			out, err = TimeExceeded(nil, pkt, from)
		case 2:
			out, err = FragNeeded(nil, pkt, from, 1280)
		}
		if errors.Is(err, ErrNoICMP) {
			return
		}
		if err != nil {
			t.Fatalf("an error about %v: %v", p.Tuple, err)
		}
		var q conntrack.Packet
		if err := q.Decode(out); err != nil {
			t.Fatalf("the error does not decode: %v (% x)", err, out)
		}
		if q.Kind != conntrack.KindICMPError || q.Quoted != p.Tuple || q.Tuple.Dst != p.Tuple.Src || q.Tuple.Src != from {
			t.Fatalf("the error decodes as a %v %v quoting %v; want one from %v to %v quoting %v", q.Kind, q.Tuple, q.Quoted, from, p.Tuple.Src, p.Tuple)
		}
		if err := verify(out); err != nil && valid {
			t.Fatalf("the error's checksums: %v", err)
		}
	})
}
