package heal

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/ring"
)

// Every hash of an arc lies in exactly one of its sub-arcs, and no hash
// outside it in any.
func TestSplitArcPartitionsTheArc(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	arcs := []ring.Arc{
		{Start: 5, End: 5}, {Start: 0, End: 0}, {Start: math.MaxUint64, End: math.MaxUint64},
		{Start: 0, End: math.MaxUint64}, {Start: math.MaxUint64 - 100, End: 100}, {Start: 10, End: 26},
	}
	for range 50 {
		arcs = append(arcs, ring.Arc{Start: rng.Uint64(), End: rng.Uint64()})
	}
	for _, a := range arcs {
		subs := splitArc(a, aeFanout)
		require.Len(t, subs, aeFanout, "%+v", a)
		require.Equal(t, a.Start, subs[0].Start)
		require.Equal(t, a.End, subs[len(subs)-1].End)
		probes := []uint64{a.Start, a.Start + 1, a.End, a.End + 1, a.End - 1, 0, math.MaxUint64}
		for _, s := range subs {
			probes = append(probes, s.Start, s.Start+1, s.End, s.End+1)
		}
		for range 200 {
			probes = append(probes, rng.Uint64(), a.Start+rng.Uint64N(64), a.End-rng.Uint64N(64))
		}
		for _, h := range probes {
			in := 0
			for _, s := range subs {
				require.NotEqual(t, s.Start, s.End, "a sub-arc is never the whole ring")
				if s.Contains(h) {
					in++
				}
			}
			want := 0
			if a.Contains(h) {
				want = 1
			}
			require.Equal(t, want, in, "hash %d in arc %+v", h, a)
		}
	}
	require.Nil(t, splitArc(ring.Arc{Start: 10, End: 20}, aeFanout), "ten hashes do not split sixteen ways")
}

func TestPacerSpacesWork(t *testing.T) {
	p := newPacer(1000)
	ctx := context.Background()
	start := time.Now()
	require.NoError(t, p.wait(ctx, 1000), "one second's worth goes at once")
	require.Less(t, time.Since(start), 500*time.Millisecond)
	require.NoError(t, p.wait(ctx, 100))
	require.GreaterOrEqual(t, time.Since(start), 90*time.Millisecond, "debt is slept off")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, p.wait(cctx, 1_000_000), context.Canceled, "waits end with the context")
}
