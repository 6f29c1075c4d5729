//go:build race

package hostnet_test

// raceEnabled says the tests run with the race detector, which changes
// what the heap holds.
const raceEnabled = true
