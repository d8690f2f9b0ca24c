package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// whole is the whole ring as one arc.
var whole = ring.Arc{Start: 7, End: 7}

func openT(t *testing.T, dir string) *Engine {
	t.Helper()
	e, err := Open(dir, Options{Sync: true, CacheBytes: 1 << 20, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

func write(t *testing.T, e *Engine, key string, ctx dvv.VV, value string, tombstone bool, ts int64) dvv.Object {
	t.Helper()
	var v []byte
	if !tombstone {
		v = []byte(value)
	}
	o, err := e.Apply("t", key, ctx, v, tombstone, dvv.Siblings, 0, ts, nil)
	require.NoError(t, err)
	return o
}

func TestPurgeRespectsGraceAndAllTombstones(t *testing.T) {
	e := openT(t, t.TempDir())
	write(t, e, "live", nil, "v", false, 100)
	old := write(t, e, "old", nil, "v", false, 100)
	write(t, e, "old", old.Clock, "", true, 1000)
	newer := write(t, e, "newer", nil, "v", false, 100)
	write(t, e, "newer", newer.Clock, "", true, 5000)
	// A tombstone concurrent with a value: the value is still live.
	write(t, e, "mixed", nil, "v", false, 100)
	write(t, e, "mixed", nil, "", true, 1000)
	require.EqualValues(t, 4, e.Keys())

	n, err := e.PurgeTombstones("t", whole, 0)
	require.NoError(t, err)
	require.Zero(t, n, "a zero cutoff purges nothing")

	n, err = e.PurgeTombstones("t", whole, 1000)
	require.NoError(t, err)
	require.Zero(t, n, "a tombstone stamped at the cutoff is not older than the grace")

	n, err = e.PurgeTombstones("t", whole, 2000)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	_, found, err := e.Get("t", "old")
	require.NoError(t, err)
	require.False(t, found, "the old tombstone is collected")
	for _, k := range []string{"live", "newer", "mixed"} {
		_, found, err := e.Get("t", k)
		require.NoError(t, err)
		require.True(t, found, "%s is kept", k)
	}

	n, err = e.PurgeTombstones("t", whole, 6000)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the newer tombstone once it is old enough; never a key with a live sibling")
	require.EqualValues(t, 2, e.Keys())
}

func TestPurgeOnlyWithinTheArc(t *testing.T) {
	e := openT(t, t.TempDir())
	for i := range 50 {
		k := fmt.Sprintf("k%d", i)
		o := write(t, e, k, nil, "v", false, 1)
		write(t, e, k, o.Clock, "", true, 2)
	}
	arc := ring.Arc{Start: 0, End: 1 << 63}
	n, err := e.PurgeTombstones("t", arc, 10)
	require.NoError(t, err)
	for i := range 50 {
		k := fmt.Sprintf("k%d", i)
		_, found, err := e.Get("t", k)
		require.NoError(t, err)
		h := keyspace.Hash("t", k)
		require.Equal(t, !arc.Contains(h), found, "key %s (hash %d)", k, h)
	}
	require.Positive(t, n)
	require.EqualValues(t, 50-n, e.Keys())
}

func TestApplyCountersMonotonicAcrossKeysAndRestarts(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{Sync: true, CacheBytes: 1 << 20})
	require.NoError(t, err)
	inc := e.Incarnation()
	var last uint64
	for i := range 5 {
		o := write(t, e, fmt.Sprintf("k%d", i%2), nil, "v", false, 1)
		require.Greater(t, o.Clock[inc], last, "counters grow across keys")
		last = o.Clock[inc]
		require.Contains(t, o.Siblings, dvv.Sibling{Value: []byte("v"), Dot: dvv.Dot{Actor: inc, Counter: last}, TimestampMs: 1})
	}
	require.NoError(t, e.Close())

	e = openT(t, dir)
	o := write(t, e, "fresh", nil, "v", false, 1)
	require.Greater(t, o.Clock[inc], last, "and across restarts, on a key never written")
	last = o.Clock[inc]
	// A context ahead of everything this incarnation minted names dots
	// that do not exist yet: no replica issued it, so it is refused, and
	// the counter does not move. (A context at or below the counter, from
	// any key, is what node-wide counters make safe.)
	_, err = e.Apply("t", "ahead", dvv.VV{inc: last + 5000}, []byte("v"), false, dvv.Siblings, 0, 1, nil)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err), "err %v", err)
	o = write(t, e, "behind", dvv.VV{inc: last}, "v", false, 1)
	require.Equal(t, last+1, o.Clock[inc])
	// Counters near the top would wrap: refused wherever they appear.
	_, err = e.Apply("t", "huge", dvv.VV{"peer": 1<<64 - 1}, []byte("v"), false, dvv.Siblings, 0, 1, nil)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err), "err %v", err)
}

func TestCounterOfAStoreWrittenBeforeTheCounter(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{Sync: true, CacheBytes: 1 << 20})
	require.NoError(t, err)
	inc := e.Incarnation()
	o := write(t, e, "k", nil, "v", false, 1)
	o = write(t, e, "k", o.Clock, "w", false, 1)
	o = write(t, e, "k", nil, "x", false, 1)
	top := o.Clock[inc]
	// An older store has data but no reservation.
	require.NoError(t, e.db.Delete(metaDotCounter, nil))
	require.NoError(t, e.Close())

	e = openT(t, dir)
	o = write(t, e, "other", nil, "v", false, 1)
	require.Greater(t, o.Clock[inc], top, "the sequence starts above every stored counter of this incarnation")
}

// A key deleted, purged and written again without context must survive a
// merge with a replica that still holds the tombstone.
func TestPurgedKeyRewrittenSurvivesStaleTombstone(t *testing.T) {
	a := openT(t, t.TempDir())
	b := openT(t, t.TempDir())
	v1 := write(t, a, "k", nil, "v1", false, 100)
	tomb := write(t, a, "k", v1.Clock, "", true, 200)
	_, _, err := b.Merge("t", "k", tomb, dvv.Siblings)
	require.NoError(t, err)

	n, err := a.PurgeTombstones("t", whole, 1000)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	v2 := write(t, a, "k", nil, "v2", false, 2000)
	require.False(t, tomb.Clock.Covers(v2.Siblings[0].Dot), "the new dot is not part of the purged history")

	merged, _, err := b.Merge("t", "k", v2, dvv.Siblings)
	require.NoError(t, err)
	require.Len(t, merged.Live(), 1, "the replica that still held the tombstone keeps the new value")
	require.Equal(t, "v2", string(merged.Live()[0].Value))
}

func TestDigestIgnoresEligibleTombstones(t *testing.T) {
	a := openT(t, t.TempDir())
	b := openT(t, t.TempDir())
	// Both hold "same"; only a still holds the old tombstone of "gone".
	same := write(t, a, "same", nil, "v", false, 100)
	_, _, err := b.Merge("t", "same", same, dvv.Siblings)
	require.NoError(t, err)
	g := write(t, a, "gone", nil, "v", false, 100)
	write(t, a, "gone", g.Clock, "", true, 200)

	arcs := []ring.Arc{whole, {Start: 0, End: 1 << 63}, {Start: 1 << 63, End: 0}}
	da, err := a.DigestArcs("t", arcs, 1000)
	require.NoError(t, err)
	db, err := b.DigestArcs("t", arcs, 1000)
	require.NoError(t, err)
	require.Equal(t, db, da, "a due tombstone counts as absent")
	require.EqualValues(t, 1, da[0].Keys)

	da, err = a.DigestArcs("t", arcs, 200)
	require.NoError(t, err)
	require.NotEqual(t, db[0], da[0], "a tombstone not yet due is compared")
	require.EqualValues(t, 2, da[0].Keys)

	// Without a cutoff the digest is the transfer digest.
	sum, keys, err := a.Digest("t", whole)
	require.NoError(t, err)
	da, err = a.DigestArcs("t", []ring.Arc{whole}, 0)
	require.NoError(t, err)
	require.Equal(t, ArcDigest{Digest: sum, Keys: keys}, da[0])
}
