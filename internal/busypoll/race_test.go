//go:build race

package busypoll

// The race detector makes an os.File's RawConn.Control allocate: the
// allocation gates allow for it.
func init() { raceEnabled = true }
