// Package conntrack is a connection-tracking table in the manner of Linux's
// nf_conntrack: the memory of a NAT gateway. Every flow that crosses the
// gateway has one entry holding its original tuple (as its first packet
// saw it) and its reply tuple (as replies arrive, after any translation);
// a lookup by either finds the entry and says which direction the packet
// went.
//
// Packets are decoded with [Packet.Decode] into a Packet the caller owns
// and classified by [Table.Track], which creates, updates and times out
// entries:
//
//   - TCP follows the kernel's state machine (SYN_SENT, SYN_RECV,
//     ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE,
//     SYN_SENT2) with its window tracking: a segment invalid for the state
//     or outside the window is classified ClassInvalid and changes nothing;
//     a SYN on a TIME_WAIT or CLOSE entry replaces it (always: Linux
//     replaces one only after a FIN, or a RST sent by the SYN's side, and
//     otherwise ignores the SYN and resynchronises the old entry from its
//     SYN-ACK); a RST before any reply deletes the entry; a connection first seen mid-stream is picked
//     up in a liberal mode, ESTABLISHED with the unacknowledged timeout
//     (5 min) until the other side answers, and the established one after.
//   - UDP entries are unreplied until a reply is seen, and assured (with
//     the longer stream timeout) once a replied flow is still active 2 s
//     after it began.
//   - ICMP and ICMPv6 queries pair requests with replies by identifier.
//     ICMP errors are classified ClassRelated to the entry of the packet
//     they quote and create nothing.
//   - Other protocols are tracked by address pair.
//
// Each state has an idle timeout (the kernel's defaults, see [Timeouts]);
// time comes from an injectable [Clock]. An expired entry is never found;
// a reaper removes expired entries incrementally, a bounded number of index
// slots per run, and emits their Destroy events, which is where a gateway
// releases what a flow held.
//
// The table holds at most Config.Max entries. When it is full, a new flow
// evicts an entry near its own hash that is expired, not assured, or a
// closing TCP connection (the kernel's early drop); if there is none, the
// flow is refused with [ErrTableFull] and counted. Memory never grows past
// the cap, and shrinks back as entries go.
//
// A NAT chooses the reply tuple of a new flow through a [Translator]; it
// may test candidates with [Table.Taken], and the table refuses a reply
// tuple that another live entry uses ([ErrReplyInUse]).
//
// Entries can be listed in the conntrack -L format ([Entry.AppendLine],
// [Table.WriteList]), got, deleted and flushed; subscribers receive New,
// Update and Destroy events through a bounded queue that never blocks the
// packet path.
//
// A Table is safe for concurrent use. The lookup of an existing flow takes
// only a shard's read lock and does not allocate; entries live in
// pointer-free chunks, so a table of a million flows costs the garbage
// collector nothing to scan.
package conntrack
