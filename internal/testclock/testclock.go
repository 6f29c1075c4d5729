// Package testclock is the clock tests advance by hand: it satisfies the
// Clock interfaces of bridge, conntrack and nat, so timeouts are tested by
// moving time, never by sleeping.
package testclock

import (
	"sync"
	"time"
)

// Manual is a clock that moves only when told to. Its zero value reads the
// zero time; New starts it at a fixed date. It is safe for concurrent use.
type Manual struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Manual clock set to 2026-11-26 12:00 UTC.
func New() *Manual {
	return &Manual{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Manual) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Manual) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
