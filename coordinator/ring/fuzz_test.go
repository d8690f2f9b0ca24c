package ring

import (
	"strings"
	"testing"
)

// FuzzParseState: any text either names a state, whose String is the text
// trimmed and upper-cased, or is refused with an error and the zero State.
func FuzzParseState(f *testing.F) {
	for _, s := range []string{"JOINING", "normal", " Leaving\n", "REMOVED", "", "State(2)", "2", "NORMAL\x00", "noRMAL "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, err := ParseState(s)
		if err != nil {
			if st != 0 {
				t.Fatalf("ParseState(%q) failed (%v) but returned %v", s, err, st)
			}
			return
		}
		if st < Joining || st > Removed {
			t.Fatalf("ParseState(%q) = %d, not a state", s, int(st))
		}
		if want := strings.ToUpper(strings.TrimSpace(s)); st.String() != want {
			t.Fatalf("ParseState(%q) = %v, want the state named %q", s, st, want)
		}
		if again, err := ParseState(st.String()); err != nil || again != st {
			t.Fatalf("ParseState(%v.String()) = %v, %v", st, again, err)
		}
	})
}
