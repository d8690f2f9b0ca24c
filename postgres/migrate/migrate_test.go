package migrate

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/internal/pgtest"
)

// testTimeout bounds each test's database work, so a hung server fails the
// test instead of stalling the run.
const testTimeout = 30 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(ctxT(t), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func migrationRows(t *testing.T, pool *pgxpool.Pool) []int {
	t.Helper()
	rows, err := pool.Query(ctxT(t), `SELECT version FROM schema_migrations ORDER BY version`)
	require.NoError(t, err)
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return vs
}

func upTo(n int) []int {
	vs := make([]int, n)
	for i := range vs {
		vs[i] = i + 1
	}
	return vs
}

func TestLoadEmbedded(t *testing.T) {
	require.GreaterOrEqual(t, Latest(), 1)
	require.Equal(t, "0001_tenants", all[0].name)
	for i, m := range all {
		require.Equal(t, i+1, m.version)
		require.NotEmpty(t, m.sql)
	}
}

func TestLoadRejectsMalformedSets(t *testing.T) {
	file := &fstest.MapFile{Data: []byte("SELECT 1;")}
	cases := map[string]fstest.MapFS{
		"bad name":  {"sql/0001_tenants.sql": file, "sql/2_x.sql": file},
		"upper":     {"sql/0001_Tenants.sql": file},
		"gap":       {"sql/0001_a.sql": file, "sql/0003_c.sql": file},
		"duplicate": {"sql/0001_a.sql": file, "sql/0001_b.sql": file},
		"zero":      {"sql/0000_a.sql": file},
	}
	for name, fsys := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := load(fsys)
			require.Error(t, err)
		})
	}
	ms, err := load(fstest.MapFS{"sql/0002_b.sql": file, "sql/0001_a.sql": file})
	require.NoError(t, err)
	require.Equal(t, "0001_a", ms[0].name)
	require.Equal(t, "0002_b", ms[1].name)
}

func TestApplyFreshSchema(t *testing.T) {
	pool := newPool(t, pgtest.Schema(t))
	ctx := ctxT(t)

	cur, err := Status(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, 0, cur)

	applied, err := Apply(ctx, pool, zaptest.NewLogger(t))
	require.NoError(t, err)
	require.Equal(t, upTo(Latest()), applied)

	cur, err = Status(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, Latest(), cur)

	// The tables landed in the test's schema (unqualified names follow
	// search_path), not in public.
	var schema string
	require.NoError(t, pool.QueryRow(ctx,
		`SELECT table_schema FROM information_schema.tables WHERE table_name = 'tenants' AND table_schema = current_schema()`).
		Scan(&schema))
}

func TestApplyTwiceIsNoop(t *testing.T) {
	pool := newPool(t, pgtest.Schema(t))
	ctx := ctxT(t)
	log := zaptest.NewLogger(t)
	_, err := Apply(ctx, pool, log)
	require.NoError(t, err)
	applied, err := Apply(ctx, pool, log)
	require.NoError(t, err)
	require.Empty(t, applied)
	require.Equal(t, upTo(Latest()), migrationRows(t, pool))
}

// TestApplyConcurrent starts several coordinators at once, each with its own
// pool (as separate processes would), against one fresh schema.
func TestApplyConcurrent(t *testing.T) {
	url := pgtest.Schema(t)
	const n = 8
	pools := make([]*pgxpool.Pool, n)
	for i := range pools {
		pools[i] = newPool(t, url)
	}
	ctx := ctxT(t)
	results := make([][]int, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = Apply(ctx, pools[i], zaptest.NewLogger(t))
		})
	}
	close(start)
	wg.Wait()

	var union []int
	for i := range n {
		require.NoError(t, errs[i], "coordinator %d", i)
		union = append(union, results[i]...)
	}
	slices.Sort(union)
	require.Equal(t, upTo(Latest()), union, "every migration applied exactly once across all coordinators")
	require.Equal(t, upTo(Latest()), migrationRows(t, pools[0]))
}

func TestApplyRefusesNewerSchema(t *testing.T) {
	pool := newPool(t, pgtest.Schema(t))
	ctx := ctxT(t)
	_, err := Apply(ctx, pool, zaptest.NewLogger(t))
	require.NoError(t, err)
	future := Latest() + 1
	_, err = pool.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, 'from_the_future')`, future)
	require.NoError(t, err)

	applied, err := Apply(ctx, pool, zaptest.NewLogger(t))
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrSchemaTooNew), "error: %v", err)
	require.ErrorContains(t, err, "version "+strconv.Itoa(future))
	require.ErrorContains(t, err, "up to "+strconv.Itoa(Latest()))
	require.Empty(t, applied)
}

func TestApplyRefusesGappedHistory(t *testing.T) {
	pool := newPool(t, pgtest.Schema(t))
	ctx := ctxT(t)
	_, err := pool.Exec(ctx, `CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO schema_migrations (version, name) VALUES (2, 'orphan')`)
	require.NoError(t, err)
	_, err = Apply(ctx, pool, zaptest.NewLogger(t))
	require.ErrorContains(t, err, "gap")
	var exists bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('tenants') IS NOT NULL`).Scan(&exists))
	require.False(t, exists, "nothing may be applied on top of an inconsistent history")
}

// TestApplyLockWaitBoundedByContext holds the migration lock from another
// session: Apply must give up at its ctx deadline, apply nothing, and
// succeed once the lock is free.
func TestApplyLockWaitBoundedByContext(t *testing.T) {
	url := pgtest.Schema(t)
	pool := newPool(t, url)
	ctx := ctxT(t)
	holder, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = holder.Close(context.Background()) })
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, LockKey)
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	applied, err := Apply(short, pool, zaptest.NewLogger(t))
	require.ErrorContains(t, err, "migration lock")
	require.Empty(t, applied)
	cur, err := Status(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, cur)

	_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, LockKey)
	require.NoError(t, err)
	applied, err = Apply(ctx, pool, zaptest.NewLogger(t))
	require.NoError(t, err)
	require.Equal(t, upTo(Latest()), applied)
}

// TestFailedMigrationLeavesNoRecord checks the transaction boundary: a
// migration that fails part-way records nothing and leaves nothing behind.
func TestFailedMigrationLeavesNoRecord(t *testing.T) {
	pool := newPool(t, pgtest.Schema(t))
	ctx := ctxT(t)
	_, err := pool.Exec(ctx, `CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	err = applyOne(ctx, conn.Conn(), migration{version: 1, name: "0001_broken", sql: `CREATE TABLE half (x int); SELECT 1/0;`})
	require.ErrorContains(t, err, "0001_broken")
	var half bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('half') IS NOT NULL`).Scan(&half))
	require.False(t, half)
	require.Empty(t, migrationRows(t, pool))
}
