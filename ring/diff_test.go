package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func members(set map[string]bool) []string {
	var out []string
	for id := range set {
		out = append(out, id)
	}
	return out
}

func TestArcContains(t *testing.T) {
	require.True(t, Arc{10, 20}.Contains(20))
	require.False(t, Arc{10, 20}.Contains(10))
	require.True(t, Arc{20, 10}.Contains(25), "wraps")
	require.True(t, Arc{20, 10}.Contains(5))
	require.False(t, Arc{20, 10}.Contains(15))
	require.True(t, Arc{7, 7}.Contains(123), "start == end is the whole ring")
}

// TestDiffAgainstSampling checks Diff against the definition: for random
// hashes, the replica sets differ exactly when the hash lies in a returned
// arc, and then they are that arc's From and To.
func TestDiffAgainstSampling(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 30 {
		nodes := 3 + rng.IntN(4)
		before := map[string]bool{}
		for i := range nodes {
			before[fmt.Sprintf("n%d", i)] = true
		}
		after := map[string]bool{}
		for k, v := range before {
			after[k] = v
		}
		switch trial % 3 {
		case 0:
			after[fmt.Sprintf("n%d", nodes)] = true // add
		case 1:
			delete(after, "n0") // remove
		}
		n := 1 + rng.IntN(3)
		m := n
		if trial%3 == 2 {
			m = n%3 + 1 // replication factor change
		}
		from, to := New(1, 20, members(before)), New(2, 20, members(after))
		moves := Diff(from, n, to, m)
		for range 2000 {
			h := rng.Uint64()
			a, b := from.Preference(h, n), to.Preference(h, m)
			var hit []Move
			for _, mv := range moves {
				if mv.Arc.Contains(h) {
					hit = append(hit, mv)
				}
			}
			if slices.Equal(a, b) {
				require.Empty(t, hit, "trial %d: hash %d has equal sets but lies in a move", trial, h)
				continue
			}
			require.Len(t, hit, 1, "trial %d: hash %d must lie in exactly one move", trial, h)
			require.Equal(t, a, hit[0].From)
			require.Equal(t, b, hit[0].To)
		}
	}
}

func TestDiffAddNodeGainsEveryReplicaPosition(t *testing.T) {
	from := New(1, 50, members(map[string]bool{"a": true, "b": true, "c": true}))
	to := New(2, 50, members(map[string]bool{"a": true, "b": true, "c": true, "d": true}))
	moves := Diff(from, 3, to, 3)
	require.NotEmpty(t, moves)
	for _, mv := range moves {
		require.Equal(t, []string{"d"}, mv.Gainers(), "only the new node gains")
		require.Len(t, mv.Losers(), 1)
	}
	// With RF 3 of 4 nodes, d is a replica of about 3/4 of the ring, far more
	// than the quarter it owns as primary.
	var covered float64
	for _, mv := range moves {
		covered += float64(mv.Arc.End-mv.Arc.Start) / (1 << 64)
	}
	require.InDelta(t, 0.75, covered, 0.15)
}

func TestDiffIdentical(t *testing.T) {
	r := New(1, 10, members(map[string]bool{"a": true, "b": true}))
	require.Empty(t, Diff(r, 2, r, 2))
	require.Empty(t, Diff(New(1, 10, nil), 3, New(1, 10, nil), 3))
}

func TestMoveTargets(t *testing.T) {
	r := New(1, 50, members(map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true}))
	// A node swapped: only the gainer catches up.
	swap := Move{From: []string{"a", "b", "c"}, To: []string{"a", "d", "c"}}
	require.Equal(t, []string{"d"}, swap.Targets())
	// A higher factor: the gainers.
	up, down := Diff(r, 3, r, 5), Diff(r, 5, r, 3)
	require.NotEmpty(t, up)
	require.NotEmpty(t, down)
	for _, mv := range up {
		require.Equal(t, mv.Gainers(), mv.Targets())
		require.Len(t, mv.Targets(), 2)
	}
	// A lower factor gains nobody, yet every kept replica catches up.
	for _, mv := range down {
		require.Empty(t, mv.Gainers())
		require.Equal(t, mv.To, mv.Targets())
		require.Equal(t, mv.From[:3], mv.To, "the new set is a prefix of the old")
	}
}
