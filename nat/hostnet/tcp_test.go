package hostnet

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// The saved SYNs are bounded by maxSaved. Full, they are aged at most
// every synAgeEvery, not on every SYN of a flood (each aging looks at all
// of them); a connection's resent SYN still replaces its last; a SYN with
// no room is not kept; and once the old ones age out there is room again.
func TestSaveSynBounded(t *testing.T) {
	u := &Uplink{tcpSyn: map[synKey]savedSyn{}, cfg: Config{ConnectTimeout: time.Second}}
	id := func(i int) synKey {
		return synKey{RemotePort: uint16(i), LocalPort: uint16(i >> 16), RemoteAddress: tcpip.AddrFrom4([4]byte{10, 0, 0, 2})}
	}
	t0 := time.Unix(1000, 0)
	for i := range maxSaved {
		u.saveSynLocked(id(i), []byte{1}, t0)
	}
	for i := range 1000 {
		u.saveSynLocked(id(maxSaved+i), []byte{2}, t0.Add(time.Duration(i)*time.Microsecond))
	}
	if !u.synAged.Equal(t0) { // aging on every SYN would have it at the last
		t.Errorf("a flood of 1000 SYNs aged the full table last at %v, want only at its first, %v", u.synAged, t0)
	}
	if len(u.tcpSyn) != maxSaved {
		t.Errorf("%d SYNs kept, want the bound %d", len(u.tcpSyn), maxSaved)
	}
	if _, ok := u.tcpSyn[id(maxSaved)]; ok {
		t.Error("a SYN with no room was kept")
	}
	u.saveSynLocked(id(7), []byte{3}, t0.Add(time.Millisecond))
	if s := u.tcpSyn[id(7)]; len(s.b) != 1 || s.b[0] != 3 {
		t.Errorf("a resent SYN did not replace its last: %v", s.b)
	}
	// Past the connect timeout (and a second), the first ones go.
	later := t0.Add(u.cfg.ConnectTimeout + 2*time.Second)
	u.saveSynLocked(id(maxSaved+5000), []byte{4}, later)
	if _, ok := u.tcpSyn[id(maxSaved+5000)]; !ok || len(u.tcpSyn) != 1 {
		t.Errorf("after aging: %d SYNs kept, the new one kept %v; want it alone", len(u.tcpSyn), ok)
	}
}
