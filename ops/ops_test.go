package ops_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/ops"
)

func start(t *testing.T, cfg ops.Config, sets []*metrics.Set, ready map[string]ops.Check) *ops.Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	cfg.Logger = zaptest.NewLogger(t)
	s, err := ops.Start(cfg, sets, ready)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Stop(ctx))
	})
	return s
}

// get fetches path and returns the status code, content type and body.
func get(t *testing.T, s *ops.Server, path string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr()+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

func readiness(t *testing.T, body string) ops.Readiness {
	t.Helper()
	var r ops.Readiness
	require.NoError(t, json.Unmarshal([]byte(body), &r), "body: %s", body)
	return r
}

func TestMetricsWritesEverySetOnceAndProcessMetrics(t *testing.T) {
	a, b := metrics.NewSet(), metrics.NewSet()
	a.GetOrCreateCounter(`coordinator_requests_total{operation="put",consistency="quorum"}`).Add(3)
	b.GetOrCreatePrometheusHistogram(`pairdb_node_request_duration_seconds{node="n1",op="read"}`).Update(0.002)
	s := start(t, ops.Config{}, []*metrics.Set{a, b, a, nil}, nil)

	code, ctype, body := get(t, s, ops.PathMetrics)
	require.Equal(t, http.StatusOK, code)
	require.True(t, strings.HasPrefix(ctype, "text/plain"), ctype)
	require.Contains(t, body, `coordinator_requests_total{operation="put",consistency="quorum"} 3`)
	require.Equal(t, 1, strings.Count(body, `coordinator_requests_total{`), "a set passed twice is written once")
	require.Contains(t, body, `pairdb_node_request_duration_seconds_bucket{node="n1",op="read",le="0.005"} 1`)
	require.Contains(t, body, "go_goroutines ")
	require.Contains(t, body, "process_resident_memory_bytes ")
}

func TestHealthz(t *testing.T) {
	s := start(t, ops.Config{}, nil, map[string]ops.Check{
		"broken": func(context.Context) error { return errors.New("down") },
	})
	code, _, body := get(t, s, ops.PathHealthz)
	require.Equal(t, http.StatusOK, code, "liveness does not depend on readiness checks")
	require.Equal(t, "ok\n", body)
}

func TestReadyzAllPass(t *testing.T) {
	s := start(t, ops.Config{}, nil, map[string]ops.Check{
		"nats":  func(context.Context) error { return nil },
		"store": func(context.Context) error { return nil },
	})
	code, ctype, body := get(t, s, ops.PathReadyz)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "application/json", ctype)
	require.Equal(t, ops.Readiness{Status: ops.StatusOK, Checks: map[string]string{"nats": "ok", "store": "ok"}}, readiness(t, body))
}

func TestReadyzNoChecksIsReady(t *testing.T) {
	s := start(t, ops.Config{}, nil, nil)
	code, _, body := get(t, s, ops.PathReadyz)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, ops.StatusOK, readiness(t, body).Status)
}

func TestReadyzReportsEachFailure(t *testing.T) {
	s := start(t, ops.Config{}, nil, map[string]ops.Check{
		"nats":     func(context.Context) error { return nil },
		"postgres": func(context.Context) error { return errors.New("dial tcp 10.0.0.5:5432: connection refused") },
		"pebble":   func(context.Context) error { panic("engine closed") },
	})
	code, _, body := get(t, s, ops.PathReadyz)
	require.Equal(t, http.StatusServiceUnavailable, code)
	r := readiness(t, body)
	require.Equal(t, ops.StatusUnavailable, r.Status)
	require.Equal(t, "ok", r.Checks["nats"])
	require.Equal(t, "dial tcp 10.0.0.5:5432: connection refused", r.Checks["postgres"])
	require.Contains(t, r.Checks["pebble"], "engine closed")
}

func TestReadyzBoundsAStuckCheckAndDoesNotPileUp(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	s := start(t, ops.Config{CheckTimeout: 50 * time.Millisecond}, nil, map[string]ops.Check{
		"fast": func(context.Context) error { return nil },
		// Ignores its context: the worst case a check can be.
		"stuck": func(context.Context) error {
			calls.Add(1)
			<-release
			return nil
		},
	})
	t.Cleanup(func() { close(release) })

	begin := time.Now()
	code, _, body := get(t, s, ops.PathReadyz)
	require.Less(t, time.Since(begin), 5*time.Second)
	require.Equal(t, http.StatusServiceUnavailable, code)
	r := readiness(t, body)
	require.Equal(t, "ok", r.Checks["fast"])
	require.Equal(t, "timed out after 50ms", r.Checks["stuck"])

	code, _, body = get(t, s, ops.PathReadyz)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "previous check still running after its deadline", readiness(t, body).Checks["stuck"])
	require.Equal(t, int32(1), calls.Load(), "a stuck check is not started again")
}

func TestReadyzCheckSeesDeadline(t *testing.T) {
	s := start(t, ops.Config{CheckTimeout: time.Second}, nil, map[string]ops.Check{
		"deadline": func(ctx context.Context) error {
			d, ok := ctx.Deadline()
			if !ok || time.Until(d) > time.Second {
				return errors.New("no deadline of at most 1s")
			}
			return nil
		},
	})
	code, _, body := get(t, s, ops.PathReadyz)
	require.Equal(t, http.StatusOK, code, body)
}

func TestDraining(t *testing.T) {
	var calls atomic.Int32
	s := start(t, ops.Config{}, nil, map[string]ops.Check{
		"nats": func(context.Context) error { calls.Add(1); return nil },
	})
	require.False(t, s.Draining())
	s.SetDraining(true)
	require.True(t, s.Draining())
	code, _, body := get(t, s, ops.PathReadyz)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, ops.Readiness{Status: ops.StatusDraining}, readiness(t, body))
	require.Zero(t, calls.Load(), "draining answers without running checks")

	code, _, _ = get(t, s, ops.PathHealthz)
	require.Equal(t, http.StatusOK, code, "a draining process is still alive")

	s.SetDraining(false)
	code, _, _ = get(t, s, ops.PathReadyz)
	require.Equal(t, http.StatusOK, code)
}

func TestOnlyGET(t *testing.T) {
	s := start(t, ops.Config{}, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.Addr()+ops.PathHealthz, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	code, _, _ := get(t, s, "/nope")
	require.Equal(t, http.StatusNotFound, code)
}

func TestStopIsIdempotentAndClosesThePort(t *testing.T) {
	s, err := ops.Start(ops.Config{Addr: "127.0.0.1:0", Logger: zaptest.NewLogger(t)}, nil, nil)
	require.NoError(t, err)
	code, _, _ := get(t, s, ops.PathHealthz)
	require.Equal(t, http.StatusOK, code)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Stop(ctx))
	require.NoError(t, s.Stop(ctx))

	client := &http.Client{Timeout: 5 * time.Second}
	_, err = client.Get("http://" + s.Addr() + ops.PathHealthz)
	require.Error(t, err, "nothing listens after Stop")
}

func TestStartErrors(t *testing.T) {
	s := start(t, ops.Config{}, nil, nil)
	_, err := ops.Start(ops.Config{Addr: s.Addr()}, nil, nil)
	require.ErrorContains(t, err, "listen on "+s.Addr())

	_, err = ops.Start(ops.Config{Addr: "127.0.0.1:0"}, nil, map[string]ops.Check{"x": nil})
	require.ErrorContains(t, err, `readiness check "x" is nil`)

	_, err = ops.Start(ops.Config{Addr: "127.0.0.1:0", CheckTimeout: -time.Second}, nil, nil)
	require.ErrorContains(t, err, "CheckTimeout")
}

func TestDefaultAddrUsesDefaultPort(t *testing.T) {
	_, port, err := net.SplitHostPort(ops.DefaultAddr)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(ops.DefaultPort), port)
}

// Profiles are served for `go tool pprof http://host:port/debug/pprof/...`.
func TestPprofServesProfiles(t *testing.T) {
	s := start(t, ops.Config{}, nil, nil)
	code, _, body := get(t, s, ops.PathPprof)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine")
	code, _, body = get(t, s, ops.PathPprof+"goroutine?debug=1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine profile")
}
