package conntrack

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

var server = ap("198.51.100.200:53")

// flowPacket fills p as the datagram of flow i (from 10.x.y.z:port to the
// server) without decoding bytes, so a benchmark measures the table alone.
func flowPacket(p *Packet, i uint32) {
	*p = Packet{Kind: KindFlow, Len: 60, Tuple: Tuple{
		Src:     netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		Dst:     server.Addr(),
		SrcPort: 1024 + uint16(i>>24), DstPort: server.Port(), Proto: ProtoUDP,
	}}
}

func fill(b testing.TB, n int) *Table {
	// The default configuration (a coarse clock kept by the reaper), with
	// timeouts long enough that no flow expires while benchmarks run.
	tbl, err := New(Config{Max: max(2*n, 1024), Timeouts: Timeouts{UDP: time.Hour, UDPStream: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	var p Packet
	for i := range uint32(n) {
		flowPacket(&p, i)
		if _, err := tbl.Track(0, &p, nil); err != nil {
			b.Fatal(err)
		}
	}
	return tbl
}

var (
	tablesMu sync.Mutex
	tables   = map[int]*Table{}
)

// closingShared runs the tests and benchmarks, then closes the tables
// the benchmarks shared (filled), whose reapers goleak would report.
type closingShared struct{ m *testing.M }

func (c closingShared) Run() int {
	code := c.m.Run()
	tablesMu.Lock()
	defer tablesMu.Unlock()
	for n, tbl := range tables {
		tbl.Close()
		delete(tables, n)
	}
	return code
}

// filled returns a shared table of n flows, built once per process.
func filled(b *testing.B, n int) *Table {
	tablesMu.Lock()
	defer tablesMu.Unlock()
	if tables[n] == nil {
		b.StopTimer()
		tables[n] = fill(b, n)
		b.StartTimer()
	}
	return tables[n]
}

// BenchmarkTrackExisting tracks a packet of a flow already in a table of
// n flows: "hot" cycles through 64 flows (a burst of packets of a few
// flows), "random" picks any of the n (every lookup a cache miss at 1M).
func BenchmarkTrackExisting(b *testing.B) {
	for _, n := range []int{1000, 1 << 20} {
		for _, mode := range []string{"hot", "random"} {
			b.Run(fmt.Sprintf("%s/%d", mode, n), func(b *testing.B) {
				tbl := filled(b, n)
				order := make([]uint32, 1<<16)
				r := rand.New(rand.NewPCG(1, 2))
				for i := range order {
					if mode == "hot" {
						order[i] = uint32(i % 64 * (n / 64))
					} else {
						order[i] = uint32(r.IntN(n))
					}
				}
				var p Packet
				b.ReportAllocs()
				b.SetBytes(60)
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					flowPacket(&p, order[i&(len(order)-1)])
					if res, _ := tbl.Track(0, &p, nil); res.Created || res.Class == ClassInvalid {
						b.Fatal("flow not found")
					}
				}
			})
		}
	}
}

// BenchmarkTrackParallel is BenchmarkTrackExisting/random from every
// processor at once.
func BenchmarkTrackParallel(b *testing.B) {
	for _, n := range []int{1000, 1 << 20} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tbl := filled(b, n)
			b.ReportAllocs()
			b.SetBytes(60)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 3))
				var p Packet
				for pb.Next() {
					flowPacket(&p, uint32(r.IntN(n)))
					tbl.Track(0, &p, nil)
				}
			})
		})
	}
}

// BenchmarkDecodeAndTrack is the whole per-packet cost for a TCP segment
// of an established connection: decoding its bytes, then tracking it.
func BenchmarkDecodeAndTrack(b *testing.B) {
	tbl, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer tbl.Close()
	c, s := ap("192.0.2.10:40000"), ap("198.51.100.200:443")
	track(b, tbl, tcpPacket(c, s, seg{flags: TCPSyn, seq: 1}))
	track(b, tbl, tcpPacket(s, c, seg{flags: TCPSyn | TCPAck, seq: 100, ack: 2}))
	track(b, tbl, tcpPacket(c, s, seg{flags: TCPAck, seq: 2, ack: 101}))
	raw := tcpPacket(c, s, seg{flags: TCPAck, seq: 2, ack: 101, data: 1400})
	var p Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		p.Decode(raw)
		tbl.Track(0, &p, nil)
	}
}

// BenchmarkChurn creates a new flow per operation in a table at its cap of
// 65536 whose flows keep expiring: insertion, the reaper's incremental
// expiry, and (when it falls behind) early drop of expired entries.
func BenchmarkChurn(b *testing.B) {
	clk := newClock()
	tbl, err := New(Config{Max: 1 << 16, Clock: clk, ExpireInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer tbl.Close()
	var p Packet
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		flowPacket(&p, uint32(i))
		if _, err := tbl.Track(0, &p, nil); err != nil {
			b.Fatal(err)
		}
		clk.Advance(time.Millisecond) // each flow lives 30 s: 30000 live
		if i%256 == 0 {
			tbl.Expire(2048)
		}
	}
}

// BenchmarkMemoryPerEntry reports the heap a table of 1M flows takes, per
// entry.
func BenchmarkMemoryPerEntry(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tbl := fill(b, 1<<20)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(tbl.Len()), "bytes/entry")
		runtime.KeepAlive(tbl)
		tbl.Close()
	}
}

// BenchmarkLookup finds the entry of an existing flow without tracking a
// packet (Table.Taken, the NAT's test of a tuple): the lookup alone.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1000, 1 << 20} {
		for _, mode := range []string{"hot", "random"} {
			b.Run(fmt.Sprintf("%s/%d", mode, n), func(b *testing.B) {
				tbl := filled(b, n)
				r := rand.New(rand.NewPCG(5, 6))
				tuples := make([]Tuple, 1<<16)
				var p Packet
				for i := range tuples {
					k := uint32(i % 64 * (n / 64))
					if mode == "random" {
						k = uint32(r.IntN(n))
					}
					flowPacket(&p, k)
					tuples[i] = p.Tuple
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if i&255 == 0 {
						tbl.now() // packets flow (Taken runs within Track): the coarse clock is kept
					}
					if !tbl.Taken(0, tuples[i&(len(tuples)-1)]) {
						b.Fatal("flow not found")
					}
				}
			})
		}
	}
}
