package conntrack

import (
	"bufio"
	"cmp"
	"io"
	"slices"
	"strconv"
	"time"
)

// AppendLine appends e as conntrack -L prints it, without a newline:
//
//	tcp      6 431999 ESTABLISHED src=192.168.2.104 dst=192.168.2.116 sport=52140 dport=8080 packets=6 bytes=412 src=172.17.0.4 dst=192.168.2.104 sport=80 dport=52140 packets=4 bytes=530 [ASSURED] mark=0 use=1
//
// counters adds the packets= and bytes= fields, which the kernel prints
// when accounting is on (nf_conntrack_acct).
func (e Entry) AppendLine(b []byte, counters bool) []byte {
	return e.appendLine(b, counters, false)
}

// appendLine is AppendLine, or for event the entry as an event line ends:
// the kernel's events carry the mark only when it is set and no use
// count, so conntrack -E prints "mark=" only then and never "use=".
func (e Entry) appendLine(b []byte, counters, event bool) []byte {
	p := e.Orig.Proto
	start := len(b)
	b = append(b, p.String()...)
	for len(b)-start < 8 {
		b = append(b, ' ')
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(p), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.Timeout/time.Second), 10)
	b = append(b, ' ')
	if p == ProtoTCP {
		b = append(b, e.TCPState.String()...)
		b = append(b, ' ')
	}
	b = e.Orig.appendTo(b)
	b = append(b, ' ')
	if counters {
		b = appendCounters(b, e.Packets[Original], e.Bytes[Original])
	}
	if e.Status&SeenReply == 0 {
		b = append(b, "[UNREPLIED] "...)
	}
	b = e.Reply.appendTo(b)
	b = append(b, ' ')
	if counters {
		b = appendCounters(b, e.Packets[Reply], e.Bytes[Reply])
	}
	if e.Status&Assured != 0 {
		b = append(b, "[ASSURED] "...)
	}
	if !event || e.Mark != 0 {
		b = append(b, "mark="...)
		b = strconv.AppendUint(b, uint64(e.Mark), 10)
		b = append(b, ' ')
	}
	if e.Zone != 0 {
		b = append(b, "zone="...)
		b = strconv.AppendUint(b, uint64(e.Zone), 10)
		b = append(b, ' ')
	}
	if event {
		return b[:len(b)-1]
	}
	return append(b, "use=1"...)
}

func appendCounters(b []byte, packets, bytes uint64) []byte {
	b = append(b, "packets="...)
	b = strconv.AppendUint(b, packets, 10)
	b = append(b, " bytes="...)
	b = strconv.AppendUint(b, bytes, 10)
	return append(b, ' ')
}

// AppendLine appends ev as conntrack -E prints it: the event type in
// brackets, right-aligned in 9 columns, then the entry's line, which ends
// as the kernel's events do: "mark=" only when the mark is set, and no
// "use=".
//
//	[NEW] udp      17 30 src=10.0.1.2 dst=192.0.2.2 sport=50001 dport=9999 [UNREPLIED] src=192.0.2.2 dst=10.0.1.2 sport=9999 dport=50001
func (ev Event) AppendLine(b []byte, counters bool) []byte {
	tag := "[" + ev.Type.String() + "]"
	for i := len(tag); i < 9; i++ {
		b = append(b, ' ')
	}
	b = append(b, tag...)
	b = append(b, ' ')
	return ev.Entry.appendLine(b, counters, true)
}

// String returns e in conntrack -L format, with counters.
func (e Entry) String() string { return string(e.AppendLine(nil, true)) }

// List returns a snapshot of every live entry, oldest first.
func (t *Table) List() []Entry {
	now := t.clockNow()
	var out []Entry
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for _, v := range s.slots {
			ref := uint32(v)
			if ref == 0 || refDir(ref) != Original {
				continue
			}
			if e := t.slab.at(ref); e.deadline.Load() > now {
				out = append(out, t.snapshot(e, now))
			}
		}
		s.mu.RUnlock()
	}
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// WriteList writes every live entry to w, one conntrack -L line each,
// oldest first, with counters when counters is set.
func (t *Table) WriteList(w io.Writer, counters bool) error {
	bw := bufio.NewWriter(w)
	var line []byte
	for _, e := range t.List() {
		line = append(e.AppendLine(line[:0], counters), '\n')
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}
