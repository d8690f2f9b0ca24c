package engine_test

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/ring"
	"github.com/pairdb/pairdb/storagenode/engine"
)

func openNoSync(t testing.TB) *engine.Engine {
	t.Helper()
	e, err := engine.Open(t.TempDir(), engine.Options{CacheBytes: 8 << 20, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

type hk struct {
	hash uint64
	key  string
}

// fill writes n keys of tenant through Apply and returns them in key order.
func fill(t testing.TB, e *engine.Engine, tenant string, n int) []hk {
	t.Helper()
	out := make([]hk, 0, n)
	for i := range n {
		k := fmt.Sprintf("key-%05d", i)
		_, err := e.Apply(tenant, k, nil, []byte("v"+k), false, dvv.Siblings, 0, 1, nil)
		require.NoError(t, err)
		out = append(out, hk{keyspace.Hash(tenant, k), k})
	}
	sortHK(out)
	return out
}

func sortHK(s []hk) {
	slices.SortFunc(s, func(a, b hk) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
}

func inArc(all []hk, a ring.Arc) []hk {
	var out []hk
	for _, x := range all {
		if a.Contains(x.hash) {
			out = append(out, x)
		}
	}
	return out
}

// scanAll pages through the arc limit keys at a time.
func scanAll(t *testing.T, e *engine.Engine, tenant string, a ring.Arc, limit int) []hk {
	t.Helper()
	var (
		out   []hk
		after *engine.Position
	)
	for pages := 0; ; pages++ {
		require.Less(t, pages, 100000, "scan does not terminate")
		items, done, err := e.Scan(tenant, a, after, limit, true)
		require.NoError(t, err)
		require.LessOrEqual(t, len(items), limit)
		for _, it := range items {
			require.True(t, a.Contains(it.Hash), "hash %d outside arc %+v", it.Hash, a)
			require.Equal(t, []byte("v"+it.Key), it.Object.Siblings[0].Value)
			out = append(out, hk{it.Hash, it.Key})
		}
		if done {
			return out
		}
		require.NotEmpty(t, items, "a page that is not done must make progress")
		last := items[len(items)-1]
		after = &engine.Position{Hash: last.Hash, Key: last.Key}
	}
}

func TestScanMatchesNaiveFilter(t *testing.T) {
	e := openNoSync(t)
	all := fill(t, e, "t", 600)
	// Neighbouring tenants (prefix and extension of "t") must never leak in.
	fill(t, e, "s", 50)
	fill(t, e, "tt", 50)

	rng := rand.New(rand.NewPCG(1, 2))
	arcs := []ring.Arc{
		{Start: 0, End: 0},                                       // whole ring
		{Start: 12345, End: 12345},                               // whole ring, elsewhere
		{Start: 0, End: math.MaxUint64},                          // everything but hash 0
		{Start: math.MaxUint64, End: 0},                          // only hash 0
		{Start: math.MaxUint64, End: math.MaxUint64 / 2},         // wrap at the very top
		{Start: math.MaxUint64 / 4 * 3, End: math.MaxUint64 / 4}, // wrap
		{Start: math.MaxUint64 / 4, End: math.MaxUint64 / 4 * 3},
		{Start: all[10].hash, End: all[20].hash}, // boundaries on stored hashes
		{Start: all[590].hash, End: all[5].hash}, // wrap with boundaries on stored hashes
	}
	for range 20 {
		arcs = append(arcs, ring.Arc{Start: rng.Uint64(), End: rng.Uint64()})
	}
	for _, a := range arcs {
		want := inArc(all, a)
		for _, limit := range []int{1, 7, 1000} {
			got := scanAll(t, e, "t", a, limit)
			require.Equal(t, want, got, "arc %+v limit %d", a, limit)
		}
	}

	// Without values only the clock comes back.
	items, _, err := e.Scan("t", ring.Arc{}, nil, 3, false)
	require.NoError(t, err)
	require.Len(t, items, 3)
	require.Nil(t, items[0].Object.Siblings)
	require.NotEmpty(t, items[0].Object.Clock)

	// A byte budget cuts the page short but always makes progress.
	items, done, err := e.ScanBudget("t", ring.Arc{}, nil, 100, 1, true)
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.False(t, done)

	_, _, err = e.Scan("bad.tenant", ring.Arc{}, nil, 1, true)
	require.Error(t, err)
	_, _, err = e.Scan("t", ring.Arc{}, nil, 0, true)
	require.Error(t, err)
}

func TestDigestComparesReplicas(t *testing.T) {
	a, b := openNoSync(t), openNoSync(t)
	all := fill(t, a, "t", 300)
	// b receives a's objects by merge, in pages, as a transfer would.
	var after *engine.Position
	for {
		items, done, err := a.Scan("t", ring.Arc{}, after, 64, true)
		require.NoError(t, err)
		batch := make([]engine.MergeItem, 0, len(items))
		for _, it := range items {
			batch = append(batch, engine.MergeItem{Key: it.Key, Object: it.Object})
		}
		changed, err := b.MergeBatch("t", batch, dvv.Siblings)
		require.NoError(t, err)
		require.Equal(t, len(items), changed)
		if done {
			break
		}
		last := items[len(items)-1]
		after = &engine.Position{Hash: last.Hash, Key: last.Key}
	}
	require.Equal(t, uint64(300), b.Keys())

	arc := ring.Arc{Start: all[100].hash, End: all[200].hash}
	da, na, err := a.Digest("t", arc)
	require.NoError(t, err)
	db, nb, err := b.Digest("t", arc)
	require.NoError(t, err)
	require.Equal(t, da, db)
	require.Equal(t, uint64(100), na)
	require.Equal(t, na, nb)

	// A write outside the arc leaves its digest alone; one inside changes it.
	_, err = b.Apply("t", all[50].key, nil, []byte("x"), false, dvv.Siblings, 0, 2, nil)
	require.NoError(t, err)
	db2, _, err := b.Digest("t", arc)
	require.NoError(t, err)
	require.Equal(t, da, db2)
	_, err = b.Apply("t", all[150].key, nil, []byte("x"), false, dvv.Siblings, 0, 2, nil)
	require.NoError(t, err)
	db3, nb3, err := b.Digest("t", arc)
	require.NoError(t, err)
	require.NotEqual(t, da, db3)
	require.Equal(t, nb, nb3)

	// Merging it back makes the replicas equal again.
	obj, _, err := b.Get("t", all[150].key)
	require.NoError(t, err)
	_, _, err = a.Merge("t", all[150].key, obj, dvv.Siblings)
	require.NoError(t, err)
	da4, _, err := a.Digest("t", arc)
	require.NoError(t, err)
	require.Equal(t, db3, da4)

	// An empty arc digests to the hash of nothing, equal everywhere.
	e1, n1, err := a.Digest("nobody", ring.Arc{})
	require.NoError(t, err)
	e2, _, err := b.Digest("nobody", ring.Arc{})
	require.NoError(t, err)
	require.Zero(t, n1)
	require.Equal(t, e1, e2)
}

func TestDeleteArcRemovesExactlyTheArc(t *testing.T) {
	for _, tc := range []struct {
		name string
		arc  func(all []hk) ring.Arc
	}{
		{"plain", func(all []hk) ring.Arc { return ring.Arc{Start: all[30].hash, End: all[170].hash} }},
		{"wrap", func(all []hk) ring.Arc { return ring.Arc{Start: all[170].hash, End: all[30].hash} }},
		{"whole", func([]hk) ring.Arc { return ring.Arc{Start: 7, End: 7} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openNoSync(t)
			all := fill(t, e, "t", 200)
			other := fill(t, e, "tt", 20)
			arc := tc.arc(all)
			want := inArc(all, arc)
			n, err := e.DeleteArc("t", arc)
			require.NoError(t, err)
			require.Equal(t, uint64(len(want)), n)
			require.Equal(t, uint64(len(all)-len(want)+len(other)), e.Keys())
			for _, x := range all {
				_, found, err := e.Get("t", x.key)
				require.NoError(t, err)
				require.Equal(t, !arc.Contains(x.hash), found, "key %s", x.key)
			}
			for _, x := range other {
				_, found, err := e.Get("tt", x.key)
				require.NoError(t, err)
				require.True(t, found)
			}
			n, err = e.DeleteArc("t", arc)
			require.NoError(t, err)
			require.Zero(t, n)
		})
	}
}

func TestTenantsKeysAndMeta(t *testing.T) {
	dir := t.TempDir()
	e, err := engine.Open(dir, engine.Options{CacheBytes: 8 << 20, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	ts, err := e.Tenants()
	require.NoError(t, err)
	require.Empty(t, ts)
	for _, tenant := range []string{"b", "a", "a-b", "ab"} {
		fill(t, e, tenant, 5)
	}
	ts, err = e.Tenants()
	require.NoError(t, err)
	require.Equal(t, []string{"a", "a-b", "ab", "b"}, ts)
	require.Equal(t, uint64(20), e.Keys())

	require.NoError(t, e.PutMeta("xfer/m1/a", []byte("one")))
	require.NoError(t, e.PutMeta("xfer/m1/b", []byte("two")))
	require.NoError(t, e.PutMeta("xfer/m2/a", []byte("three")))
	require.NoError(t, e.DeleteMetaPrefix("xfer/m1/"))
	_, found, err := e.GetMeta("xfer/m1/a")
	require.NoError(t, err)
	require.False(t, found)
	require.NoError(t, e.Close())

	// Reopened: the key count is recounted and metadata survived.
	e, err = engine.Open(dir, engine.Options{CacheBytes: 8 << 20, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Close()) }()
	require.Equal(t, uint64(20), e.Keys())
	v, found, err := e.GetMeta("xfer/m2/a")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, []byte("three"), v)
}

// Two replicas with equal clocks but different siblings (one merged a
// last-write-wins key as siblings, the other kept the winner) must not
// digest alike, or anti-entropy would never reconcile them.
func TestDigestCoversSiblings(t *testing.T) {
	a, b := openNoSync(t), openNoSync(t)
	clock := dvv.VV{"x": 1, "y": 1}
	winner := dvv.Sibling{Value: []byte("late"), Dot: dvv.Dot{Actor: "x", Counter: 1}, TimestampMs: 300}
	loser := dvv.Sibling{Value: []byte("early"), Dot: dvv.Dot{Actor: "y", Counter: 1}, TimestampMs: 100}
	_, _, err := a.Merge("t", "k", dvv.Object{Siblings: []dvv.Sibling{winner, loser}, Clock: clock}, dvv.Siblings)
	require.NoError(t, err)
	_, _, err = b.Merge("t", "k", dvv.Object{Siblings: []dvv.Sibling{winner}, Clock: clock}, dvv.LastWriteWins)
	require.NoError(t, err)
	da, _, err := a.Digest("t", ring.Arc{})
	require.NoError(t, err)
	db, _, err := b.Digest("t", ring.Arc{})
	require.NoError(t, err)
	require.NotEqual(t, da, db, "equal clocks, different siblings")
	dsa, err := a.DigestArcs("t", []ring.Arc{{}}, 0)
	require.NoError(t, err)
	require.Equal(t, da, dsa[0].Digest, "DigestArcs digests as Digest does")

	// Reconciled under the tenant's policy, they agree.
	obj, _, err := b.Get("t", "k")
	require.NoError(t, err)
	_, _, err = a.Merge("t", "k", obj, dvv.LastWriteWins)
	require.NoError(t, err)
	da, _, err = a.Digest("t", ring.Arc{})
	require.NoError(t, err)
	require.Equal(t, db, da)
}
