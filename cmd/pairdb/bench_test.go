package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bench"
)

// benchNoEnv is an empty environment: the tests see no PAIRDB_* settings.
func benchNoEnv(string) (string, bool) { return "", false }

// TestBenchCommandDev runs `pairdb bench --dev` end to end, as a user
// would, with small counts: the flags reach the suite, the embedded cluster
// comes up and goes away, and the JSON report has every phase without errors.
func TestBenchCommandDev(t *testing.T) {
	cmd := newRoot(benchNoEnv)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs([]string{"bench", "--dev", "--baseline", "--load", "--json", "--workload", "put", "--records", "20",
		"--concurrency", "3", "--ops", "60", "--duration", "30s", "--consistency", "quorum", "--seed", "1"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cmd.ExecuteContext(ctx), errOut.String())

	var rep bench.Report
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	require.Equal(t, "put", rep.Config.Workload)
	require.Equal(t, 128, rep.Config.ValueSize)
	require.Equal(t, 16, rep.Config.KeySize)
	require.True(t, rep.Config.Idempotency)
	require.Len(t, rep.Phases, 5) // pairdb load and run, transport run, KV load and run
	for _, p := range rep.Phases {
		require.Zero(t, p.Errors, "%s: %s", p.Name, p.FirstError)
	}
	db, ok := rep.Phase(bench.PhasePairDB)
	require.True(t, ok)
	require.EqualValues(t, 60, db.Ops)
	up, ok := db.Op(bench.OpUpdate)
	require.True(t, ok)
	require.EqualValues(t, 60, up.Count)
	require.Len(t, rep.Ratios, 2) // update vs the transport, update vs KV
	require.Contains(t, errOut.String(), "embedded cluster at")
}

func TestBenchCommandRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--workload", "e"},
		{"--distribution", "hotspot"},
		{"--no-sync"},
		{"--concurrency", "0"},
		{"--key-size", "3", "--records", "1000"},
	} {
		cmd := newRoot(benchNoEnv)
		cmd.SetArgs(append([]string{"bench"}, args...))
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		require.Error(t, cmd.Execute(), "%v", args)
	}
}
