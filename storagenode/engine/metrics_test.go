package engine

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// scrape returns the set's series as name → value.
func scrape(t *testing.T, set *metrics.Set) map[string]float64 {
	t.Helper()
	var b bytes.Buffer
	set.WritePrometheus(&b)
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	return out
}

func TestPebbleMetricsSnapshotIsReusedForASecond(t *testing.T) {
	set := metrics.NewSet()
	reads := 0
	now := time.Unix(1000, 0)
	p := registerMetrics(set, "n1", func() (*pebble.Metrics, bool) {
		reads++
		m := &pebble.Metrics{}
		m.Compact.Count = int64(reads)
		return m, true
	})
	p.now = func() time.Time { return now }

	got := scrape(t, set)
	require.Len(t, got, len(p.names))
	require.Equal(t, 1, reads, "one scrape of every series takes one snapshot")
	require.Equal(t, 1.0, got[`pairdb_pebble_compactions_total{node="n1"}`])

	now = now.Add(metricsRefresh - time.Millisecond)
	scrape(t, set)
	require.Equal(t, 1, reads, "a snapshot younger than the refresh period is reused")

	now = now.Add(time.Millisecond)
	got = scrape(t, set)
	require.Equal(t, 2, reads)
	require.Equal(t, 2.0, got[`pairdb_pebble_compactions_total{node="n1"}`])

	p.unregister()
	require.Empty(t, scrape(t, set))
}

func TestPebbleMetricsAfterCloseKeepLastSnapshot(t *testing.T) {
	set := metrics.NewSet()
	open := true
	now := time.Unix(1000, 0)
	p := registerMetrics(set, "n1", func() (*pebble.Metrics, bool) {
		if !open {
			return nil, false
		}
		m := &pebble.Metrics{}
		m.WAL.Size = 42
		return m, true
	})
	p.now = func() time.Time { return now }
	require.Equal(t, 42.0, scrape(t, set)[`pairdb_pebble_wal_bytes{node="n1"}`])
	open = false
	now = now.Add(time.Hour)
	require.Equal(t, 42.0, scrape(t, set)[`pairdb_pebble_wal_bytes{node="n1"}`])
}

func TestEngineExportsPebbleMetrics(t *testing.T) {
	set := metrics.NewSet()
	dir := t.TempDir()
	opts := Options{Sync: true, CacheBytes: 8 << 20, Logger: zaptest.NewLogger(t), Metrics: set, MetricsNode: "node-1"}
	e, err := Open(dir, opts)
	require.NoError(t, err)
	for i := range 50 {
		require.NoError(t, e.PutMeta(fmt.Sprintf("m%d", i), bytes.Repeat([]byte{'v'}, 100)))
	}

	got := scrape(t, set)
	names := regexp.MustCompile(`^pairdb_pebble_[a-z0-9_]+\{node="node-1"\}$`)
	for name := range got {
		require.Regexp(t, names, name)
	}
	for _, want := range []string{
		"compactions_total", "l0_files", "l0_sublevels", "wal_bytes", "disk_usage_bytes",
		"block_cache_hits_total", "block_cache_misses_total", "read_amplification",
	} {
		require.Contains(t, got, `pairdb_pebble_`+want+`{node="node-1"}`)
	}
	require.Positive(t, got[`pairdb_pebble_wal_bytes{node="node-1"}`], "the writes are in the WAL")
	require.Positive(t, got[`pairdb_pebble_disk_usage_bytes{node="node-1"}`])

	require.NoError(t, e.Close())
	require.Empty(t, scrape(t, set), "a closed engine's series are gone")

	// Reopened in the same process (the dev cluster restarts nodes), the
	// engine registers its series again.
	e, err = Open(dir, opts)
	require.NoError(t, err)
	require.Contains(t, scrape(t, set), `pairdb_pebble_wal_bytes{node="node-1"}`)
	require.NoError(t, e.Close())
}
