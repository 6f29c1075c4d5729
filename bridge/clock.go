package bridge

import "time"

// Clock tells the time. The bridge reads it to age FDB entries and to
// stamp captured frames; tests pass a clock they advance by hand instead of
// sleeping.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
