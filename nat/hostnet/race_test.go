//go:build race

package hostnet

// The race detector makes sync.Pool drop what it is given at random, so
// the link's buffers allocate now and then: allocation gates allow for it.
func init() { raceEnabled = true }
