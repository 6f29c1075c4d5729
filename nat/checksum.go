package nat

import (
	"encoding/binary"
	"math/bits"
)

// Sum returns the Internet checksum sum (RFC 1071) of b added to initial:
// the ones' complement sum of b's big-endian 16-bit words, folded to 16
// bits and not complemented. An odd final byte is padded with a zero byte.
// Sums of consecutive pieces chain through initial as long as every piece
// but the last has an even length.
//
// A checksum field holds ^Sum of what it covers; a packet whose field is
// right sums, field included, to 0xffff.
func Sum(b []byte, initial uint16) uint16 {
	return fold(sum64(b, uint64(initial)))
}

// Checksum returns the Internet checksum of b: ^Sum(b, 0).
func Checksum(b []byte) uint16 { return ^Sum(b, 0) }

// sum64 adds b to acc in 64-bit big-endian words with end-around carry.
// Adding 64-bit words and folding later gives the same ones' complement sum
// as adding 16-bit words, four at a time.
func sum64(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, c)
	}
	acc, c = bits.Add64(acc, 0, c)
	return acc + c // cannot carry again: acc was at most 2^64-2 after a carry
}

// fold reduces a 64-bit ones' complement sum to 16 bits.
func fold(s uint64) uint16 {
	s = s>>32 + s&0xffffffff
	s = s>>32 + s&0xffffffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return uint16(s)
}

// UpdateChecksum16 returns checksum field cksum after a 16-bit word it
// covers changed from old to new, by RFC 1624 equation 3:
// HC' = ~(~HC + ~m + m').
//
// The update keeps the representation a checksum computed from scratch has
// (0x0000, never 0xffff, for a sum of zero), so updating a field from old to
// new and back restores it exactly, for any field other than 0xffff.
func UpdateChecksum16(cksum, old, new uint16) uint16 {
	var d delta
	d.add16(old, new)
	return d.apply(cksum)
}

// UpdateChecksum32 is UpdateChecksum16 for an aligned 32-bit field, such as
// an IPv4 address.
func UpdateChecksum32(cksum uint16, old, new uint32) uint16 {
	var d delta
	d.add32(old, new)
	return d.apply(cksum)
}

// UpdateChecksumAddr is UpdateChecksum16 for an aligned 16-byte field: an
// IPv6 address.
func UpdateChecksumAddr(cksum uint16, old, new [16]byte) uint16 {
	var d delta
	d.addBytes(old[:], new[:])
	return d.apply(cksum)
}

// delta accumulates the changes of words a checksum covers (~m + m' of
// each), so one checksum absorbs many changes with one fold.
type delta struct{ s uint64 }

// add16 adds the change of a word from old to new. An unchanged word adds
// nothing, so a checksum whose words did not change is left as it was.
func (d *delta) add16(old, new uint16) {
	if old != new {
		d.s += uint64(^old) + uint64(new)
	}
}

func (d *delta) add32(old, new uint32) {
	if old != new {
		d.s += uint64(^old) + uint64(new)
	}
}

// addBytes adds the change of an even-length field from old to new; both
// are the same length, which a caller guarantees.
func (d *delta) addBytes(old, new []byte) {
	for i := 0; i+4 <= len(old) && i+4 <= len(new); i += 4 {
		d.add32(binary.BigEndian.Uint32(old[i:]), binary.BigEndian.Uint32(new[i:]))
	}
	if n := len(old) &^ 3; n+2 <= len(old) && n+2 <= len(new) {
		d.add16(binary.BigEndian.Uint16(old[n:]), binary.BigEndian.Uint16(new[n:]))
	}
}

// merge adds the change of a checksum field covered by another checksum
// (a quoted header's checksum inside an ICMP error).
func (d *delta) merge(old, new uint16) { d.add16(old, new) }

// apply returns checksum field cksum updated by the changes in d.
func (d delta) apply(cksum uint16) uint16 {
	if d.s == 0 {
		return cksum
	}
	// The ones' complement sum of a 64-bit accumulator that never
	// overflows: each add is below 2^33 and a packet has few of them.
	return ^fold(uint64(^cksum) + d.s)
}

// putIPv4Checksum computes the IPv4 header checksum of pkt afresh.
func putIPv4Checksum(pkt []byte) {
	ihl := int(pkt[0]&0x0f) * 4
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:12], Checksum(pkt[:ihl]))
}
