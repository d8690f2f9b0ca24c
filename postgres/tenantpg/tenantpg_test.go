package tenantpg

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/internal/pgtest"
	"github.com/pairdb/pairdb/postgres/migrate"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
	"github.com/pairdb/pairdb/tenant/tenanttest"
)

// testTimeout bounds each test's database work.
const testTimeout = 30 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, url string, cfg Config) *Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	s, err := Open(ctxT(t), url, cfg)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func requireCode(t *testing.T, want pb.ErrorCode, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, status.CodeOf(err), "error: %v", err)
}

func TestConformance(t *testing.T) {
	tenanttest.Run(t, func(t *testing.T) tenant.Store {
		return open(t, pgtest.Schema(t), Config{Migrate: true})
	})
}

// TestRowsVisibleToOperators checks what an operator sees in psql: plain
// columns with readable values, and that a hand-made change through SQL is
// what the store then returns.
func TestRowsVisibleToOperators(t *testing.T) {
	url := pgtest.Schema(t)
	s := open(t, url, Config{Migrate: true})
	ctx := ctxT(t)
	rec, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: "acme", ReplicationFactor: 5,
		DefaultConsistency: "ALL", ConflictPolicy: tenant.PolicyLastWriteWins}, time.Now())
	require.NoError(t, err)
	require.NoError(t, s.Create(ctx, rec))

	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer func() { _ = conn.Close(context.Background()) }()
	var (
		id, consistency, policy  string
		rf, siblings             int
		valueBytes, version      int64
		createdAt, updatedAt     time.Time
		createdText, updatedText string
	)
	require.NoError(t, conn.QueryRow(ctx, `SELECT tenant_id, replication_factor, default_consistency, conflict_policy,
		max_siblings, max_value_bytes, created_at, updated_at, version, created_at::text, updated_at::text
		FROM tenants`).Scan(&id, &rf, &consistency, &policy, &siblings, &valueBytes, &createdAt, &updatedAt, &version,
		&createdText, &updatedText))
	require.Equal(t, "acme", id)
	require.Equal(t, 5, rf)
	require.Equal(t, "all", consistency)
	require.Equal(t, tenant.PolicyLastWriteWins, policy)
	require.Equal(t, tenant.DefaultMaxSiblings, siblings)
	require.Equal(t, int64(tenant.DefaultMaxValueBytes), valueBytes)
	require.Equal(t, int64(1), version)
	require.True(t, rec.GetCreatedAt().AsTime().Equal(createdAt), "created_at %v vs %v", rec.GetCreatedAt().AsTime(), createdAt)
	require.True(t, rec.GetUpdatedAt().AsTime().Equal(updatedAt))
	require.NotEmpty(t, createdText) // a real timestamptz, not an opaque blob

	// An operator bumps the sibling cap by hand, respecting the version
	// protocol; the store returns exactly that.
	_, err = conn.Exec(ctx, `UPDATE tenants SET max_siblings = 50, version = version + 1, updated_at = now()
		WHERE tenant_id = 'acme'`)
	require.NoError(t, err)
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, uint32(50), got.GetMaxSiblings())
	require.Equal(t, uint64(2), got.GetVersion())
	require.NoError(t, tenant.Validate(got))
	// A stale update from version 1 now conflicts.
	stale, err := tenant.ApplyUpdate(rec, &pb.UpdateTenantRequest{TenantId: "acme"}, time.Now())
	require.NoError(t, err)
	requireCode(t, pb.ErrorCode_VERSION_CONFLICT, s.Update(ctx, stale))

	// And the operator's bad hand edit is refused by the schema, not stored.
	_, err = conn.Exec(ctx, `UPDATE tenants SET replication_factor = 9 WHERE tenant_id = 'acme'`)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr))
	require.Equal(t, "tenants_replication_factor_range", pgErr.ConstraintName)
}

// TestUpdateKeepsCreatedAt documents that created_at is owned by Create.
func TestUpdateKeepsCreatedAt(t *testing.T) {
	s := open(t, pgtest.Schema(t), Config{Migrate: true})
	ctx := ctxT(t)
	rec, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: "acme"}, time.Now())
	require.NoError(t, err)
	require.NoError(t, s.Create(ctx, rec))
	next, err := tenant.ApplyUpdate(rec, &pb.UpdateTenantRequest{TenantId: "acme"}, time.Now())
	require.NoError(t, err)
	forged := proto.Clone(next).(*pb.Tenant)
	forged.CreatedAt = next.GetUpdatedAt()
	require.NoError(t, s.Update(ctx, forged))
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	require.True(t, proto.Equal(rec.GetCreatedAt(), got.GetCreatedAt()))
}

func TestOpenRejectsBadConfig(t *testing.T) {
	ctx := ctxT(t)
	_, err := Open(ctx, "postgres://127.0.0.1:5432/x", Config{MaxConns: -1})
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, err)
	_, err = Open(ctx, "postgres://user:secret@127.0.0.1:notaport/x", Config{})
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, err)
	require.NotContains(t, err.Error(), "secret", "the password must not leak into errors")
}

// TestUnmigratedSchemaSaysSo: without Migrate and without the table, calls
// fail with a message that names the fix, not a bare "relation does not
// exist".
func TestUnmigratedSchemaSaysSo(t *testing.T) {
	s := open(t, pgtest.Schema(t), Config{})
	_, err := s.Get(ctxT(t), "acme")
	requireCode(t, pb.ErrorCode_INTERNAL, err)
	require.ErrorContains(t, err, "run the migrations")
	require.NoError(t, s.Ping(ctxT(t)))
}

func TestOpenMigratesToLatest(t *testing.T) {
	s := open(t, pgtest.Schema(t), Config{Migrate: true, MaxConns: 2})
	cur, err := migrate.Status(ctxT(t), s.Pool())
	require.NoError(t, err)
	require.Equal(t, migrate.Latest(), cur)
	require.Equal(t, int32(2), s.Pool().Config().MaxConns)
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	s := open(t, pgtest.Schema(t), Config{Migrate: true})
	s.Close()
	s.Close() // idempotent
	ctx := ctxT(t)
	_, err := s.Get(ctx, "acme")
	requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
	requireCode(t, pb.ErrorCode_UNAVAILABLE, s.Ping(ctx))
}

// TestClassify pins the error mapping for failures that are hard to provoke
// against a healthy server.
func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want pb.ErrorCode
	}{
		{"check violation", &pgconn.PgError{Code: "23514", ConstraintName: "tenants_max_siblings_range"}, pb.ErrorCode_INVALID_ARGUMENT},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, pb.ErrorCode_UNAVAILABLE},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, pb.ErrorCode_UNAVAILABLE},
		{"connection failure", &pgconn.PgError{Code: "08006"}, pb.ErrorCode_UNAVAILABLE},
		{"too many connections", &pgconn.PgError{Code: "53300"}, pb.ErrorCode_UNAVAILABLE},
		{"statement timeout", &pgconn.PgError{Code: "57014"}, pb.ErrorCode_UNAVAILABLE},
		{"undefined table", &pgconn.PgError{Code: "42P01"}, pb.ErrorCode_INTERNAL},
		{"syntax error", &pgconn.PgError{Code: "42601"}, pb.ErrorCode_INTERNAL},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, pb.ErrorCode_UNAVAILABLE},
		{"eof", errors.Wrap(io.ErrUnexpectedEOF, "receive message"), pb.ErrorCode_UNAVAILABLE},
		{"conn closed", pgconn.ErrConnClosed, pb.ErrorCode_UNAVAILABLE},
		{"deadline", errors.Wrap(context.DeadlineExceeded, "acquire"), pb.ErrorCode_UNAVAILABLE},
		{"scan", errors.New("can't scan into dest[0]"), pb.ErrorCode_INTERNAL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := classify(c.err, "op %q", "x")
			requireCode(t, c.want, err)
			require.True(t, errors.Is(err, c.err), "cause must stay attached")
			if c.want == pb.ErrorCode_UNAVAILABLE {
				require.ErrorContains(t, err, `op "x": tenant database unreachable: `)
			}
		})
	}
	require.ErrorContains(t, classify(cases[0].err, "create"), "tenants_max_siblings_range")
}
