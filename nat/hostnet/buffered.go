package hostnet

// The bytes of the containers' TCP connections the uplink holds, all
// splices together, within Config.MaxBuffered: segments kept out of
// order, and bytes a host socket has not taken yet. Each splice bounds its
// own to about a window of each; without a bound over all, a container
// with thousands of connections to peers that read slowly (or that leaves
// a hole at the start of each window) had the uplink hold half a
// megabyte and more per connection, gigabytes in all.

// holdUpTo takes room for up to n bytes a splice is about to keep, and
// returns how many it may keep: n, or what room is left, counting the
// rest in DropBuffered.
func (u *Uplink) holdUpTo(n int) int {
	if n <= 0 {
		return 0
	}
	over := u.held.Add(int64(n)) - int64(u.cfg.MaxBuffered)
	if over <= 0 {
		return n
	}
	back := min(over, int64(n))
	u.held.Add(-back)
	u.stats.DropBuffered.Add(1)
	return n - int(back)
}

// hold takes room for n bytes a splice is about to keep, all or nothing,
// and reports whether it may keep them (else counted in DropBuffered).
func (u *Uplink) hold(n int) bool {
	if n <= 0 {
		return true
	}
	if u.held.Add(int64(n)) > int64(u.cfg.MaxBuffered) {
		u.held.Add(-int64(n))
		u.stats.DropBuffered.Add(1)
		return false
	}
	return true
}

// holdIfRoom takes room for n bytes, all or nothing, if there is room,
// and reports whether it did: for bytes a splice may as well not keep
// (held), whose refusal is no drop.
func (u *Uplink) holdIfRoom(n int) bool {
	if u.held.Add(int64(n)) > int64(u.cfg.MaxBuffered) {
		u.held.Add(-int64(n))
		return false
	}
	return true
}

// unhold gives back room for n bytes a splice no longer keeps.
func (u *Uplink) unhold(n int) {
	if n > 0 {
		u.held.Add(-int64(n))
	}
}
