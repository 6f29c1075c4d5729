package bridge

import (
	"errors"
	"fmt"
)

// MAC is an Ethernet (EUI-48) address. It is a comparable value, so it can
// be a map key and compared with ==. The zero MAC (00:00:00:00:00:00) is not
// a valid station address: the bridge never learns it.
type MAC [6]byte

// Broadcast is the Ethernet broadcast address, ff:ff:ff:ff:ff:ff.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

var errBadMAC = errors.New("bridge: invalid MAC address")

// ParseMAC parses an address written as six colon- or hyphen-separated
// pairs of hex digits, such as "02:42:ac:11:00:04".
func ParseMAC(s string) (MAC, error) {
	var m MAC
	if len(s) != 17 {
		return MAC{}, fmt.Errorf("%w: %q", errBadMAC, s)
	}
	for i := range 6 {
		hi, ok1 := unhex(s[3*i])
		lo, ok2 := unhex(s[3*i+1])
		if !ok1 || !ok2 {
			return MAC{}, fmt.Errorf("%w: %q", errBadMAC, s)
		}
		if i < 5 && s[3*i+2] != ':' && s[3*i+2] != '-' {
			return MAC{}, fmt.Errorf("%w: %q", errBadMAC, s)
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

// MustParseMAC is like ParseMAC but panics on error. It is meant for tests
// and for package-level variables.
func MustParseMAC(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// MACFrom returns the address held in the first six bytes of b, and false
// when b is shorter than six bytes.
func MACFrom(b []byte) (MAC, bool) {
	if len(b) < 6 {
		return MAC{}, false
	}
	return MAC(b[:6]), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String returns the address in the lower-case colon form that `ip link`
// and `bridge fdb` print.
func (m MAC) String() string {
	const hexdigits = "0123456789abcdef"
	var b [17]byte
	for i, v := range m {
		b[3*i] = hexdigits[v>>4]
		b[3*i+1] = hexdigits[v&0xf]
		if i < 5 {
			b[3*i+2] = ':'
		}
	}
	return string(b[:])
}

// IsMulticast reports whether m is a group address (broadcast included):
// frames to such an address are flooded.
func (m MAC) IsMulticast() bool { return m[0]&1 == 1 }

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == Broadcast }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// isStation reports whether m may appear as a frame's source and be
// learned: neither a group address nor zero, as Linux's is_valid_ether_addr.
func (m MAC) isStation() bool { return !m.IsMulticast() && !m.IsZero() }

// linkLocal reports whether m is one of IEEE 802.1D's reserved group
// addresses a bridge does not forward: 01:80:C2:00:00:01 to 0F (pause,
// LACP, 802.1X, LLDP, ...); not 00, STP's, which a bridge without STP
// forwards.
func (m MAC) linkLocal() bool {
	return m[0] == 0x01 && m[1] == 0x80 && m[2] == 0xc2 && m[3] == 0 && m[4] == 0 && m[5] != 0 && m[5] <= 0x0f
}
