//go:build !linux

package nat

import "github.com/usernat/usernat/bridge"

// isTAP reports whether p is a TAP device: there are none here.
func isTAP(bridge.Port) bool { return false }
