package tenantpg

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/internal/pgtest"
	"github.com/pairdb/pairdb/internal/tcpproxy"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/tenant"
)

// viaProxy returns a fresh-schema URL whose connections go through a proxy.
func viaProxy(t *testing.T) (string, *tcpproxy.Proxy) {
	t.Helper()
	direct, err := url.Parse(pgtest.Schema(t))
	require.NoError(t, err)
	p := tcpproxy.Start(t, direct.Host)
	direct.Host = p.Addr()
	return direct.String(), p
}

func mustRecord(t *testing.T, id string) *pb.Tenant {
	t.Helper()
	rec, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: id}, time.Now())
	require.NoError(t, err)
	return rec
}

// requireUnavailable checks the code, the message, and that the call came
// back well before its deadline: an outage must be reported, not waited out.
func requireUnavailable(t *testing.T, err error, started time.Time, budget time.Duration) {
	t.Helper()
	requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
	require.ErrorContains(t, err, "tenant database unreachable: ")
	require.Less(t, time.Since(started), budget, "failure took too long: %v", err)
}

// TestOutageAndRecovery cuts the network between the store and the
// database and heals it: calls fail fast with UNAVAILABLE while cut, Ping
// says why, and the same Store serves again after the heal.
func TestOutageAndRecovery(t *testing.T) {
	u, p := viaProxy(t)
	s := open(t, u, Config{Migrate: true, MaxConns: 4})
	ctx := ctxT(t)
	require.NoError(t, s.Create(ctx, mustRecord(t, "before")))
	// Warm several pooled connections, so the cut has idle ones to break.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _, _, _ = s.List(ctx, 10, "") })
	}
	wg.Wait()

	p.Set(tcpproxy.Refuse)
	const budget = 5 * time.Second
	for i := range 3 { // idle broken connections first, then fresh dials
		opCtx, cancel := context.WithTimeout(ctx, budget)
		start := time.Now()
		_, err := s.Get(opCtx, "before")
		requireUnavailable(t, err, start, budget)
		start = time.Now()
		err = s.Create(opCtx, mustRecord(t, "during"))
		requireUnavailable(t, err, start, budget)
		start = time.Now()
		err = s.Ping(opCtx)
		cancel()
		requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
		require.ErrorContains(t, err, "ping: tenant database unreachable: ", "attempt %d", i)
		require.Less(t, time.Since(start), budget)
	}

	p.Set(tcpproxy.Forward)
	require.NoError(t, s.Ping(ctx))
	got, err := s.Get(ctx, "before")
	require.NoError(t, err)
	require.Equal(t, "before", got.GetTenantId())
	require.NoError(t, s.Create(ctx, mustRecord(t, "after")))
	_, err = s.Get(ctx, "during")
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, err) // nothing half-written while cut
}

// TestBlackholeBoundedByContext: a database that accepts connections and
// never answers must not hold a call past its ctx.
func TestBlackholeBoundedByContext(t *testing.T) {
	u, p := viaProxy(t)
	s := open(t, u, Config{Migrate: true})
	ctx := ctxT(t)
	require.NoError(t, s.Create(ctx, mustRecord(t, "acme")))
	// Break the pooled connections first, so the calls below must dial.
	p.Set(tcpproxy.Refuse)
	_, err := s.Get(ctx, "acme")
	requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
	p.Set(tcpproxy.Blackhole)

	const deadline = 300 * time.Millisecond
	for _, call := range []func(context.Context) error{
		func(c context.Context) error { _, err := s.Get(c, "acme"); return err },
		func(c context.Context) error { return s.Delete(c, "acme") },
		s.Ping,
	} {
		opCtx, cancel := context.WithTimeout(ctx, deadline)
		start := time.Now()
		err := call(opCtx)
		cancel()
		requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
		require.True(t, errors.Is(err, context.DeadlineExceeded), "the context error must stay attached: %v", err)
		require.Less(t, time.Since(start), deadline+2*time.Second, "returned long after ctx ended: %v", err)
	}

	p.Set(tcpproxy.Forward)
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, "acme", got.GetTenantId())
}

// TestOpenDuringOutage: without Migrate, Open does not need the database
// and readiness follows it; with Migrate, Open fails with UNAVAILABLE.
func TestOpenDuringOutage(t *testing.T) {
	u, p := viaProxy(t)
	p.Set(tcpproxy.Refuse)
	ctx := ctxT(t)

	_, err := Open(ctx, u, Config{Migrate: true})
	requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
	require.ErrorContains(t, err, "tenant database unreachable")

	s := open(t, u, Config{})
	requireCode(t, pb.ErrorCode_UNAVAILABLE, s.Ping(ctx))
	p.Set(tcpproxy.Forward)
	require.NoError(t, s.Ping(ctx))
}
