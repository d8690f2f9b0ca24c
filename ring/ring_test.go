package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func normal(ids ...string) []string { return ids }

func names(format string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf(format, i)
	}
	return ids
}

// TestPointPositionsAreStable pins the point encoding. Positions decide
// which node holds which data, so a change here silently strands data on
// disk; this test must only ever change together with a migration.
func TestPointPositionsAreStable(t *testing.T) {
	// uvarint(6) "node-1" uvarint(0), and uvarint(150) = 0x96 0x01.
	require.Equal(t, xxhash.Sum64([]byte("\x06node-1\x00")), pointPos("node-1", 0))
	require.Equal(t, xxhash.Sum64([]byte("\x06node-1\x96\x01")), pointPos("node-1", 150))
	require.Equal(t, uint64(0x45b7f0a9307b20d6), pointPos("node-1", 0))
	require.Equal(t, uint64(0xe0e20416698bd0c7), pointPos("node-1", 150))
	// Without the length prefix these two would hash the same bytes.
	require.NotEqual(t, pointPos("node-1", 1), pointPos("node-", 0x31))

	r := New(7, 0, normal("node-1", "node-2", "node-3", "node-4"))
	require.Equal(t, []string{"node-1", "node-2", "node-3"}, r.Preference(0, 3))
	require.Equal(t, []string{"node-1", "node-3", "node-4"}, r.Preference(1<<63, 3))
	require.Equal(t, []string{"node-3", "node-4", "node-2"}, r.Preference(0xdeadbeefcafef00d, 3))
}

// naiveRing is the reference: every point of every owning member, sorted
// by (position, id), scanned linearly from the start for each lookup.
type naiveRing []struct {
	pos uint64
	id  string
}

func newNaive(owners []string, vnodes int, pos func(string, int) uint64) naiveRing {
	set := map[string]bool{}
	for _, id := range owners {
		set[id] = true // duplicates count once
	}
	var pts naiveRing
	for id := range set {
		for v := 0; v < vnodes; v++ {
			pts = append(pts, struct {
				pos uint64
				id  string
			}{pos(id, v), id})
		}
	}
	sort.Slice(pts, func(i, j int) bool {
		if pts[i].pos != pts[j].pos {
			return pts[i].pos < pts[j].pos
		}
		return pts[i].id < pts[j].id
	})
	return pts
}

func (pts naiveRing) preference(hash uint64, n int) []string {
	start := 0 // no point at or after hash: wrap to the lowest
	for i, p := range pts {
		if p.pos >= hash {
			start = i
			break
		}
	}
	var out []string
	for k := 0; k < len(pts) && len(out) < n; k++ {
		id := pts[(start+k)%len(pts)].id
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// TestPreferenceMatchesNaive compares Preference with the linear reference
// over random owner sets (with duplicates), vnode counts and hashes. Half the rings
// use a coarse hash (64 positions) so that colliding points, ties across
// nodes and hashes equal to a point are common rather than theoretical.
func TestPreferenceMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	coarse := func(id string, v int) uint64 { return pointPos(id, v) % 64 << 58 }
	for iter := range 400 {
		pos := pointPos
		if iter%2 == 1 {
			pos = coarse
		}
		var members []string
		for range rng.IntN(10) {
			members = append(members, fmt.Sprintf("n%d", rng.IntN(12))) // duplicates on purpose
		}
		vnodes := 1 + rng.IntN(20)
		r := build(uint64(iter), vnodes, members, pos)
		naive := newNaive(members, vnodes, pos)

		hashes := []uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1}
		for range 50 {
			hashes = append(hashes, rng.Uint64())
		}
		for _, p := range r.points {
			hashes = append(hashes, p.pos, p.pos-1, p.pos+1)
		}
		for _, h := range hashes {
			n := rng.IntN(r.Size() + 3)
			want := naive.preference(h, n)
			got := r.Preference(h, n)
			require.Equal(t, want, got, "iter %d hash %#x n %d members %v", iter, h, n, members)
			require.Len(t, got, min(max(n, 0), r.Size()))
		}
	}
}

func TestPreferenceEdges(t *testing.T) {
	// Hand-placed points: a at 100 and 300, b at 200, c at 200 (tie with b).
	at := map[string][]uint64{"a": {100, 300}, "b": {200, 0}, "c": {200, 0}}
	pos := func(id string, v int) uint64 { return at[id][v] }
	r := build(1, 2, normal("c", "a", "b"), pos)
	// b and c both have a point at 0 and at 200; b sorts first at each.
	require.Equal(t, []string{"b", "c", "a"}, r.Preference(0, 3), "hash equal to a point belongs to it")
	require.Equal(t, []string{"a", "b", "c"}, r.Preference(1, 3))
	require.Equal(t, []string{"a", "b"}, r.Preference(100, 2))
	require.Equal(t, []string{"b", "c", "a"}, r.Preference(101, 3))
	require.Equal(t, []string{"b", "c", "a"}, r.Preference(200, 3), "ties break by node id")
	require.Equal(t, []string{"a", "b"}, r.Preference(201, 2))
	require.Equal(t, []string{"b", "c", "a"}, r.Preference(301, 5), "wraps past the highest point")
	require.Equal(t, []string{"b", "c", "a"}, r.Preference(math.MaxUint64, 3))
	require.Nil(t, r.Preference(5, 0))
	require.Nil(t, r.Preference(5, -1))

	// Every point of every node at one position: order is by id alone.
	same := build(1, 3, normal("z", "y", "x"), func(string, int) uint64 { return 42 })
	require.Len(t, same.points, 9, "colliding points are kept, not overwritten")
	require.Equal(t, []string{"x", "y", "z"}, same.Preference(7, 3))
	require.Equal(t, []string{"x", "y"}, same.Preference(43, 2))

	require.Nil(t, New(1, 0, nil).Preference(5, 3))
	require.Zero(t, New(1, 0, nil).Size())
}

func TestOwners(t *testing.T) {
	r := New(9, 0, []string{"d", "b", "a", "e", "e"})
	require.Equal(t, uint64(9), r.Epoch())
	require.Equal(t, []string{"a", "b", "d", "e"}, r.Owners(), "sorted, duplicates once")
	require.Equal(t, 4, r.Size())
	require.True(t, r.Owns("d"))
	require.False(t, r.Owns("c"))
	require.False(t, r.Owns(""))
	require.Len(t, r.points, 4*DefaultVirtualNodes, "vnodes <= 0 means the default")
	require.Len(t, New(1, 7, normal("a")).points, 7)

	owners := r.Owners()
	owners[0] = "zz"
	require.Equal(t, "a", r.Owners()[0], "Owners returns a copy")

	rng := rand.New(rand.NewPCG(2, 2))
	seen := map[string]int{}
	for range 2000 {
		for _, id := range r.Preference(rng.Uint64(), 5) {
			seen[id]++
		}
	}
	require.Equal(t, map[string]int{"a": 2000, "b": 2000, "d": 2000, "e": 2000}, seen)
}

// shares measures, exactly rather than by sampling, each node's share of
// the hash space as primary and as any of the first n replicas: every arc
// (previous point, point] is placed as the key hash at its upper end is, so
// summing arc lengths per node gives its fraction of all possible keys.
// Sampling 100k keys instead would add about 3% relative noise per node at
// 10 nodes, which is most of the margin being tested.
func shares(r *Ring, n int) (primary, replica map[string]float64) {
	primary, replica = map[string]float64{}, map[string]float64{}
	for i, p := range r.points {
		prev := r.points[(i+len(r.points)-1)%len(r.points)].pos
		arc := float64(p.pos-prev) / math.Exp2(64) // wraps correctly for i == 0
		for j, id := range r.Preference(p.pos, n) {
			if j == 0 {
				primary[id] += arc
			}
			replica[id] += arc / float64(n)
		}
	}
	return primary, replica
}

// TestLoadSpread checks how evenly 150 virtual nodes spread load.
//
// Pure hashing cannot promise ±10% per node for primary ownership: a node's
// share is a sum of 150 random arcs, with relative standard deviation
// sqrt((1-1/N)/150) ≈ 8%, and the worst of N nodes sits around 2σ. Measured
// over 4..12 nodes and three id schemes below, the worst node's primary
// share is off by 20.2%. Load with RF 3 is the replica assignment (each key
// lands on three nodes), which averages three arcs per key; its worst
// deviation measured 12.4% (worst case 11 nodes named "node-N"), and ±10%
// holds for most but not all of these rings. The bounds asserted are
// therefore ±15% for replica assignments and ±25% for primaries, plus a
// check that the overall deviation matches the random-hashing theory, which
// is what catches a broken hash or a lost vnode loop. Reaching ±10% for
// every node needs about 500 vnodes (measured worst primary 8.1%).
func TestLoadSpread(t *testing.T) {
	var sumSq float64
	var count int
	for _, scheme := range []string{"node-%d", "storage-%02d.pairdb.internal", "n%d"} {
		for nodes := 4; nodes <= 12; nodes++ {
			r := New(1, 0, normal(names(scheme, nodes)...))
			primary, replica := shares(r, 3)
			fair := 1 / float64(nodes)
			for _, id := range r.owners {
				dp := primary[id]/fair - 1
				require.InDelta(t, 0, dp, 0.25, "%s primary share, %d nodes", id, nodes)
				require.InDelta(t, 0, replica[id]/fair-1, 0.15, "%s replica share, %d nodes", id, nodes)
				sumSq += dp * dp / (1 - fair)
				count++
			}
		}
	}
	// Normalised RMS deviation vs 1/sqrt(V) (measured 0.099 vs 0.082).
	rms, theory := math.Sqrt(sumSq/float64(count)), 1/math.Sqrt(DefaultVirtualNodes)
	require.InDelta(t, theory, rms, 0.5*theory)
}

// TestSharesMatchSampling checks the exact measure above against real
// lookups of random key hashes, so the spread test measures what
// Preference does.
func TestSharesMatchSampling(t *testing.T) {
	r := New(1, 0, normal(names("node-%d", 8)...))
	primary, _ := shares(r, 3)
	rng := rand.New(rand.NewPCG(3, 3))
	const keys = 200_000
	counts := map[string]int{}
	for range keys {
		counts[r.Preference(rng.Uint64(), 1)[0]]++
	}
	for id, p := range primary {
		sigma := math.Sqrt(p * (1 - p) / keys)
		require.InDelta(t, p, float64(counts[id])/keys, 5*sigma, id)
	}
}

// TestAddingANodeMovesOnlyItsShare checks the point of consistent hashing:
// a new node takes about 1/(n+1) of the keys, only from others to itself,
// and every preference list changes only by the new node slotting in.
func TestAddingANodeMovesOnlyItsShare(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	const keys = 100_000
	hashes := make([]uint64, keys)
	for i := range hashes {
		hashes[i] = rng.Uint64()
	}
	for nodes := 3; nodes <= 10; nodes++ {
		ids := names("node-%d", nodes)
		before := New(1, 0, normal(ids...))
		after := New(2, 0, normal(append(ids, "node-new")...))
		moved := 0
		for _, h := range hashes {
			old, cur := before.Preference(h, 3), after.Preference(h, 3)
			if old[0] != cur[0] {
				moved++
				if cur[0] != "node-new" {
					require.Failf(t, "key moved between two old nodes", "%#x: %v → %v", h, old, cur)
				}
			}
			without := slices.DeleteFunc(slices.Clone(cur), func(id string) bool { return id == "node-new" })
			if !slices.Equal(old[:len(without)], without) {
				require.Failf(t, "old replicas must keep their order", "%#x: %v → %v", h, old, cur)
			}
		}
		fair := 1 / float64(nodes+1)
		require.InDelta(t, fair, float64(moved)/keys, 0.5*fair, "%d → %d nodes", nodes, nodes+1)
	}
}

func TestPreferenceAllocatesOnlyTheResult(t *testing.T) {
	r := New(1, 0, normal(names("node-%d", 10)...))
	h := uint64(0)
	allocs := testing.AllocsPerRun(1000, func() {
		h += 0x9e3779b97f4a7c15
		_ = r.Preference(h, 3)
	})
	require.Equal(t, 1.0, allocs)
}

func TestHolder(t *testing.T) {
	require.Nil(t, (&Holder{}).Load())
	r1, r2 := New(1, 0, normal("a")), New(2, 0, normal("a", "b"))
	h := NewHolder(r1)
	require.Same(t, r1, h.Load())
	h.Store(r2)
	require.Same(t, r2, h.Load())

	// Readers racing a writer see whole rings only: epoch and contents
	// always agree. Run with -race to check the swap is synchronised.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 2000 {
				r := h.Load()
				assert.Equal(t, int(r.Epoch()), r.Size()) // not require: off the test goroutine
			}
		})
	}
	for i := range 2000 {
		h.Store([]*Ring{r1, r2}[i%2])
	}
	wg.Wait()
}

func BenchmarkPreference(b *testing.B) {
	r := New(1, 0, normal(names("node-%d", 10)...))
	h := uint64(0)
	for b.Loop() {
		h += 0x9e3779b97f4a7c15
		_ = r.Preference(h, 3)
	}
}
