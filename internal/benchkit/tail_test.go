package benchkit

import (
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"nothing", nil, ""},
		{"whitespace only", []string{" \n\t"}, ""},
		{"collapsed", []string{"a  b\n", "\tc\n"}, "; output: a b c"},
		{"last bytes kept", []string{strings.Repeat("x", OutputTail), "tail end"},
			"; output: " + strings.Repeat("x", OutputTail-len("tail end")) + "tail end"},
		{"one write longer than the cap", []string{"head " + strings.Repeat("y", OutputTail)},
			"; output: " + strings.Repeat("y", OutputTail)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tl Tail
			for _, w := range tc.writes {
				n, err := tl.Write([]byte(w))
				if n != len(w) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", len(w), n, err)
				}
			}
			if got := tl.Suffix(); got != tc.want {
				t.Errorf("Suffix() = %q (%d bytes), want %q (%d bytes)", got, len(got), tc.want, len(tc.want))
			}
		})
	}
}
