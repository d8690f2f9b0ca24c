package engine_test

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/dvv"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

func open(t testing.TB, dir string) *engine.Engine {
	t.Helper()
	e, err := engine.Open(dir, engine.Options{Sync: true, CacheBytes: 8 << 20, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	return e
}

func TestApplyGetRoundTrip(t *testing.T) {
	e := open(t, t.TempDir())
	require.Len(t, e.Incarnation(), 16)

	_, found, err := e.Get("t1", "k")
	require.NoError(t, err)
	require.False(t, found, "a key never written is not found")

	obj, err := e.Apply("t1", "k", nil, []byte("v1"), false, dvv.Siblings, 0, 1000, nil)
	require.NoError(t, err)
	require.Equal(t, []dvv.Sibling{{Value: []byte("v1"), Dot: dvv.Dot{Actor: e.Incarnation(), Counter: 1}, TimestampMs: 1000}}, obj.Siblings)
	require.Equal(t, dvv.VV{e.Incarnation(): 1}, obj.Clock)

	got, found, err := e.Get("t1", "k")
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, dvv.Equal(obj, got), "got %+v want %+v", got, obj)

	// A write with the read context supersedes what it saw.
	obj2, err := e.Apply("t1", "k", got.Clock, []byte("v2"), false, dvv.Siblings, 0, 2000, nil)
	require.NoError(t, err)
	require.Len(t, obj2.Siblings, 1)
	require.Equal(t, []byte("v2"), obj2.Siblings[0].Value)
	require.Equal(t, uint64(2), obj2.Siblings[0].Dot.Counter)

	// Other tenants and keys are untouched.
	_, found, err = e.Get("t2", "k")
	require.NoError(t, err)
	require.False(t, found)
}

func TestTombstoneIsFound(t *testing.T) {
	e := open(t, t.TempDir())
	obj, err := e.Apply("t", "k", nil, []byte("v"), false, dvv.Siblings, 0, 1, nil)
	require.NoError(t, err)
	_, err = e.Apply("t", "k", obj.Clock, nil, true, dvv.Siblings, 0, 2, nil)
	require.NoError(t, err)
	got, found, err := e.Get("t", "k")
	require.NoError(t, err)
	require.True(t, found, "a key holding only tombstones is still stored")
	require.Len(t, got.Siblings, 1)
	require.True(t, got.Siblings[0].Tombstone)
	require.Empty(t, got.Live())
}

func TestReopenKeepsDataAndIncarnation(t *testing.T) {
	dir := t.TempDir()
	e, err := engine.Open(dir, engine.Options{Sync: true, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	inc := e.Incarnation()
	obj, err := e.Apply("t", "k", nil, []byte("v"), false, dvv.Siblings, 0, 1, nil)
	require.NoError(t, err)
	require.NoError(t, e.Close())

	e2 := open(t, dir)
	require.Equal(t, inc, e2.Incarnation())
	got, found, err := e2.Get("t", "k")
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, dvv.Equal(obj, got))

	// The counter continues rather than restarting at 1 (it skips to the
	// next reserved block; see purge.go).
	obj2, err := e2.Apply("t", "k", nil, []byte("w"), false, dvv.Siblings, 0, 2, nil)
	require.NoError(t, err)
	require.Greater(t, obj2.Clock[inc], obj.Clock[inc])
}

func TestWipedDirGetsNewIncarnation(t *testing.T) {
	dir := t.TempDir()
	e, err := engine.Open(dir, engine.Options{Sync: true, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	first := e.Incarnation()
	require.NoError(t, e.Close())

	require.NoError(t, os.RemoveAll(dir))
	e2 := open(t, dir)
	require.NotEqual(t, first, e2.Incarnation())
	_, found, err := e2.Get("t", "k")
	require.NoError(t, err)
	require.False(t, found)
}

func TestSiblingCapRefusesWithoutWriting(t *testing.T) {
	e := open(t, t.TempDir())
	for i := range 3 {
		_, err := e.Apply("t", "k", nil, fmt.Appendf(nil, "v%d", i), false, dvv.Siblings, 3, int64(i), nil)
		require.NoError(t, err)
	}
	before, _, err := e.Get("t", "k")
	require.NoError(t, err)
	require.Len(t, before.Siblings, 3)

	_, err = e.Apply("t", "k", nil, []byte("one too many"), false, dvv.Siblings, 3, 9, nil)
	require.Error(t, err)
	require.Equal(t, pb.ErrorCode_TOO_MANY_SIBLINGS, status.CodeOf(err))
	require.Contains(t, err.Error(), "context")

	after, _, err := e.Get("t", "k")
	require.NoError(t, err)
	require.True(t, dvv.Equal(before, after), "a refused write must not be stored")

	// Writing with the read context resolves the siblings and is accepted.
	resolved, err := e.Apply("t", "k", after.Clock, []byte("resolved"), false, dvv.Siblings, 3, 10, nil)
	require.NoError(t, err)
	require.Len(t, resolved.Siblings, 1)
}

func TestConcurrentAppliesKeepEverySibling(t *testing.T) {
	e := open(t, t.TempDir())
	const writers = 32
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := e.Apply("t", "hot", nil, fmt.Appendf(nil, "w%d", i), false, dvv.Siblings, 0, int64(i), nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	got, found, err := e.Get("t", "hot")
	require.NoError(t, err)
	require.True(t, found)
	require.Len(t, got.Siblings, writers, "a write without context must never drop a concurrent one")
	dots := map[dvv.Dot]bool{}
	values := map[string]bool{}
	for _, s := range got.Siblings {
		dots[s.Dot] = true
		values[string(s.Value)] = true
	}
	require.Len(t, dots, writers, "every write gets its own dot")
	require.Len(t, values, writers)
	require.Equal(t, dvv.VV{e.Incarnation(): writers}, got.Clock)
}

func TestLastWriteWinsKeepsOne(t *testing.T) {
	e := open(t, t.TempDir())
	prev, err := e.Apply("t", "k", nil, []byte("first"), false, dvv.LastWriteWins, 1, 200, nil)
	require.NoError(t, err)
	// A second write without context, stamped earlier (clock skew). Which
	// value wins is dvv's rule; the engine must store exactly what dvv.Update
	// mints, and the sibling cap counts what is kept, which under LWW is one.
	obj, err := e.Apply("t", "k", nil, []byte("second"), false, dvv.LastWriteWins, 1, 100, nil)
	require.NoError(t, err)
	require.Len(t, obj.Siblings, 1)
	want := dvv.Update(prev, nil, e.Incarnation(), []byte("second"), false, 100, dvv.LastWriteWins)
	require.True(t, dvv.Equal(want, obj), "got %+v want %+v", obj, want)
	got, _, err := e.Get("t", "k")
	require.NoError(t, err)
	require.True(t, dvv.Equal(obj, got))
}

func TestMergeIsIdempotentAndConverges(t *testing.T) {
	a := open(t, t.TempDir())
	b := open(t, t.TempDir())

	objA, err := a.Apply("t", "k", nil, []byte("from a"), false, dvv.Siblings, 0, 1, nil)
	require.NoError(t, err)
	objB, err := b.Apply("t", "k", nil, []byte("from b"), false, dvv.Siblings, 0, 2, nil)
	require.NoError(t, err)

	m1, changed, err := b.Merge("t", "k", objA, dvv.Siblings)
	require.NoError(t, err)
	require.True(t, changed)
	require.Len(t, m1.Siblings, 2, "concurrent versions from two actors are both kept")

	m2, changed, err := b.Merge("t", "k", objA, dvv.Siblings)
	require.NoError(t, err)
	require.False(t, changed, "replaying a merge changes nothing")
	require.True(t, dvv.Equal(m1, m2))

	_, changed, err = a.Merge("t", "k", objB, dvv.Siblings)
	require.NoError(t, err)
	require.True(t, changed)
	gotA, _, err := a.Get("t", "k")
	require.NoError(t, err)
	gotB, _, err := b.Get("t", "k")
	require.NoError(t, err)
	require.True(t, dvv.Equal(gotA, gotB), "both replicas converge: %+v vs %+v", gotA, gotB)

	// Merging into an empty key stores the object as is.
	c := open(t, t.TempDir())
	m3, changed, err := c.Merge("t", "k", gotA, dvv.Siblings)
	require.NoError(t, err)
	require.True(t, changed)
	require.True(t, dvv.Equal(gotA, m3))

	// An empty object (a clock alone would be no better) is refused, and
	// nothing is stored.
	_, changed, err = c.Merge("t", "other", dvv.Object{}, dvv.Siblings)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	require.False(t, changed)
	_, found, err := c.Get("t", "other")
	require.NoError(t, err)
	require.False(t, found)
}

func TestMergeRefusesMalformedObject(t *testing.T) {
	e := open(t, t.TempDir())
	bad := dvv.Object{
		Siblings: []dvv.Sibling{{Value: []byte("x"), Dot: dvv.Dot{Actor: "n1", Counter: 5}}},
		Clock:    dvv.VV{"n1": 4},
	}
	_, _, err := e.Merge("t", "k", bad, dvv.Siblings)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))

	noActor := dvv.Object{Siblings: []dvv.Sibling{{Value: []byte("x")}}}
	_, _, err = e.Merge("t", "k", noActor, dvv.Siblings)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))

	_, found, err := e.Get("t", "k")
	require.NoError(t, err)
	require.False(t, found)
}

func TestInvalidTenantOrKey(t *testing.T) {
	e := open(t, t.TempDir())
	for _, tc := range []struct{ tenant, key string }{
		{"", "k"}, {"a\x00b", "k"}, {"a.b", "k"}, {"t", ""}, {"t", string(make([]byte, 1025))},
	} {
		_, err := e.Apply(tc.tenant, tc.key, nil, []byte("v"), false, dvv.Siblings, 0, 1, nil)
		require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err), "tenant %q key len %d", tc.tenant, len(tc.key))
		_, _, err = e.Get(tc.tenant, tc.key)
		require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	}
}

func TestClosedEngine(t *testing.T) {
	e, err := engine.Open(t.TempDir(), engine.Options{Sync: true, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	require.NoError(t, e.Close())
	require.NoError(t, e.Close(), "Close is idempotent")

	_, err = e.Apply("t", "k", nil, []byte("v"), false, dvv.Siblings, 0, 1, nil)
	require.ErrorIs(t, err, engine.ErrClosed)
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(err))
	_, _, err = e.Get("t", "k")
	require.ErrorIs(t, err, engine.ErrClosed)
	one := dvv.Object{Siblings: []dvv.Sibling{{Value: []byte("v"), Dot: dvv.Dot{Actor: "peer", Counter: 1}}}, Clock: dvv.VV{"peer": 1}}
	_, _, err = e.Merge("t", "k", one, dvv.Siblings)
	require.ErrorIs(t, err, engine.ErrClosed)
	_, err = e.Stats()
	require.ErrorIs(t, err, engine.ErrClosed)
}

func TestStatsReportsDiskUsage(t *testing.T) {
	e := open(t, t.TempDir())
	_, err := e.Apply("t", "k", nil, make([]byte, 4096), false, dvv.Siblings, 0, 1, nil)
	require.NoError(t, err)
	st, err := e.Stats()
	require.NoError(t, err)
	require.Positive(t, st.DiskBytes, "the WAL alone holds the write")
}

// TestApplyWithOriginIsAppliedOnce: a retried request with the same origin
// returns what the first attempt stored instead of minting a second value.
func TestApplyWithOriginIsAppliedOnce(t *testing.T) {
	e := open(t, t.TempDir())
	first, err := e.Apply("t", "k", nil, []byte("v"), false, dvv.Siblings, 0, 1, []byte("req-1"))
	require.NoError(t, err)
	again, err := e.Apply("t", "k", nil, []byte("v"), false, dvv.Siblings, 0, 2, []byte("req-1"))
	require.NoError(t, err)
	require.True(t, dvv.Equal(first, again))
	require.Len(t, again.Siblings, 1)
	require.True(t, again.HasOrigin([]byte("req-1")))
	other, err := e.Apply("t", "k", nil, []byte("v"), false, dvv.Siblings, 0, 3, []byte("req-2"))
	require.NoError(t, err)
	require.Len(t, other.Siblings, 2, "another request is another write")
}
