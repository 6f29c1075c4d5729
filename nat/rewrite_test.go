package nat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/usernat/usernat/conntrack"
)

func tup(src, dst netip.Addr, sport, dport uint16, p conntrack.Proto) conntrack.Tuple {
	return conntrack.Tuple{Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Proto: p}
}

type rewriteCase struct {
	name string
	pkt  []byte
	to   conntrack.Tuple
}

func rewriteCases() []rewriteCase {
	udpNoSum := ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(40000, 53, 9))
	putCksum(udpNoSum, 26, 0)
	return []rewriteCase{
		{"tcp4 masquerade", ipPacket(cont4, client4, conntrack.ProtoTCP, tcpHeader(0x1234, 443, 100)),
			tup(host4, client4, 0xedcb, 443, conntrack.ProtoTCP)},
		{"tcp4 dnat", ipPacket(client4, host4, conntrack.ProtoTCP, tcpHeader(52140, 8080, 3)),
			tup(client4, cont4, 52140, 80, conntrack.ProtoTCP)},
		{"udp4 odd payload", ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(0x0102, 0x0304, 7)),
			tup(host4, router4, 0xfefd, 0xfcfb, conntrack.ProtoUDP)},
		{"udp4 no checksum", udpNoSum, tup(host4, client4, 1, 53, conntrack.ProtoUDP)},
		{"icmp4 echo", ipPacket(cont4, client4, conntrack.ProtoICMP, icmpHeader(8, 0, 0x1111, []byte("ping"))),
			conntrack.ICMPTuple(host4, client4, 8, 0, 0xeeee)},
		{"gre4", ipPacket(cont4, client4, 47, make([]byte, 12)), tup(host4, router4, 0, 0, 47)},
		{"tcp6", ipPacket(cont6, client6, conntrack.ProtoTCP, tcpHeader(0x1234, 443, 1)),
			tup(host6, router6, 0xedcb, 0x0bbb, conntrack.ProtoTCP)},
		{"udp6", ipPacket(client6, host6, conntrack.ProtoUDP, udpHeader(5353, 8053, 30)),
			tup(client6, cont6, 5353, 53, conntrack.ProtoUDP)},
		{"icmp6 echo", ipPacket(cont6, client6, conntrack.ProtoICMPv6, icmpHeader(128, 0, 0x1111, []byte("ping6"))),
			conntrack.ICMPTuple(host6, client6, 128, 0, 0xeeee)},
		{"unchanged", ipPacket(cont4, client4, conntrack.ProtoTCP, tcpHeader(1, 2, 0)),
			tup(cont4, client4, 1, 2, conntrack.ProtoTCP)},
	}
}

func TestRewrite(t *testing.T) {
	for _, tc := range rewriteCases() {
		t.Run(tc.name, func(t *testing.T) {
			orig := bytes.Clone(tc.pkt)
			from := decode(orig).Tuple
			pkt := bytes.Clone(tc.pkt)
			if err := Rewrite(pkt, tc.to); err != nil {
				t.Fatal(err)
			}
			if got := decode(pkt).Tuple; got != tc.to {
				t.Errorf("tuple after rewrite = %v, want %v", got, tc.to)
			}
			if err := verify(pkt); err != nil {
				t.Errorf("after rewrite: %v", err)
			}
			if from == tc.to && !bytes.Equal(pkt, orig) {
				t.Errorf("an identity rewrite changed the packet")
			}
			if err := Rewrite(pkt, from); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pkt, orig) {
				t.Errorf("rewrite and back:\n got %x\nwant %x", pkt, orig)
			}
		})
	}
}

func TestRewriteUDPChecksumZero(t *testing.T) {
	t.Run("no checksum stays none", func(t *testing.T) {
		pkt := rewriteCases()[3].pkt
		if err := Rewrite(pkt, tup(router4, host4, 9, 10, conntrack.ProtoUDP)); err != nil {
			t.Fatal(err)
		}
		if c := cksumAt(pkt, 26); c != 0 {
			t.Fatalf("checksum %#04x, want 0", c)
		}
	})
	t.Run("computed zero is sent as ffff", func(t *testing.T) {
		for _, v6 := range []bool{false, true} {
			src, dst := cont4, client4
			if v6 {
				src, dst = cont6, client6
			}
			orig := ipPacket(src, dst, conntrack.ProtoUDP, udpHeader(1000, 2000, 5))
			sentAsOnes(t, orig, func(i int) conntrack.Tuple { return tup(src, dst, uint16(i+1), 2000, conntrack.ProtoUDP) })
		}
	})
}

// sentAsOnes rewrites orig, whose transport checksum is at 6, to each
// tuple of at(i) in turn until one makes that checksum come to zero, and
// checks that it was sent as all ones.
func sentAsOnes(t *testing.T, orig []byte, at func(i int) conntrack.Tuple) {
	t.Helper()
	h, _ := parseIP(orig, false)
	for i := range 1 << 16 {
		pkt := bytes.Clone(orig)
		to := at(i)
		if err := Rewrite(pkt, to); err != nil {
			t.Fatal(err)
		}
		c := cksumAt(pkt, h.l4+6)
		putCksum(pkt, h.l4+6, 0)
		if ^Sum(pkt[h.l4:], pseudoSum(pkt, &h, h.end-h.l4)) != 0 {
			continue
		}
		if c != 0xffff {
			t.Fatalf("to %v: checksum %#04x, want 0xffff", to, c)
		}
		return
	}
	t.Fatal("no tuple gives a zero checksum")
}

func TestRewriteErrors(t *testing.T) {
	tcp4 := ipPacket(cont4, client4, conntrack.ProtoTCP, tcpHeader(1, 2, 0))
	frag := bytes.Clone(tcp4)
	binary.BigEndian.PutUint16(frag[6:], 0x2000) // MF
	icmpErr := ipPacket(router4, host4, conntrack.ProtoICMP, icmpHeader(3, 3, 0, tcp4[:28]))
	for _, tc := range []struct {
		name string
		pkt  []byte
		to   conntrack.Tuple
		want error
	}{
		{"empty", nil, tup(host4, client4, 1, 2, conntrack.ProtoTCP), ErrMalformed},
		{"short ip", tcp4[:19], tup(host4, client4, 1, 2, conntrack.ProtoTCP), ErrMalformed},
		{"bad total length", tcp4[:39], tup(host4, client4, 1, 2, conntrack.ProtoTCP), ErrMalformed},
		{"version 5", append([]byte{0x55}, tcp4[1:]...), tup(host4, client4, 1, 2, conntrack.ProtoTCP), ErrMalformed},
		{"fragment", frag, tup(host4, client4, 1, 2, conntrack.ProtoTCP), ErrFragment},
		{"family", tcp4, tup(host6, client6, 1, 2, conntrack.ProtoTCP), ErrMismatch},
		{"protocol", tcp4, tup(host4, client4, 1, 2, conntrack.ProtoUDP), ErrMismatch},
		{"invalid tuple", tcp4, conntrack.Tuple{Proto: conntrack.ProtoTCP}, ErrMismatch},
		{"icmp error", icmpErr, tup(router4, cont4, 0, 0, conntrack.ProtoICMP), ErrMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := bytes.Clone(tc.pkt)
			err := Rewrite(pkt, tc.to)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !bytes.Equal(pkt, tc.pkt) {
				t.Fatalf("packet changed on error")
			}
		})
	}
	// A TCP header cut short by the IP total length.
	short := bytes.Clone(tcp4[:30])
	binary.BigEndian.PutUint16(short[2:], 30)
	if err := Rewrite(short, tup(host4, client4, 1, 2, conntrack.ProtoTCP)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short TCP: %v", err)
	}
}

type icmpErrorCase struct {
	name string
	pkt  []byte
	to   conntrack.Tuple
	// outer is the outer tuple (addresses) the error must have after.
	outerSrc, outerDst netip.Addr
}

func icmpErrorCases() []icmpErrorCase {
	// What the masqueraded container sent, as the server saw it.
	tcpOut4 := ipPacket(host4, client4, conntrack.ProtoTCP, tcpHeader(0xedcb, 443, 10))
	udpOut4 := ipPacket(host4, client4, conntrack.ProtoUDP, udpHeader(0xedcb, 53, 10))
	udpOut4NoSum := bytes.Clone(udpOut4)
	putCksum(udpOut4NoSum, 26, 0)
	putCksum(udpOut4NoSum, 10, 0)
	putCksum(udpOut4NoSum, 10, Checksum(udpOut4NoSum[:20]))
	pingOut4 := ipPacket(host4, client4, conntrack.ProtoICMP, icmpHeader(8, 0, 0xeeee, []byte("abcdefgh")))
	tcpOut6 := ipPacket(host6, client6, conntrack.ProtoTCP, tcpHeader(0xedcb, 443, 10))
	udpOut6 := ipPacket(host6, client6, conntrack.ProtoUDP, udpHeader(0xedcb, 53, 3))
	pingOut6 := ipPacket(host6, client6, conntrack.ProtoICMPv6, icmpHeader(128, 0, 0xeeee, []byte("abcdefgh")))
	// What the client sent to a published port, as the container saw it.
	dnatIn4 := ipPacket(client4, cont4, conntrack.ProtoUDP, udpHeader(52140, 80, 4))
	dnatIn6 := ipPacket(client6, cont6, conntrack.ProtoTCP, tcpHeader(52140, 80, 4))

	ce := func(name string, from, to netip.Addr, typ, code uint8, quote []byte, tq conntrack.Tuple, os, od netip.Addr) icmpErrorCase {
		p := conntrack.ProtoICMP
		if from.Is6() {
			p = conntrack.ProtoICMPv6
		}
		return icmpErrorCase{name, ipPacket(from, to, p, icmpHeader(typ, code, 0, quote)), tq, os, od}
	}
	return []icmpErrorCase{
		ce("tcp4 router full quote", router4, host4, 11, 0, tcpOut4, tup(cont4, client4, 0x1234, 443, conntrack.ProtoTCP), router4, cont4),
		ce("tcp4 router 8 bytes", router4, host4, 3, 4, tcpOut4[:28], tup(cont4, client4, 0x1234, 443, conntrack.ProtoTCP), router4, cont4),
		ce("tcp4 quote with checksum", router4, host4, 3, 4, tcpOut4[:38], tup(cont4, client4, 0x1234, 443, conntrack.ProtoTCP), router4, cont4),
		ce("udp4 from server", client4, host4, 3, 3, udpOut4, tup(cont4, client4, 0x1234, 53, conntrack.ProtoUDP), client4, cont4),
		ce("udp4 no checksum", client4, host4, 3, 3, udpOut4NoSum, tup(cont4, client4, 0x1234, 53, conntrack.ProtoUDP), client4, cont4),
		ce("ping4", router4, host4, 11, 0, pingOut4, conntrack.ICMPTuple(cont4, client4, 8, 0, 0x1111), router4, cont4),
		ce("udp4 dnat from container", cont4, client4, 3, 3, dnatIn4, tup(client4, host4, 52140, 8080, conntrack.ProtoUDP), host4, client4),
		ce("tcp6 packet too big", router6, host6, 2, 0, tcpOut6, tup(cont6, client6, 0x1234, 443, conntrack.ProtoTCP), router6, cont6),
		ce("tcp6 truncated", router6, host6, 1, 4, tcpOut6[:48], tup(cont6, client6, 0x1234, 443, conntrack.ProtoTCP), router6, cont6),
		ce("udp6 from server", client6, host6, 1, 4, udpOut6, tup(cont6, client6, 0x1234, 53, conntrack.ProtoUDP), client6, cont6),
		ce("ping6", router6, host6, 3, 0, pingOut6, conntrack.ICMPTuple(cont6, client6, 128, 0, 0x1111), router6, cont6),
		ce("tcp6 dnat from container", cont6, client6, 1, 4, dnatIn6, tup(client6, host6, 52140, 8080, conntrack.ProtoTCP), host6, client6),
	}
}

func TestRewriteICMPError(t *testing.T) {
	for _, tc := range icmpErrorCases() {
		t.Run(tc.name, func(t *testing.T) {
			orig := bytes.Clone(tc.pkt)
			before := decode(orig)
			pkt := bytes.Clone(tc.pkt)
			if err := RewriteICMPError(pkt, tc.to); err != nil {
				t.Fatal(err)
			}
			p := decode(pkt)
			if p.Kind != conntrack.KindICMPError || p.Quoted != tc.to {
				t.Errorf("after: %v quoting %v, want an error quoting %v", p.Kind, p.Quoted, tc.to)
			}
			if p.Tuple.Src != tc.outerSrc || p.Tuple.Dst != tc.outerDst {
				t.Errorf("outer %v → %v, want %v → %v", p.Tuple.Src, p.Tuple.Dst, tc.outerSrc, tc.outerDst)
			}
			if err := verify(pkt); err != nil {
				t.Errorf("after rewrite: %v", err)
			}
			if err := RewriteICMPError(pkt, before.Quoted); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pkt, orig) {
				t.Errorf("rewrite and back:\n got %x\nwant %x", pkt, orig)
			}
		})
	}
}

func TestRewriteICMPErrorRefuses(t *testing.T) {
	echo := ipPacket(cont4, client4, conntrack.ProtoICMP, icmpHeader(8, 0, 1, nil))
	tcp := ipPacket(host4, client4, conntrack.ProtoTCP, tcpHeader(1, 2, 0))
	noPorts := ipPacket(router4, host4, conntrack.ProtoICMP, icmpHeader(3, 3, 0, tcp[:22]))
	errAboutErr := ipPacket(router4, host4, conntrack.ProtoICMP, icmpHeader(3, 3, 0,
		ipPacket(host4, client4, conntrack.ProtoICMP, icmpHeader(3, 1, 0, nil))))
	for _, tc := range []struct {
		name string
		pkt  []byte
		to   conntrack.Tuple
		want error
	}{
		{"query", echo, conntrack.ICMPTuple(cont4, client4, 8, 0, 1), ErrMismatch},
		{"quote without ports", noPorts, tup(cont4, client4, 1, 2, conntrack.ProtoTCP), ErrMalformed},
		{"quote of an error", errAboutErr, tup(cont4, client4, 0, 0, conntrack.ProtoICMP), ErrMalformed},
		{"protocol", ipPacket(router4, host4, conntrack.ProtoICMP, icmpHeader(3, 3, 0, tcp)), tup(cont4, client4, 1, 2, conntrack.ProtoUDP), ErrMismatch},
		{"family", ipPacket(router4, host4, conntrack.ProtoICMP, icmpHeader(3, 3, 0, tcp)), tup(cont6, client6, 1, 2, conntrack.ProtoTCP), ErrMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := bytes.Clone(tc.pkt)
			if err := RewriteICMPError(pkt, tc.to); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !bytes.Equal(pkt, tc.pkt) {
				t.Fatalf("packet changed on error")
			}
		})
	}
}

func TestDecTTL(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  []byte
		ok   bool
	}{
		{"ipv4", ipPacket(cont4, client4, conntrack.ProtoUDP, udpHeader(1, 2, 0)), true},
		{"ipv6", ipPacket(cont6, client6, conntrack.ProtoUDP, udpHeader(1, 2, 0)), true},
		{"short", []byte{0x45, 0, 0}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ttl := func() byte {
				if tc.pkt[0]>>4 == 4 {
					return tc.pkt[8]
				}
				return tc.pkt[7]
			}
			for want := 63; want >= 1 && tc.ok; want-- {
				if !DecTTL(tc.pkt) {
					t.Fatalf("DecTTL refused at %d", want+1)
				}
				if int(ttl()) != want {
					t.Fatalf("ttl %d, want %d", ttl(), want)
				}
				if err := verify(tc.pkt); err != nil {
					t.Fatal(err)
				}
			}
			before := bytes.Clone(tc.pkt)
			if DecTTL(tc.pkt) {
				t.Fatalf("DecTTL forwarded a packet with TTL %v", before)
			}
			if !bytes.Equal(before, tc.pkt) {
				t.Fatalf("refused packet changed")
			}
		})
	}
}

func TestRewriteAllocs(t *testing.T) {
	c := rewriteCases()[0]
	e := icmpErrorCases()[0]
	from, qfrom := decode(c.pkt).Tuple, decode(e.pkt).Quoted
	n := testing.AllocsPerRun(100, func() {
		_ = Rewrite(c.pkt, c.to)
		_ = Rewrite(c.pkt, from)
		_ = RewriteICMPError(e.pkt, e.to)
		_ = RewriteICMPError(e.pkt, qfrom)
		DecTTL(c.pkt)
		_ = Rewrite(c.pkt[:10], from) // an error
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}

func BenchmarkRewrite(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
		v6   bool
	}{{"tcp4-64", 64, false}, {"tcp4-1500", 1500, false}, {"tcp6-1500", 1500, true}} {
		b.Run(tc.name, func(b *testing.B) {
			src, dst, nsrc := cont4, client4, host4
			hl := 40
			if tc.v6 {
				src, dst, nsrc, hl = cont6, client6, host6, 60
			}
			pkt := ipPacket(src, dst, conntrack.ProtoTCP, tcpHeader(1000, 443, tc.size-hl))
			to := [2]conntrack.Tuple{tup(nsrc, dst, 2000, 443, conntrack.ProtoTCP), tup(src, dst, 1000, 443, conntrack.ProtoTCP)}
			b.ReportAllocs()
			b.SetBytes(int64(len(pkt)))
			i := 0
			for b.Loop() {
				if err := Rewrite(pkt, to[i&1]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
	b.Run("icmp-error", func(b *testing.B) {
		e := icmpErrorCases()[0]
		to := [2]conntrack.Tuple{e.to, decode(e.pkt).Quoted}
		b.ReportAllocs()
		b.SetBytes(int64(len(e.pkt)))
		i := 0
		for b.Loop() {
			if err := RewriteICMPError(e.pkt, to[i&1]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// The recipes of the doc comments, through a real table: a masqueraded
// flow out, its answer back, and an ICMP error about it back.
func TestRewriteThroughTable(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		c, srv, up, rtr := cont4, client4, host4, router4
		if v6 {
			c, srv, up, rtr = cont6, client6, host6, router6
		}
		tbl := newTable(t)
		var a Allocator
		// Another flow holds the container's port, so the mapping moves.
		if _, err := track(t, tbl, &a, udpFrom(rtr, 40000, srv, 53), Mapping{SrcAddr: up}); err != nil {
			t.Fatal(err)
		}
		out := udpFrom(c, 40000, srv, 53)
		p := decode(out)
		res, err := tbl.Track(0, &p, a.Translator(Mapping{SrcAddr: up}))
		if err != nil {
			t.Fatal(err)
		}
		to, _ := res.Tuple(1 - res.Dir).Reverse()
		sent := bytes.Clone(out)
		if err := Rewrite(sent, to); err != nil {
			t.Fatal(err)
		}
		onWire := decode(sent).Tuple
		if onWire.Src != up || onWire.SrcPort == 40000 || verify(sent) != nil {
			t.Fatalf("v6=%v: sent as %v", v6, onWire)
		}
		// The answer.
		back := udpFrom(srv, 53, up, onWire.SrcPort)
		p = decode(back)
		res, err = tbl.Track(0, &p, nil)
		if err != nil || res.Dir != conntrack.Reply {
			t.Fatalf("v6=%v: answer %+v %v", v6, res, err)
		}
		to, _ = res.Tuple(1 - res.Dir).Reverse()
		if err := Rewrite(back, to); err != nil {
			t.Fatal(err)
		}
		if got := decode(back).Tuple; got != tup(srv, c, 53, 40000, conntrack.ProtoUDP) || verify(back) != nil {
			t.Fatalf("v6=%v: answer delivered as %v", v6, got)
		}
		// A router's error about the packet sent.
		proto, typ := conntrack.ProtoICMP, uint8(11)
		if v6 {
			proto, typ = conntrack.ProtoICMPv6, 3
		}
		icmpErr := ipPacket(rtr, up, proto, icmpHeader(typ, 0, 0, sent))
		p = decode(icmpErr)
		res, err = tbl.Track(0, &p, nil)
		if err != nil || res.Class != conntrack.ClassRelated {
			t.Fatalf("v6=%v: error classified %v, %v", v6, res.Class, err)
		}
		if err := RewriteICMPError(icmpErr, res.Tuple(1-res.Dir)); err != nil {
			t.Fatal(err)
		}
		q := decode(icmpErr)
		if q.Tuple.Src != rtr || q.Tuple.Dst != c || q.Quoted != decode(out).Tuple || verify(icmpErr) != nil {
			t.Fatalf("v6=%v: error delivered as %v quoting %v", v6, q.Tuple, q.Quoted)
		}
	}
}

// A packet whose transport checksum is pending (the field holds the
// pseudo-header sum) and rewritten with RewritePartial gets, once the
// checksum is completed over the transport bytes, the checksum a packet
// built with the new tuple would have.
func TestRewritePartial(t *testing.T) {
	for _, tc := range rewriteCases() {
		h, err := parseIP(tc.pkt, false)
		if err != nil || (h.proto != conntrack.ProtoTCP && h.proto != conntrack.ProtoUDP) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			pkt := bytes.Clone(tc.pkt)
			ck := h.l4 + l4Cksum(h.proto)
			putCksum(pkt, ck, pseudoSum(pkt, &h, h.end-h.l4))
			if err := RewritePartial(pkt, tc.to); err != nil {
				t.Fatal(err)
			}
			if got := decode(pkt).Tuple; got != tc.to {
				t.Errorf("tuple after rewrite = %v, want %v", got, tc.to)
			}
			// Complete it as a NIC (or bridge.CompleteChecksum) would.
			c := ^Sum(pkt[h.l4:h.end], 0)
			if h.proto == conntrack.ProtoUDP && c == 0 {
				c = 0xffff
			}
			putCksum(pkt, ck, c)
			if err := verify(pkt); err != nil {
				t.Errorf("completed after a partial rewrite: %v", err)
			}
		})
	}
}

// UDP-Lite's and DCCP's checksums cover a pseudo-header, as UDP's does:
// a masquerade's new address updates them, and their ports, which
// conntrack does not track for them, stay. A UDP-Lite checksum that
// comes to zero is sent as all ones (RFC 3828).
func TestRewriteAddressPairChecksums(t *testing.T) {
	for _, c := range []struct {
		name  string
		proto conntrack.Proto
		v6    bool
	}{
		{"udplite", protoUDPLite, false},
		{"udplite v6", protoUDPLite, true},
		{"dccp", protoDCCP, false},
		{"dccp v6", protoDCCP, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, dst, to := cont4, client4, host4
			if c.v6 {
				src, dst, to = cont6, client6, router6
			}
			l4 := udpHeader(5000, 53, 12) // ports, a length or coverage, the checksum at 6
			pkt := ipPacket(src, dst, c.proto, l4)
			h, _ := parseIP(pkt, false)
			putCksum(pkt, h.l4+6, 0)
			putCksum(pkt, h.l4+6, ^Sum(pkt[h.l4:], pseudoSum(pkt, &h, h.end-h.l4)))
			if err := Rewrite(pkt, tup(to, dst, 0, 0, c.proto)); err != nil {
				t.Fatal(err)
			}
			h, _ = parseIP(pkt, false)
			if got := Sum(pkt[h.l4:], pseudoSum(pkt, &h, h.end-h.l4)); got != 0xffff {
				t.Errorf("checksum does not verify after the rewrite: sum %#04x", got)
			}
			if sp, dp := binary.BigEndian.Uint16(pkt[h.l4:]), binary.BigEndian.Uint16(pkt[h.l4+2:]); sp != 5000 || dp != 53 {
				t.Errorf("ports %d, %d after the rewrite, want 5000, 53", sp, dp)
			}
		})
	}
}

// A UDP-Lite datagram masqueraded by the gateway leaves with a checksum
// that verifies.
func TestGatewayMasqueradeUDPLite(t *testing.T) {
	gw, up, _ := recGateway(t)
	l4 := udpHeader(5000, 53, 12)
	binary.BigEndian.PutUint16(l4[4:], 8) // checksum coverage: the header
	pkt := ipPacket(ctrIP, clientIP, protoUDPLite, l4)
	l := pkt[20:]
	l[6], l[7] = 0, 0
	binary.BigEndian.PutUint16(l[6:], ^Sum(l[:8], pseudoHeaderSum(pkt[12:16], pkt[16:20], protoUDPLite, len(l))))
	fromBridgeIP(gw, pkt)
	out := lastIP(up)
	if out == nil {
		t.Fatal("not forwarded")
	}
	if src := netip.AddrFrom4([4]byte(out[12:16])); src != hostIP {
		t.Fatalf("source %v, want the masquerade's %v", src, hostIP)
	}
	o := out[20:]
	if got := Sum(o[:8], pseudoHeaderSum(out[12:16], out[16:20], protoUDPLite, len(o))); got != 0xffff {
		t.Fatalf("UDP-Lite checksum does not verify after the masquerade: sum %#04x", got)
	}
}

func TestRewriteUDPLiteChecksumZero(t *testing.T) {
	orig := ipPacket(cont4, client4, protoUDPLite, udpHeader(5000, 53, 12))
	h, _ := parseIP(orig, false)
	putCksum(orig, h.l4+6, 0)
	putCksum(orig, h.l4+6, ^Sum(orig[h.l4:], pseudoSum(orig, &h, h.end-h.l4)))
	sentAsOnes(t, orig, func(i int) conntrack.Tuple {
		return tup(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), client4, 0, 0, protoUDPLite)
	})
}
