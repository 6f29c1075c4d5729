//go:build !linux

package busypoll

// Off where there is no epoll set to look at: the loops that use it are
// Linux's.
func init() { limit.Store(0) }

// Watch and Unwatch do nothing here.
func Watch(int)   {}
func Unwatch(int) {}

func watch(int) int32 { return 0 }

func forget(int32, int32) {}

func look(int32) int { return readyNone }

func standIn() bool { return false }

func yield() {}
