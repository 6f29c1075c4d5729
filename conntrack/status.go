package conntrack

import "strings"

// Status holds the status bits of an entry. The values are the kernel's
// (IPS_*), so they read the same in both worlds.
type Status uint32

const (
	// SeenReply is set once a packet went in the reply direction.
	SeenReply Status = 1 << 1
	// Assured marks a flow that proved itself (a completed TCP handshake, a
	// UDP flow still active 2 s after its reply); assured entries are
	// exempt from early drop.
	Assured Status = 1 << 2
	// SrcNAT is set by a Translator whose reply tuple changes the source.
	SrcNAT Status = 1 << 4
	// DstNAT is set by a Translator whose reply tuple changes the
	// destination.
	DstNAT Status = 1 << 5

	// natMask is what a Translator may set.
	natMask = SrcNAT | DstNAT
)

func (s Status) String() string {
	var b []string
	for _, f := range [...]struct {
		bit  Status
		name string
	}{{SeenReply, "SEEN_REPLY"}, {Assured, "ASSURED"}, {SrcNAT, "SRC_NAT"}, {DstNAT, "DST_NAT"}} {
		if s&f.bit != 0 {
			b = append(b, f.name)
		}
	}
	return strings.Join(b, "|")
}

// Class is what the tracker made of a packet, the kernel's ctinfo.
type Class uint8

const (
	// ClassInvalid: the packet belongs to no flow the table can track: it
	// is invalid for the state of its flow, an ICMP error quoting no known
	// flow, or a packet that cannot start a flow (an echo reply, a TCP
	// segment other than a SYN when pickup is off, ...). Nothing changed.
	ClassInvalid Class = iota
	// ClassNew: a packet in the original direction of a flow that has seen
	// no reply yet, including the packet that created the entry.
	ClassNew
	// ClassEstablished: a packet of a flow that has seen both directions.
	ClassEstablished
	// ClassRelated: an ICMP error about a tracked flow.
	ClassRelated
)

func (c Class) String() string {
	switch c {
	case ClassNew:
		return "NEW"
	case ClassEstablished:
		return "ESTABLISHED"
	case ClassRelated:
		return "RELATED"
	}
	return "INVALID"
}
