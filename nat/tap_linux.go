package nat

import "github.com/usernat/usernat/bridge"

// isTAP reports whether p is a TAP device, whose writes never wait: the
// kernel takes a frame or drops it.
func isTAP(p bridge.Port) bool {
	_, ok := p.(*bridge.TAP)
	return ok
}
