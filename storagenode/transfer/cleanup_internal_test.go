package transfer

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/ring"
)

// lostArcs against the naive rule: a hash is in a lost arc exactly when
// id is not among the first rf nodes of its preference list.
func TestLostArcsAreTheHashesIDDoesNotReplicate(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := ring.New(1, 8, []string{"a", "b", "c", "d"})
	for rf := 1; rf <= 4; rf++ {
		lost := lostArcs(r, rf, "a")
		if rf == 4 {
			require.Empty(t, lost, "every node replicates every arc at rf = ring size")
		}
		for range 2000 {
			h := rng.Uint64()
			inLost := slices.ContainsFunc(lost, func(a ring.Arc) bool { return a.Contains(h) })
			replicates := slices.Contains(r.Preference(h, rf), "a")
			require.NotEqual(t, replicates, inLost, "hash %d at rf %d", h, rf)
		}
	}
}
