package migrate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/internal/pgtest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/tenant"
)

// TestTenantsSchemaAgreesWithValidate proves that the CHECK constraints of
// the tenants table and tenant.Validate accept exactly the same records at
// every bound: each case changes one field of a valid record, inserts it
// with plain SQL, and requires the database's verdict to equal Validate's.
// Changing a constant in tenant/tenant.go without a migration fails here.
func TestTenantsSchemaAgreesWithValidate(t *testing.T) {
	pool := newPool(t, pgtest.Schema(t))
	_, err := Apply(ctxT(t), pool, zaptest.NewLogger(t))
	require.NoError(t, err)

	type edit = func(r *pb.Tenant)
	cases := map[string]edit{}
	bounds := func(name string, lo, hi int64, set func(r *pb.Tenant, v int64)) {
		for _, v := range []int64{lo - 1, lo, hi, hi + 1} {
			cases[fmt.Sprintf("%s=%d", name, v)] = func(r *pb.Tenant) { set(r, v) }
		}
	}
	bounds("replication_factor", tenant.MinReplicationFactor, tenant.MaxReplicationFactor,
		func(r *pb.Tenant, v int64) { r.ReplicationFactor = uint32(v) })
	bounds("max_siblings", tenant.MinMaxSiblings, tenant.MaxMaxSiblings,
		func(r *pb.Tenant, v int64) { r.MaxSiblings = uint32(v) })
	bounds("max_value_bytes", tenant.MinMaxValueBytes, tenant.MaxMaxValueBytes,
		func(r *pb.Tenant, v int64) { r.MaxValueBytes = uint64(v) })
	// Rates are unsigned with 0 allowed: only the upper bound can be crossed.
	for _, v := range []uint32{0, 1, tenant.MaxRate, tenant.MaxRate + 1} {
		cases[fmt.Sprintf("reads_per_second=%d", v)] = func(r *pb.Tenant) { r.ReadsPerSecond = v }
		cases[fmt.Sprintf("writes_per_second=%d", v)] = func(r *pb.Tenant) { r.WritesPerSecond = v }
	}
	// Version has only a lower bound.
	for _, v := range []uint64{0, 1, 2} {
		cases[fmt.Sprintf("version=%d", v)] = func(r *pb.Tenant) { r.Version = v }
	}
	// Tenant ids: the length bounds (min-1 = empty) and the alphabet,
	// including characters a careless regex would let through ('\n' before
	// '$' in Perl-style engines, non-ASCII letters under a locale).
	for _, id := range []string{"", "a", strings.Repeat("x", 64), strings.Repeat("x", 65),
		"A-z_09", "a.b", "a b", "a*", "a>", "a\n", "é", "a/b"} {
		cases[fmt.Sprintf("tenant_id=%q", id)] = func(r *pb.Tenant) { r.TenantId = id }
	}
	for _, c := range []string{"one", "quorum", "all", "QUORUM", "", "each_quorum"} {
		cases["default_consistency="+c] = func(r *pb.Tenant) { r.DefaultConsistency = c }
	}
	for _, p := range []string{tenant.PolicySiblings, tenant.PolicyLastWriteWins, "LWW", ""} {
		cases["conflict_policy="+p] = func(r *pb.Tenant) { r.ConflictPolicy = p }
	}

	base, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: "bounds"}, time.Now())
	require.NoError(t, err)
	accepted := 0
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			rec := proto.Clone(base).(*pb.Tenant)
			change(rec)
			goOK := tenant.Validate(rec) == nil
			dbErr := insertRaw(t, pool, rec)
			if dbErr != nil {
				var pgErr *pgconn.PgError
				require.True(t, errors.As(dbErr, &pgErr), "not a server error: %v", dbErr)
				require.Equal(t, "23514", pgErr.Code, "rejected by something other than a CHECK: %v", dbErr)
			}
			require.Equal(t, goOK, dbErr == nil, "tenant.Validate ok=%v but database error=%v", goOK, dbErr)
			if goOK {
				accepted++
			}
		})
	}
	require.Positive(t, accepted) // the table accepts valid records at all
}

// insertRaw inserts rec as an operator would, in a transaction that is
// rolled back so every case starts from an empty table.
func insertRaw(t *testing.T, pool *pgxpool.Pool, rec *pb.Tenant) error {
	t.Helper()
	ctx := ctxT(t)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { require.NoError(t, tx.Rollback(ctx)) }()
	_, err = tx.Exec(ctx, `INSERT INTO tenants (tenant_id, replication_factor, default_consistency, conflict_policy,
		max_siblings, max_value_bytes, created_at, updated_at, version, reads_per_second, writes_per_second)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		rec.GetTenantId(), int64(rec.GetReplicationFactor()), rec.GetDefaultConsistency(), rec.GetConflictPolicy(),
		int64(rec.GetMaxSiblings()), int64(rec.GetMaxValueBytes()), rec.GetCreatedAt().AsTime(),
		rec.GetUpdatedAt().AsTime(), int64(rec.GetVersion()), int64(rec.GetReadsPerSecond()), int64(rec.GetWritesPerSecond()))
	return err
}

// TestTenantIDCollationIsBytewise pins COLLATE "C" on tenant_id: List pages
// by "ORDER BY tenant_id" and "tenant_id > token", which must be byte order
// whatever the server's default collation is.
func TestTenantIDCollationIsBytewise(t *testing.T) {
	pool := newPool(t, pgtest.Schema(t))
	ctx := ctxT(t)
	_, err := Apply(ctx, pool, zaptest.NewLogger(t))
	require.NoError(t, err)
	var coll string
	require.NoError(t, pool.QueryRow(ctx, `SELECT coalesce(collation_name, '') FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'tenants' AND column_name = 'tenant_id'`).Scan(&coll))
	require.Equal(t, "C", coll)
}
