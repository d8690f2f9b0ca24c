package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramQuantilesMatchSortedReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, gen := range []struct {
		name string
		draw func() time.Duration
	}{
		{"small exact values", func() time.Duration { return time.Duration(r.IntN(200)) }},
		{"uniform µs to ms", func() time.Duration { return time.Duration(r.Int64N(int64(50 * time.Millisecond))) }},
		{"log-normal latencies", func() time.Duration {
			return time.Duration(math.Exp(r.NormFloat64()*1.5 + math.Log(float64(500*time.Microsecond))))
		}},
	} {
		t.Run(gen.name, func(t *testing.T) {
			h, ref := NewHistogram(), make([]time.Duration, 0, 50_000)
			for range cap(ref) {
				d := gen.draw()
				h.Record(d)
				ref = append(ref, d)
			}
			slices.Sort(ref)
			require.EqualValues(t, len(ref), h.Count())
			require.Equal(t, ref[0], h.Min())
			require.Equal(t, ref[len(ref)-1], h.Max())
			for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 1} {
				want := ref[max(int(math.Ceil(q*float64(len(ref))))-1, 0)]
				got := h.Quantile(q)
				// The bucket's highest value: never below, at most 1/128 above.
				require.GreaterOrEqual(t, got, want, "q=%v", q)
				require.LessOrEqual(t, float64(got-want), float64(want)/subBuckets+1, "q=%v: got %v want %v", q, got, want)
			}
		})
	}
}

func TestHistogramMergeAndEdges(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	require.Zero(t, a.Quantile(0.5))
	require.Zero(t, a.Min())
	require.Zero(t, a.Mean())
	a.Record(-time.Second)   // clamped to zero
	b.Record(10 * time.Hour) // clamped to the trackable maximum
	b.Record(3 * time.Millisecond)
	a.Merge(b)
	require.EqualValues(t, 3, a.Count())
	require.Zero(t, a.Min())
	require.Equal(t, time.Duration(maxTrackable), a.Max())
	require.InEpsilon(t, float64(3*time.Millisecond), float64(a.Quantile(0.5)), 1.0/subBuckets)
}

func TestBucketIndexIsMonotoneAndInvertible(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 127, 128, 255, 256, 257, 1000, 1 << 20, 1<<20 + 12345, 1 << 40, maxTrackable} {
		i := bucketIndex(v)
		require.GreaterOrEqual(t, i, prev, "v=%d", v)
		prev = i
		low, width := bucketRange(i)
		require.True(t, low <= v && v < low+width, "v=%d in bucket %d [%d, %d)", v, i, low, low+width)
	}
}

func TestWorkloadMixProportions(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 200_000
	for _, name := range WorkloadNames() {
		w, err := LookupWorkload(name)
		require.NoError(t, err)
		var counts [numOps]int
		for range n {
			counts[w.Next(r)]++
		}
		want := [numOps]float64{OpRead: w.Read, OpUpdate: w.Update, OpInsert: w.Insert, OpRMW: w.RMW}
		require.InDelta(t, 1, want[OpRead]+want[OpUpdate]+want[OpInsert]+want[OpRMW], 1e-9, name)
		for op, p := range want {
			require.InDelta(t, p, float64(counts[op])/n, 0.005, "workload %s, %s", name, Op(op))
		}
	}
	_, err := LookupWorkload("e")
	require.ErrorContains(t, err, "unknown workload")
	// A draw at the top of [0, 1) never falls outside the mix.
	a, _ := LookupWorkload("a")
	require.Equal(t, OpUpdate, a.Choose(math.Nextafter(1, 0)))
}

// topShare is the fraction of draws that hit the most popular 1% of keys.
func topShare(t *testing.T, keys KeyChooser, records uint64, draws int) float64 {
	t.Helper()
	r := rand.New(rand.NewPCG(5, 6))
	counts := make([]int, records)
	for range draws {
		k := keys.Next(r)
		require.Less(t, k, records)
		counts[k]++
	}
	slices.SortFunc(counts, func(a, b int) int { return b - a })
	top := 0
	for _, c := range counts[:records/100] {
		top += c
	}
	return float64(top) / float64(draws)
}

func TestScrambledZipfianIsSkewed(t *testing.T) {
	const records, draws = 10_000, 500_000
	// Under YCSB's scrambled zipfian the hottest 1% of 10k keys draw about
	// a fifth of the requests (zeta(100)/zeta(10^10) ≈ 0.19, plus the tail);
	// under uniform, about 1%.
	share := topShare(t, NewScrambledZipfian(records), records, draws)
	require.Greater(t, share, 0.15, "zipfian top-1%% share %.3f", share)
	require.Less(t, share, 0.30, "zipfian top-1%% share %.3f", share)
	uniform := topShare(t, Uniform{N: records}, records, draws)
	require.Less(t, uniform, 0.02, "uniform top-1%% share %.3f", uniform)
}

func TestZipfianMatchesItsDefinition(t *testing.T) {
	// P(0) = 1/zeta(n): with n = 1000 and theta 0.99, zeta ≈ 7.3.
	z := NewZipfian(1000, ZipfianConstant)
	r := rand.New(rand.NewPCG(7, 8))
	const draws = 400_000
	zeros := 0
	for range draws {
		if z.Next(r) == 0 {
			zeros++
		}
	}
	require.InDelta(t, 1/zeta(0, 1000, ZipfianConstant, 0), float64(zeros)/draws, 0.005)
	// Growing the item count extends zeta to the same value as from scratch.
	grown := NewZipfian(10, ZipfianConstant)
	grown.NextN(r, 1000)
	require.InDelta(t, z.zetan, grown.zetan, 1e-9)
}

func TestLatestFavoursRecentInserts(t *testing.T) {
	count := uint64(1000)
	l := NewLatest(NewZipfian(count, ZipfianConstant), func() uint64 { return count })
	r := rand.New(rand.NewPCG(9, 10))
	recent := 0
	for range 100_000 {
		k := l.Next(r)
		require.Less(t, k, count)
		if k >= count-10 {
			recent++
		}
	}
	require.Greater(t, float64(recent)/100_000, 0.3, "the newest 1%% of records should draw a large share")
	count = 2000 // inserts move the hot spot
	require.Less(t, l.Next(r), count)
	hits := 0
	for range 10_000 {
		if l.Next(r) >= 1990 {
			hits++
		}
	}
	require.Greater(t, hits, 3000)
}

func TestKeyFormat(t *testing.T) {
	f := KeyFormat{Size: 16}
	require.Equal(t, "k000000000000042", f.Key(42))
	require.Len(t, f.Key(123456789012345), 16)
	require.NoError(t, f.Validate(1_000_000))
	require.Error(t, KeyFormat{Size: 4}.Validate(10_000))
	require.Error(t, KeyFormat{Size: 1}.Validate(1))
	_, err := ParseDistribution("latest")
	require.Error(t, err)
}
