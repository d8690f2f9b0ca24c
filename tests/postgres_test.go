package tests

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/internal/pgtest"
	"github.com/pairdb/pairdb/internal/tcpproxy"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

func startPostgresCluster(t *testing.T, pgURL string, cacheTTL time.Duration) *harness {
	return startClusterWith(t, cluster.DevConfig{
		Nodes:       3,
		Coordinator: cluster.CoordinatorConfig{PostgresURL: pgURL, TenantCacheTTL: cacheTTL},
	})
}

func TestPostgresTenantsVisibleWithSQL(t *testing.T) {
	pgURL := pgtest.Schema(t)
	h := startPostgresCluster(t, pgURL, 0)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "acme", ReplicationFactor: 2, ConflictPolicy: "last_write_wins"})
	require.NoError(t, err)
	_, err = client.New(h.nc, client.WithTenant("acme")).Put(ctx, "k", []byte("v"))
	require.NoError(t, err)

	// What an operator sees in psql.
	conn, err := pgx.Connect(ctx, pgURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var (
		rf      int
		policy  string
		version int64
	)
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT replication_factor, conflict_policy, version FROM tenants WHERE tenant_id = 'acme'").Scan(&rf, &policy, &version))
	require.Equal(t, 2, rf)
	require.Equal(t, "last_write_wins", policy)
	require.EqualValues(t, 1, version)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM tenants WHERE tenant_id = 'default'").Scan(&n))
	require.Equal(t, 1, n, "dev mode creates the default tenant in the database")
}

func TestPostgresTenantChangeSeenByOtherCoordinator(t *testing.T) {
	checkTenantChangeSeenByOtherCoordinator(t, startPostgresCluster(t, pgtest.Schema(t), 0))
}

// TestPostgresOutage: with the database unreachable, key-value traffic for
// known tenants goes on, admin calls answer UNAVAILABLE, readiness says why,
// and everything recovers when the database is back, without a restart.
func TestPostgresOutage(t *testing.T) {
	pgURL := pgtest.Schema(t)
	u, err := url.Parse(pgURL)
	require.NoError(t, err)
	proxy := tcpproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	// A short cache TTL, so the outage outlives cached entries.
	h := startPostgresCluster(t, u.String(), 50*time.Millisecond)
	ctx := ctxT(t)
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "known"})
	require.NoError(t, err)
	known := client.New(h.nc, client.WithTenant("known"))
	_, err = known.Put(ctx, "k", []byte("before"))
	require.NoError(t, err)
	coord := h.dev.Coordinators()[0]
	require.NoError(t, coord.Ready(ctx))

	proxy.Cut()
	require.Eventually(t, func() bool { return coord.Ready(ctx) != nil }, 5*time.Second, 10*time.Millisecond)
	require.ErrorContains(t, coord.Ready(ctx), "tenant metadata store")
	_, err = h.c.GetTenant(ctx, "known")
	requireCode(t, err, pb.ErrorCode_UNAVAILABLE)
	require.ErrorContains(t, err, "database")
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "new"})
	requireCode(t, err, pb.ErrorCode_UNAVAILABLE)
	// Known tenants keep working after their cache entry expired: wait until
	// the coordinator has served the stale copy more than once, with every
	// request succeeding on the way.
	stale := h.dev.Metrics().GetOrCreateCounter(`coordinator_cache_stale_served_total{cache_type="tenant"}`)
	var opErr error
	require.Eventually(t, func() bool {
		if _, opErr = known.Put(ctx, "k", []byte("during"), client.Consistency("all")); opErr != nil {
			return true
		}
		got, err := known.Get(ctx, "k")
		if opErr = err; err == nil && !got.GetFound() {
			opErr = errors.New("key not found during the outage")
		}
		return opErr != nil || stale.Get() >= 2
	}, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, opErr, "key-value traffic during the outage")

	proxy.Heal()
	require.Eventually(t, func() bool { return coord.Ready(ctx) == nil }, 10*time.Second, 20*time.Millisecond)
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "new"})
	require.NoError(t, err)
	tn, err := h.c.GetTenant(ctx, "known")
	require.NoError(t, err)
	require.Equal(t, "known", tn.GetTenantId())
}
