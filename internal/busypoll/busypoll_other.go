//go:build !linux

package busypoll

// Off where there is no poll(2) set to look at: the loops that use it
// are Linux's.
func init() { limit.Store(0) }

type pollSet struct{}

func (*pollSet) poll(*[]int32, int32) int { return readyNone }

func yield() {}
