// Package migrate applies PairDB's PostgreSQL schema: versioned SQL files
// embedded in the binary (sql/NNNN_name.sql), applied in version order, each
// in its own transaction together with its row in schema_migrations.
//
// Why not a migration library: PairDB has a handful of SQL files and exactly
// one database kind. What matters is a few precise semantics, and they are
// easier to read here than to verify in someone else's configuration:
//
//   - Mutual exclusion across coordinators that start at once: a
//     session-level pg_advisory_lock on one dedicated connection, held for
//     the whole run, waited for under the caller's ctx. The connection is
//     taken out of the pool and closed afterwards, so the lock can never
//     leak into a pooled session even if the unlock itself fails (PostgreSQL
//     releases session locks when the session ends).
//   - A migration and its schema_migrations row commit together or not at
//     all, so a crash between them cannot record a half-applied version.
//   - Refusal to run when the database is ahead of the binary (a rollback of
//     the binary after a schema upgrade), instead of silently running old
//     code against a schema it does not know.
//   - Unqualified names throughout, so the run happens in the connection's
//     search_path (tests give each test its own schema).
//
// The general-purpose tools also pull multi-driver dependency trees into a
// binary that only ever talks to PostgreSQL through pgx.
//
// The advisory lock is per database, not per schema: coordinators migrating
// different schemas of one database serialise, which costs nothing but a
// short wait.
package migrate

import (
	"context"
	"embed"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// LockKey is the pg_advisory_lock key every PairDB migration run takes:
// "pairdb" in ASCII followed by 0x0001, chosen so that it will not collide
// with a small integer another application on the same database might use.
const LockKey int64 = 0x7061_6972_6462_0001

// DefaultTimeout bounds a run whose ctx has no deadline: waiting for another
// coordinator's run plus applying every migration. Without it a stuck lock
// holder would block startup forever.
const DefaultTimeout = 2 * time.Minute

// cleanupTimeout bounds the unlock, rollback and close that run after the
// caller's ctx may already have ended.
const cleanupTimeout = 5 * time.Second

// ErrSchemaTooNew marks the refusal to run against a database whose schema
// is newer than this binary knows (errors.Is).
var ErrSchemaTooNew = errors.New("database schema is newer than this binary")

//go:embed sql/*.sql
var embedded embed.FS

// migration is one embedded SQL file.
type migration struct {
	version int
	name    string // the file name without extension, e.g. "0001_tenants"
	sql     string
}

// all is every embedded migration in version order. A malformed set is a
// build mistake (a badly named file, a gap, a duplicate), caught by the
// package's tests, so failing at init is the right time to notice.
var all = mustLoad(embedded)

var fileName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// load reads sql/*.sql from fsys and checks that versions are exactly
// 1, 2, ..., n: a gap would mean a lost file (upstream shipped 001, 004, 005
// and nobody could tell whether 002 and 003 were ever applied anywhere).
func load(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "sql")
	if err != nil {
		return nil, errors.Wrap(err, "read embedded migrations")
	}
	var ms []migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			return nil, errors.Newf("migration file %q is not named NNNN_lower_snake.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1]) // four digits: cannot fail
		body, err := fs.ReadFile(fsys, path.Join("sql", e.Name()))
		if err != nil {
			return nil, errors.Wrapf(err, "read migration %s", e.Name())
		}
		ms = append(ms, migration{version: v, name: e.Name()[:len(e.Name())-len(".sql")], sql: string(body)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, errors.Newf("migration versions must be 1..%d without gaps or duplicates; found %s at position %d",
				len(ms), m.name, i+1)
		}
	}
	return ms, nil
}

func mustLoad(fsys fs.FS) []migration {
	ms, err := load(fsys)
	if err != nil {
		panic(err)
	}
	return ms
}

// Latest is the newest schema version this binary knows.
func Latest() int { return len(all) }

// Status returns the schema version of the database the pool's search_path
// points at: 0 when no migration has ever run there.
func Status(ctx context.Context, pool *pgxpool.Pool) (current int, err error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	// to_regclass resolves through search_path like every other unqualified
	// name here, and returns NULL instead of failing when the table is absent.
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, errors.Wrap(err, "read schema version")
	}
	if !exists {
		return 0, nil
	}
	if err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return 0, errors.Wrap(err, "read schema version")
	}
	return current, nil
}

// Apply brings the schema up to Latest and returns the versions it applied
// (empty when the database was already current). It is safe to call from
// any number of processes at once: they serialise on the advisory lock, the
// first applies, the rest find nothing to do. On error, applied lists the
// migrations that did commit before the failure.
func Apply(ctx context.Context, pool *pgxpool.Pool, log *zap.Logger) (applied []int, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	pc, err := pool.Acquire(ctx)
	if err != nil {
		return nil, errors.Wrap(err, "acquire connection for migrations")
	}
	// Hijack: the connection leaves the pool for good and is closed below,
	// which ends the session and with it any advisory lock, whatever happens
	// to the explicit unlock (a cancelled pg_advisory_lock call may even have
	// been granted just before the cancel arrived).
	conn := pc.Hijack()
	defer func() {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer ccancel()
		if _, uerr := conn.Exec(cctx, `SELECT pg_advisory_unlock($1)`, LockKey); uerr != nil {
			log.Warn("migration lock unlock failed; closing the session releases it", zap.Error(uerr))
		}
		_ = conn.Close(cctx)
	}()

	start := time.Now()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, LockKey); err != nil {
		return nil, errors.Wrapf(err, "wait for migration lock %#x (another coordinator may be migrating)", LockKey)
	}
	if waited := time.Since(start); waited > time.Second {
		log.Info("migration lock acquired after waiting", zap.Duration("waited", waited))
	}

	// Under the lock, so concurrent CREATE TABLE IF NOT EXISTS cannot race
	// on the catalog (which fails with a unique violation on pg_type).
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return nil, errors.Wrap(err, "create schema_migrations")
	}
	current, err := appliedVersions(ctx, conn, log)
	if err != nil {
		return nil, err
	}
	if current > Latest() {
		return nil, errors.Mark(errors.Newf(
			"database schema is at version %d but this binary knows versions up to %d; "+
				"run a binary that includes migration %d (refusing to run old code against a newer schema)",
			current, Latest(), current), ErrSchemaTooNew)
	}

	for _, m := range all[current:] {
		t0 := time.Now()
		if err := applyOne(ctx, conn, m); err != nil {
			return applied, err
		}
		applied = append(applied, m.version)
		log.Info("migration applied", zap.Int("version", m.version), zap.String("name", m.name),
			zap.Duration("took", time.Since(t0)))
	}
	if len(applied) == 0 {
		log.Debug("schema up to date", zap.Int("version", current))
	}
	return applied, nil
}

// appliedVersions returns the current version after checking that the
// recorded history is exactly 1..current. Anything else means someone wrote
// schema_migrations by hand or a different tool shares the table; applying
// on top of that would be guesswork, so the run stops.
func appliedVersions(ctx context.Context, conn *pgx.Conn, log *zap.Logger) (int, error) {
	rows, err := conn.Query(ctx, `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		return 0, errors.Wrap(err, "read schema_migrations")
	}
	type row struct {
		version int
		name    string
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.version, &x.name)
		return x, err
	})
	if err != nil {
		return 0, errors.Wrap(err, "read schema_migrations")
	}
	for i, r := range got {
		if r.version != i+1 {
			return 0, errors.Newf("schema_migrations holds version %d (%s) where %d was expected; "+
				"the history has a gap, refusing to guess", r.version, r.name, i+1)
		}
		if r.version <= len(all) && all[r.version-1].name != r.name {
			// A renamed file is harmless; a different migration under the
			// same number is not, but the two look alike from here. Say so.
			log.Warn("applied migration name differs from the embedded file",
				zap.Int("version", r.version), zap.String("applied", r.name), zap.String("embedded", all[r.version-1].name))
		}
	}
	return len(got), nil
}

// applyOne runs one migration and records it in the same transaction.
func applyOne(ctx context.Context, conn *pgx.Conn, m migration) (err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return errors.Wrapf(err, "begin migration %s", m.name)
	}
	defer func() {
		if err != nil {
			// ctx may be what failed; the rollback still needs a bounded
			// chance to run (closing the connection would also abort it).
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			_ = tx.Rollback(rctx)
		}
	}()
	// No arguments: pgx sends this over the simple protocol, which accepts
	// a multi-statement file.
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return errors.Wrapf(err, "apply migration %s", m.name)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
		return errors.Wrapf(err, "record migration %s", m.name)
	}
	if err := tx.Commit(ctx); err != nil {
		return errors.Wrapf(err, "commit migration %s", m.name)
	}
	return nil
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
