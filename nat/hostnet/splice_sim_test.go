package hostnet

import (
	"fmt"
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/usernat/usernat/conntrack"
	"github.com/usernat/usernat/nat"
)

// The container receives exactly the host's bytes and then the FIN,
// whatever frames it loses: a simulated receiver that drops frames at
// random, keeps what comes out of order and SACKs it as Linux does (a
// FIN out of order inside its block) checks every byte of every frame
// against the stream, with and without the peek offset (recvPeekSkip),
// fast recoveries and timeouts included. The host socket is a TCP
// connection over loopback: run it through .ci/test (unshare --net).
func TestSpliceSACKStreamIntact(t *testing.T) {
	data := make([]byte, 100000)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	for _, peek := range []bool{true, false} {
		for seed := uint32(1); seed <= 30; seed++ {
			t.Run(fmt.Sprintf("peek=%v/seed=%d", peek, seed), func(t *testing.T) {
				s := spliceOn(t, endedHost(t, data), 4096)
				s.u.log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
				s.mu.Lock()
				s.sndWnd = 0xffff
				s.peekOff = peek
				s.rcvNxt, s.recover, s.toEmpty, s.sackOK = 7000, 999, true, true
				s.mu.Unlock()
				rnd := seed
				next := func() uint32 { rnd = rnd*1664525 + 1013904223; return rnd >> 16 }
				end := uint32(1000 + len(data) + 1) // past the FIN
				nxt := uint32(1000)
				var have []seqRange
				var last seqRange
				for iter := 0; iter < 5000 && nxt != end; iter++ {
					s.pump()
					var frames []tcpSeg
					for len(s.u.ln.q) > 0 {
						f := <-s.u.ln.q
						frames = append(frames, append(tcpSeg(nil), (*f.buf)[nat.Headroom+20:f.n]...))
					}
					if len(frames) == 0 {
						fire(s)
						continue
					}
					for _, seg := range frames {
						pl := seg.payload()
						fin := seg.flags()&conntrack.TCPFin != 0
						if len(pl) == 0 && !fin || next()%5 == 0 {
							continue // a pure ACK, or lost
						}
						seq := seg.seq()
						off := int(seq - 1000)
						if off < 0 || off+len(pl) > len(data) || string(pl) != string(data[off:off+len(pl)]) {
							t.Fatalf("iteration %d: %d bytes at seq %d are not the stream's", iter, len(pl), seq)
						}
						r := seqRange{seq, seq + uint32(len(pl))}
						if fin {
							if r.end != end-1 {
								t.Fatalf("a FIN at %d, want it at %d", r.end, end-1)
							}
							r.end++
						}
						if int32(r.end-nxt) > 0 {
							if int32(r.start-nxt) <= 0 {
								nxt = r.end
							} else {
								have = append(have, r)
								last = r
							}
							for changed := true; changed; {
								changed = false
								for i, h := range have {
									if int32(h.start-nxt) <= 0 {
										if int32(h.end-nxt) > 0 {
											nxt = h.end
										}
										have = append(have[:i], have[i+1:]...)
										changed = true
										break
									}
								}
							}
						}
						// Blocks: the last segment's first, then the rest,
						// merged where they touch, four at most.
						var merged []seqRange
						for _, h := range sortRanges(have) {
							if n := len(merged); n > 0 && int32(h.start-merged[n-1].end) <= 0 {
								if int32(h.end-merged[n-1].end) > 0 {
									merged[n-1].end = h.end
								}
								continue
							}
							merged = append(merged, h)
						}
						var blocks []uint32
						for _, h := range merged {
							if int32(last.start-h.start) >= 0 && int32(last.start-h.end) < 0 {
								blocks = append([]uint32{h.start, h.end}, blocks...)
							} else {
								blocks = append(blocks, h.start, h.end)
							}
						}
						blocks = blocks[:min(len(blocks), 8)]
						s.input(containerAck(nxt, 0xffff, blocks...), nil)
					}
				}
				s.mu.Lock()
				st, finAcked, una := s.state, s.finAcked, s.sndUna
				s.mu.Unlock()
				t.Logf("fast %d, timeouts %d", s.u.stats.InboundFastRetransmits.Load(), s.u.stats.InboundRetransmits.Load())
				if nxt != end || st != spliceOpen || !finAcked || una != end {
					t.Fatalf("the container has %d in order of %d; state %d, finAcked %v, sndUna %d", nxt-1000, end-1000, st, finAcked, una)
				}
			})
		}
	}
}

// endedHost is the host end (a descriptor of its own, non-blocking) of a
// TCP connection over loopback whose client sent data and then its FIN,
// both arrived.
func endedHost(t *testing.T, data []byte) int {
	t.Helper()
	c, fd := loopbackHost(t)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	spinUntil(t, "the bytes and the FIN", func() bool {
		n, _ := unix.IoctlGetInt(fd, unix.SIOCINQ)
		info, _ := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return n == len(data) && info != nil && info.State == tcpCloseWait
	})
	return fd
}

func sortRanges(rs []seqRange) []seqRange {
	out := append([]seqRange(nil), rs...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && int32(out[j].start-out[j-1].start) < 0; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// testWriter writes a splice's log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
