package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/config"
	"github.com/pairdb/pairdb/ops"
)

// readyz returns /readyz's status code and report.
func readyz(t *testing.T, addr string) (int, ops.Readiness) {
	t.Helper()
	resp, err := http.Get("http://" + addr + ops.PathReadyz)
	require.NoError(t, err)
	defer resp.Body.Close()
	var r ops.Readiness
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return resp.StatusCode, r
}

// TestRunLifecycle walks a part through run: /readyz says "starting" while
// the part starts, runs the part's checks once it is up, says "draining"
// while the part stops, and the ops server is gone when run returns.
func TestRunLifecycle(t *testing.T) {
	shutdown, signal := context.WithCancel(context.Background())
	defer signal()
	set := metrics.NewSet()
	set.NewCounter("lifecycle_test_total").Inc()

	opsAddr := make(chan string, 1)
	release := make(chan struct{})
	started := make(chan struct{})
	stopping := make(chan struct{})
	stopDone := make(chan struct{})
	checkErr := errors.New("dependency down")
	var failing atomic.Bool
	failing.Store(true)
	done := make(chan error, 1)
	go func() {
		done <- runUntil(shutdown, zaptest.NewLogger(t), process{
			name:       "test part",
			settings:   config.Process{OpsAddr: "127.0.0.1:0", ShutdownTimeout: 10 * time.Second},
			metrics:    []*metrics.Set{set},
			checkNames: []string{"dep"},
			start: func(ctx context.Context) (*part, error) {
				close(started)
				<-release
				return &part{
					stop: func(context.Context) error {
						close(stopping)
						<-stopDone
						return nil
					},
					checks: map[string]ops.Check{"dep": func(context.Context) error {
						if failing.Load() {
							return checkErr
						}
						return nil
					}},
					ready: func(addr string) { opsAddr <- addr },
				}, nil
			},
		})
	}()

	<-started
	close(release)
	addr := <-opsAddr
	code, rep := readyz(t, addr)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "dependency down", rep.Checks["dep"])
	failing.Store(false)
	code, rep = readyz(t, addr)
	require.Equal(t, http.StatusOK, code, rep)

	resp, err := http.Get("http://" + addr + ops.PathMetrics)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), "lifecycle_test_total 1")

	signal()
	<-stopping
	code, rep = readyz(t, addr)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, ops.StatusDraining, rep.Status, "readiness drains before the part stops")
	close(stopDone)
	require.NoError(t, <-done)
	_, err = http.Get("http://" + addr + ops.PathHealthz)
	require.Error(t, err, "the ops server stops after the part")
}

func TestRunReportsStartingUntilThePartIsUp(t *testing.T) {
	shutdown, signal := context.WithCancel(context.Background())
	defer signal()
	addr := freeAddr(t)
	starting := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- runUntil(shutdown, zaptest.NewLogger(t), process{
			name:       "slow part",
			settings:   config.Process{OpsAddr: addr, ShutdownTimeout: 10 * time.Second},
			checkNames: []string{"dep"},
			start: func(ctx context.Context) (*part, error) {
				close(starting)
				<-ctx.Done() // a start that ends only when cut short
				return nil, ctx.Err()
			},
		})
	}()
	<-starting
	code, rep := readyz(t, addr)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "starting", rep.Checks["dep"])
	resp, err := http.Get("http://" + addr + ops.PathHealthz)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "alive while starting")

	signal()
	require.NoError(t, <-done, "a start cut short by a signal is a clean exit")
}

func TestRunStopIsBoundedByShutdownTimeout(t *testing.T) {
	shutdown, signal := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- runUntil(shutdown, zaptest.NewLogger(t), process{
			name:     "stuck part",
			settings: config.Process{OpsAddr: "127.0.0.1:0", ShutdownTimeout: 50 * time.Millisecond},
			start: func(context.Context) (*part, error) {
				return &part{
					stop: func(ctx context.Context) error {
						<-ctx.Done() // a part that only gives up at the deadline
						return ctx.Err()
					},
					ready: func(string) { close(ready) },
				}, nil
			},
		})
	}()
	<-ready
	signal()
	err := <-done
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestRunFailsOnATakenOpsAddr(t *testing.T) {
	srv, err := ops.Start(ops.Config{Addr: "127.0.0.1:0"}, nil, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Stop(context.Background())) }()
	started := false
	err = runUntil(context.Background(), zaptest.NewLogger(t), process{
		name:     "part",
		settings: config.Process{OpsAddr: srv.Addr(), ShutdownTimeout: time.Second},
		start: func(context.Context) (*part, error) {
			started = true
			return nil, errors.New("unreachable")
		},
	})
	require.ErrorContains(t, err, "ops_addr")
	require.False(t, started, "the part does not start when its ops server cannot")
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestRunAnnouncesOnlyWhenReady: a part with awaitReady gets its banner
// printed once every check passes, not as soon as it has started.
func TestRunAnnouncesOnlyWhenReady(t *testing.T) {
	shutdown, signal := context.WithCancel(context.Background())
	defer signal()
	var passing atomic.Bool
	checked := make(chan struct{}, 1)
	announced := make(chan bool, 1)
	done := make(chan error, 1)
	go func() {
		done <- runUntil(shutdown, zaptest.NewLogger(t), process{
			name:       "slow to be ready",
			settings:   config.Process{OpsAddr: "127.0.0.1:0", ShutdownTimeout: 10 * time.Second},
			checkNames: []string{"dep"},
			start: func(context.Context) (*part, error) {
				return &part{
					stop:       func(context.Context) error { return nil },
					awaitReady: true,
					checks: map[string]ops.Check{"dep": func(context.Context) error {
						select {
						case checked <- struct{}{}:
						default:
						}
						if !passing.Load() {
							return errors.New("no heartbeat yet")
						}
						return nil
					}},
					ready: func(string) { announced <- passing.Load() },
				}, nil
			},
		})
	}()
	<-checked // the check ran and failed: no banner yet
	select {
	case <-announced:
		t.Fatal("announced while a check failed")
	default:
	}
	passing.Store(true)
	require.True(t, <-announced, "announced after the checks passed")
	signal()
	require.NoError(t, <-done)
}
