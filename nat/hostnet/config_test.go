package hostnet

import (
	"net/netip"
	"strings"
	"testing"
)

// A negative bound in Config is refused, naming the field, as
// MaxFlowsPerSource always was: none of them silently means the default.
func TestNewRefusesNegativeBounds(t *testing.T) {
	gw := netip.MustParseAddr("10.0.2.2")
	for name, cfg := range map[string]Config{
		"ConnectTimeout":    {Gateway: gw, ConnectTimeout: -1},
		"MaxFlowsPerSource": {Gateway: gw, MaxFlowsPerSource: -1},
		"QueueLen":          {Gateway: gw, QueueLen: -1},
		"QueueBytes":        {Gateway: gw, QueueBytes: -1},
		"MaxBuffered":       {Gateway: gw, MaxBuffered: -1},
	} {
		u, err := New(cfg)
		if err == nil {
			u.Close()
			t.Errorf("negative %s accepted", name)
		} else if !strings.Contains(err.Error(), name) {
			t.Errorf("negative %s: error %q does not name it", name, err)
		}
	}
}
