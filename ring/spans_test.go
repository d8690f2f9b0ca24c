package ring

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSpansCoverTheLineWithEveryHashsSet(t *testing.T) {
	for _, tc := range []struct{ nodes, n int }{{1, 1}, {3, 3}, {3, 2}, {5, 3}, {7, 1}} {
		var ids []string
		for i := range tc.nodes {
			ids = append(ids, string(rune('a'+i)))
		}
		r := New(1, 16, ids)
		spans := Spans(r, tc.n)
		require.NotEmpty(t, spans)
		require.Equal(t, uint64(0), spans[0].Lo)
		require.Equal(t, uint64(math.MaxUint64), spans[len(spans)-1].Hi)
		for i := 1; i < len(spans); i++ {
			require.Equal(t, spans[i-1].Hi+1, spans[i].Lo, "spans meet")
			require.NotEqual(t, spans[i-1].Replicas, spans[i].Replicas, "adjacent spans with one set are merged")
		}
		if tc.n >= tc.nodes {
			require.Len(t, spans, 1, "every hash has every node")
		}
		rng := rand.New(rand.NewPCG(uint64(tc.nodes), uint64(tc.n)))
		for range 2000 {
			h := rng.Uint64()
			s := spans[SpanOf(spans, h)]
			require.True(t, s.Lo <= h && h <= s.Hi)
			require.True(t, s.Arc().Contains(h))
			want := r.Preference(h, tc.n)
			slices.Sort(want)
			require.Equal(t, want, s.Replicas, "hash %d", h)
		}
		for _, s := range spans {
			for _, h := range []uint64{s.Lo, s.Hi} {
				want := r.Preference(h, tc.n)
				slices.Sort(want)
				require.Equal(t, want, s.Replicas, "the span's ends are its own")
			}
		}
	}
	require.Empty(t, Spans(New(1, 16, nil), 3))
}
