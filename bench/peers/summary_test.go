package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bench"
)

func sample(rep int, store string, ops, p99 float64, cpu ...ProcCPU) Sample {
	return Sample{Rep: rep, Store: store, Workload: "put", Concurrency: 16, OpsPerSec: ops, P50Us: p99 / 2, P99Us: p99, CPU: cpu}
}

func TestSummarizeMediansAndPerRepetitionRatios(t *testing.T) {
	samples := []Sample{
		sample(1, "pairdb", 1000, 10_000, ProcCPU{"coordinator", 70}, ProcCPU{"bench", 30}),
		sample(1, "etcd", 2000, 5_000),
		sample(2, "pairdb", 3000, 8_000, ProcCPU{"coordinator", 90}, ProcCPU{"bench", 20}),
		sample(2, "etcd", 3000, 4_000),
		sample(3, "pairdb", 2000, 12_000, ProcCPU{"coordinator", 80}, ProcCPU{"bench", 40}),
		sample(3, "etcd", 1000, 6_000),
		{Rep: 1, Store: "etcd", Workload: "get", Concurrency: 64, OpsPerSec: 5000, P99Us: 1000},
	}
	samples[0].OtherCores, samples[2].OtherCores = 0.3, 0.7 // PairDB's repetitions 1 and 2
	samples[0].IdleCores, samples[2].IdleCores, samples[4].IdleCores = 0.1, 0.3, 0.2
	groups := Summarize(samples, []string{"pairdb", "jskv", "etcd"}, "pairdb")
	require.Len(t, groups, 2)
	g := groups[0]
	require.Equal(t, "put", g.Workload)
	require.Equal(t, 16, g.Concurrency)
	require.Len(t, g.Rows, 2, "a store with no samples has no row")

	db, etcd := g.Rows[0], g.Rows[1]
	require.Equal(t, "pairdb", db.Store)
	require.Equal(t, 3, db.Reps)
	require.InDelta(t, 2000, db.OpsPerSec, 1e-9)
	require.InDelta(t, 1000, db.OpsMin, 1e-9)
	require.InDelta(t, 3000, db.OpsMax, 1e-9)
	require.InDelta(t, 10_000, db.P99Us, 1e-9)
	require.Zero(t, db.Throughput, "no ratio of the reference to itself")
	require.Equal(t, []ProcCPU{{"coordinator", 80}, {"bench", 30}}, db.CPU)
	require.InDelta(t, 110, db.CPUTotal, 1e-9, "the median of the per-repetition totals (100, 110, 120)")
	require.InDelta(t, 0.7, db.OtherCores, 1e-9, "the most of any repetition")
	require.InDelta(t, 0.2, db.IdleCores, 1e-9, "the median")

	// Ratios per repetition: 0.5, 1, 2 → median 1 (the ratio of the medians
	// would be 2000/2000 as well, but p99: 2, 2, 2 → 2).
	require.InDelta(t, 1, etcd.Throughput, 1e-9)
	require.InDelta(t, 2, etcd.P99, 1e-9)

	require.Equal(t, "get", groups[1].Workload)
	require.Zero(t, groups[1].Rows[0].Throughput, "no PairDB sample in that group: nothing to compare")
}

func TestMedian(t *testing.T) {
	require.Zero(t, median(nil))
	require.InDelta(t, 2, median([]float64{3, 1, 2}), 1e-9)
	require.InDelta(t, 2.5, median([]float64{4, 1, 3, 2}), 1e-9)
}

func TestWriteSummary(t *testing.T) {
	samples := []Sample{sample(1, "pairdb", 3210, 9_870, ProcCPU{"node-1", 100}), sample(1, "jskv", 12_345, 4_935)}
	var b strings.Builder
	require.NoError(t, WriteSummary(&b, Summarize(samples, []string{"pairdb", "jskv"}, "pairdb"), "pairdb", map[string]string{"jskv": "JetStream KV R3"}))
	out := b.String()
	require.Contains(t, out, "put, 16 clients")
	require.Contains(t, out, "12.3k")
	require.Contains(t, out, "0.26×", "PairDB's ops/s over JetStream's")
	require.Contains(t, out, "2.00×", "PairDB's p99 over JetStream's")
	require.Contains(t, out, "node-1 100")
	require.Contains(t, out, "| workload | clients | pairdb ops/s (p99 ms) | JetStream KV R3 ops/s (p99 ms) | pairdb ÷ JetStream KV R3 |\n|---|---|---|---|---|\n")
	require.Contains(t, out, "| put | 16 | 3210 (9.9) | 12.3k (4.9) | 0.26× |\n")
}

func TestNewSampleTakesTheMainOperation(t *testing.T) {
	r := &bench.PhaseResult{Workload: "put", OpsPerSec: 100, Errors: 2, PerOp: []bench.OpResult{
		{Op: "read", Count: 1, P99Us: 1}, {Op: "update", Count: 1000, P50Us: 500, P99Us: 900},
	}}
	s := newSample(2, "etcd", r, 64, usage{idleCores: 0.1, others: 0.5})
	require.Equal(t, Sample{Rep: 2, Store: "etcd", Workload: "put", Concurrency: 64, OpsPerSec: 100, P50Us: 500, P99Us: 900, Errors: 2,
		IdleCores: 0.1, OtherCores: 0.5, Result: r}, s)
}

func TestParseStatTicks(t *testing.T) {
	// Field 2 may hold spaces and parentheses; utime 1234, stime 56.
	line := "4242 (nats (x) server) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1234 56 0 0 20 0 12 0 100 0 0"
	n, err := parseStatTicks(line)
	require.NoError(t, err)
	require.Equal(t, uint64(1290), n)
	_, err = parseStatTicks("4242 (short) S 1")
	require.Error(t, err)
	_, err = cpuTicks(0) // this process
	require.NoError(t, err)
}

func TestParseHostBusy(t *testing.T) {
	n, err := parseHostBusy("cpu  100 2 30 5000 40 5 6 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
	require.NoError(t, err)
	require.Equal(t, uint64(100+2+30+5+6+7), n, "idle and iowait are not busy")
	_, err = parseHostBusy("intr 1 2 3")
	require.Error(t, err)
}

func TestParseProcAndCPUPerOp(t *testing.T) {
	p, err := parseProc("pairdb,transport:nats-server=123")
	require.NoError(t, err)
	require.Equal(t, proc{stores: []string{"pairdb", "transport"}, role: "nats-server", pid: 123}, p)
	for _, bad := range []string{"pairdb=1", "pairdb:x", ":x=1", "pairdb:x=0", "pairdb:x=y"} {
		_, err := parseProc(bad)
		require.Error(t, err, bad)
	}
	procs := procsOf([]proc{p, {stores: []string{"etcd"}, role: "etcd-1", pid: 9}}, "transport")
	require.Equal(t, []string{"nats-server", selfRole}, []string{procs[0].role, procs[1].role})
	// 50 ticks (0.5 s) over 1000 operations: 500 µs each; a process that
	// could not be read is left out.
	cpu := cpuPerOp(procs, []int64{100, -1}, []int64{150, 10}, 1000)
	require.Equal(t, []ProcCPU{{"nats-server", 500}}, cpu)
}
