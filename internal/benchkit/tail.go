package benchkit

import (
	"strings"
	"sync"
)

// OutputTail is how many bytes of a process's output Tail keeps for
// error messages.
const OutputTail = 4 << 10

// Tail is an io.Writer that keeps the last OutputTail bytes written to it.
// The zero value is ready to use.
type Tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *Tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - OutputTail; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// Suffix is the output for an error message, its whitespace collapsed:
// empty, or "; output: ...".
func (t *Tail) Suffix() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.Join(strings.Fields(string(t.buf)), " ")
	if s == "" {
		return ""
	}
	return "; output: " + s
}
