package heal

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/ring"
)

// replicatedArcs against the naive rule: a hash is in one of id's arcs
// exactly when id is among the first rf nodes of its preference list, and
// the arc's peers are the other ones.
func TestReplicatedArcsAreTheHashesIDReplicates(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	r := ring.New(1, 8, []string{"a", "b", "c", "d"})
	for rf := 1; rf <= 4; rf++ {
		work := replicatedArcs(r, rf, "a")
		for range 2000 {
			h := rng.Uint64()
			pref := r.Preference(h, rf)
			i := slices.IndexFunc(work, func(w arcWork) bool { return w.arc.Contains(h) })
			if !slices.Contains(pref, "a") {
				require.Equal(t, -1, i, "hash %d at rf %d is not a's", h, rf)
				continue
			}
			require.NotEqual(t, -1, i, "hash %d at rf %d is a's", h, rf)
			want := slices.DeleteFunc(slices.Clone(pref), func(p string) bool { return p == "a" })
			require.ElementsMatch(t, want, work[i].peers)
		}
	}
}
