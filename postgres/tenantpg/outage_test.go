package tenantpg

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/internal/pgtest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/tenant"
)

// proxyMode is what the proxy does with connections.
type proxyMode int

const (
	forward   proxyMode = iota // pass bytes both ways
	refuse                     // close every connection at once (server down, port closed)
	blackhole                  // accept and never answer (packets dropped, host gone)
)

// proxy is a TCP forwarder between the store and PostgreSQL that a test can
// cut and heal, like a network partition. The listener stays open in every
// mode so the address never changes; "refuse" closes accepted connections
// immediately, which the client sees the same way as a dead server.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  proxyMode
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.acceptLoop)
	t.Cleanup(func() {
		_ = ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// set switches mode and drops every open connection: entering an outage
// breaks the connections that crossed it (as a partition would), and
// healing one breaks the connections the black hole was holding, which
// would otherwise hang until the client's connect timeout.
func (p *proxy) set(m proxyMode) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
	p.closeAll()
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// track registers c so closeAll reaches it; false if the mode changed to
// one that must not carry it.
func (p *proxy) track(c net.Conn, want proxyMode) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode != want {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed at cleanup
		}
		p.mu.Lock()
		m := p.mode
		p.mu.Unlock()
		switch m {
		case refuse:
			_ = c.Close()
		case blackhole:
			if !p.track(c, blackhole) {
				_ = c.Close()
			}
		case forward:
			p.wg.Go(func() { p.pipe(c) })
		}
	}
}

func (p *proxy) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, forward) || !p.track(up, forward) {
		_ = c.Close()
		_ = up.Close()
		return
	}
	var wg sync.WaitGroup
	// Either direction ending (EOF or a close by closeAll) ends both.
	for _, dir := range [][2]net.Conn{{up, c}, {c, up}} {
		wg.Go(func() {
			_, _ = io.Copy(dir[0], dir[1])
			_ = dir[0].Close()
			_ = dir[1].Close()
		})
	}
	wg.Wait()
}

// viaProxy returns a fresh-schema URL whose connections go through a proxy.
func viaProxy(t *testing.T) (string, *proxy) {
	t.Helper()
	direct, err := url.Parse(pgtest.Schema(t))
	require.NoError(t, err)
	p := startProxy(t, direct.Host)
	direct.Host = p.addr()
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

	p.set(refuse)
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

	p.set(forward)
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
	p.set(refuse)
	_, err := s.Get(ctx, "acme")
	requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
	p.set(blackhole)

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

	p.set(forward)
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, "acme", got.GetTenantId())
}

// TestOpenDuringOutage: without Migrate, Open does not need the database
// and readiness follows it; with Migrate, Open fails with UNAVAILABLE.
func TestOpenDuringOutage(t *testing.T) {
	u, p := viaProxy(t)
	p.set(refuse)
	ctx := ctxT(t)

	_, err := Open(ctx, u, Config{Migrate: true})
	requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
	require.ErrorContains(t, err, "tenant database unreachable")

	s := open(t, u, Config{})
	requireCode(t, pb.ErrorCode_UNAVAILABLE, s.Ping(ctx))
	p.set(forward)
	require.NoError(t, s.Ping(ctx))
}
