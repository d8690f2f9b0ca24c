package main

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bench"
)

// countingStore answers at once and counts the gets.
type countingStore struct{ gets atomic.Int64 }

func (c *countingStore) Get(context.Context, string) (bench.ReadResult, error) {
	c.gets.Add(1)
	return bench.ReadResult{Found: true}, nil
}

func (c *countingStore) Put(context.Context, string, []byte, *bench.ReadResult) error { return nil }

func quietTestConfig(t *testing.T) config {
	t.Helper()
	cfg, err := parseFlags([]string{"--pairdb-server", "nats://127.0.0.1:1", "--workloads", "get", "--concurrency", "1",
		"--records", "10", "--duration", "1ms"})
	require.NoError(t, err)
	return cfg
}

func TestQuietRunsAgainWhileDisturbedWithinTheBudget(t *testing.T) {
	cfg := quietTestConfig(t)
	pc := cfg.phase(1)
	// Any machine counts as disturbed below zero cores: the phase is run
	// 1 + retries times, and the budget pays for each repeat.
	cfg.quiet = &quiet{cores: -1, retries: 2, budget: time.Hour}
	s, err := cfg.quiet.runPhase(context.Background(), cfg, 1, "pairdb", &countingStore{}, pc, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "get", s.Workload)
	require.Positive(t, s.Attempt)
	require.Equal(t, time.Hour-2*cfg.duration, cfg.quiet.budget)

	// Without budget a disturbed phase is not repeated, and waits end at once.
	cfg.quiet = &quiet{wait: time.Hour, cores: -1, retries: 2}
	s, err = cfg.quiet.runPhase(context.Background(), cfg, 1, "pairdb", &countingStore{}, pc, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 1, s.Attempt)

	// A quiet machine (any, above a thousand cores) runs each phase once.
	cfg.quiet = &quiet{cores: 1000, retries: 2, budget: time.Hour}
	s, err = cfg.quiet.runPhase(context.Background(), cfg, 1, "pairdb", &countingStore{}, pc, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 1, s.Attempt)
	require.Equal(t, time.Hour, cfg.quiet.budget)
}
