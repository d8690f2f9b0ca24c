package quorum

import (
	"testing"
	"testing/quick"

	"github.com/stretchr/testify/require"
)

func TestRequired(t *testing.T) {
	cases := []struct {
		l       Level
		n, want int
	}{
		{One, 3, 1}, {Quorum, 1, 1}, {Quorum, 2, 2}, {Quorum, 3, 2}, {Quorum, 4, 3}, {Quorum, 5, 3},
		{Quorum, 7, 4}, {All, 3, 3}, {All, 7, 7}, {Quorum, 0, 0},
	}
	for _, c := range cases {
		require.Equal(t, c.want, Required(c.l, c.n), "%s of %d", c.l, c.n)
	}
}

func TestParseLevel(t *testing.T) {
	for s, want := range map[string]Level{"one": One, "QUORUM": Quorum, " All ": All} {
		got, err := ParseLevel(s)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := ParseLevel("most")
	require.ErrorContains(t, err, "use one, quorum or all")
}

// TestQuorumsIntersect checks the property quorum reads rely on: any read
// quorum and any write quorum at QUORUM share a replica.
func TestQuorumsIntersect(t *testing.T) {
	for n := 1; n <= 7; n++ {
		require.Greater(t, 2*Required(Quorum, n), n)
		require.Greater(t, Required(One, n)+Required(All, n), n)
	}
}

// TestTallyAgainstNaive compares the tally with a recount from scratch.
func TestTallyAgainstNaive(t *testing.T) {
	f := func(need8, total8 uint8, replies []bool) bool {
		total := int(total8%7) + 1
		need := int(need8)%total + 1
		tl := NewTally(need, total)
		acks, fails := 0, 0
		for i, ok := range replies {
			if i >= total {
				break
			}
			var got Outcome
			if ok {
				acks++
				got = tl.Ack()
			} else {
				fails++
				got = tl.Fail()
			}
			want := Pending
			if acks >= need {
				want = Won
			} else if total-fails < need {
				want = Lost
			}
			if got != want {
				return false
			}
		}
		return true
	}
	require.NoError(t, quick.Check(f, nil))
}
