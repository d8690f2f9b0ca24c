package deploy

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/stretchr/testify/require"
)

// fromProcess marks a metric that metrics.WriteProcessMetrics writes, which
// /metrics appends.
const fromProcess = "process"

// dashboardMetrics lists every metric name the dashboard may query, with
// the fragment of Go source that defines it (checked to exist in a non-test
// file, so a renamed or missing metric fails here), or fromProcess. There
// is no third kind: a panel over a metric no code exports would always be
// empty (the migration panels were, over three names nothing defined).
var dashboardMetrics = map[string]string{
	"coordinator_requests_total":              "`coordinator_requests_total{",
	"coordinator_request_duration_seconds":    "`coordinator_request_duration_seconds{",
	"coordinator_request_errors_total":        "`coordinator_request_errors_total{",
	"coordinator_quorum_failures_total":       "`coordinator_quorum_failures_total{",
	"coordinator_conflicts_total":             "`coordinator_conflicts_total`",
	"coordinator_repairs_total":               "`coordinator_repairs_total{",
	"coordinator_replica_writes_total":        "`coordinator_replica_%s_total{",
	"coordinator_replica_reads_total":         "`coordinator_replica_%s_total{",
	"coordinator_cache_hits_total":            "`coordinator_cache_hits_total{",
	"coordinator_cache_misses_total":          "`coordinator_cache_misses_total{",
	"coordinator_cache_stale_served_total":    "`coordinator_cache_stale_served_total{",
	"coordinator_repair_queue_size":           "`coordinator_repair_queue_size`",
	"pairdb_node_requests_total":              "`pairdb_node_requests_total{",
	"pairdb_node_request_duration_seconds":    "`pairdb_node_request_duration_seconds{",
	"pairdb_node_request_errors_total":        "`pairdb_node_request_errors_total{",
	"pairdb_node_disk_bytes":                  "`pairdb_node_disk_bytes{",
	"pairdb_node_merge_changed_total":         "`pairdb_node_merge_changed_total{",
	"pairdb_node_heartbeat_errors_total":      "`pairdb_node_heartbeat_errors_total{",
	"pairdb_hints_stored_total":               "`pairdb_hints_stored_total{",
	"pairdb_hints_replayed_total":             "`pairdb_hints_replayed_total{",
	"pairdb_hints_failed_total":               "`pairdb_hints_failed_total{",
	"pairdb_hints_pending":                    "`pairdb_hints_pending{",
	"pairdb_migration_transfers_total":        "`pairdb_migration_transfers_total{",
	"pairdb_migration_keys_transferred_total": "`pairdb_migration_keys_transferred_total{",
	"process_resident_memory_bytes":           fromProcess,
	"process_cpu_seconds_total":               fromProcess,
	"go_goroutines":                           fromProcess,
}

// histograms are queried through their _bucket, _sum and _count series.
var histograms = []string{"coordinator_request_duration_seconds", "pairdb_node_request_duration_seconds"}

// queries collects every PromQL expression of the dashboard: panel targets
// (rows may nest panels) and template variable queries.
func queries(t *testing.T, dash map[string]any) []string {
	t.Helper()
	var out []string
	var walkPanels func(ps []any)
	walkPanels = func(ps []any) {
		for _, p := range ps {
			panel := p.(map[string]any)
			if nested, ok := panel["panels"].([]any); ok {
				walkPanels(nested)
			}
			targets, _ := panel["targets"].([]any)
			if panel["type"] != "row" {
				require.NotEmpty(t, targets, "panel %q queries nothing", panel["title"])
				require.NotNil(t, panel["datasource"], "panel %q has no data source", panel["title"])
			}
			for _, tg := range targets {
				expr, _ := tg.(map[string]any)["expr"].(string)
				require.NotEmpty(t, expr, "panel %q has a target without expr", panel["title"])
				out = append(out, expr)
			}
		}
	}
	walkPanels(dash["panels"].([]any))
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		if q, ok := v.(map[string]any)["query"].(map[string]any); ok {
			out = append(out, q["query"].(string))
		}
	}
	return out
}

var metricName = regexp.MustCompile(`\b(?:coordinator|pairdb|process|go)_[a-z0-9_]+\b`)

func TestDashboardQueriesKnownMetrics(t *testing.T) {
	m := load(t)
	dash := m.dashboard
	require.NotEmpty(t, dash["uid"])
	require.NotEmpty(t, dash["title"])

	// Panel ids are unique and every panel fits the 24-column grid.
	ids := map[float64]bool{}
	for _, p := range dash["panels"].([]any) {
		panel := p.(map[string]any)
		id := panel["id"].(float64)
		require.False(t, ids[id], "duplicate panel id %v", id)
		ids[id] = true
		pos := panel["gridPos"].(map[string]any)
		require.LessOrEqual(t, pos["x"].(float64)+pos["w"].(float64), 24.0, "panel %q overflows the grid", panel["title"])
	}

	used := map[string]bool{}
	for _, q := range queries(t, dash) {
		names := metricName.FindAllString(q, -1)
		require.NotEmpty(t, names, "query names no PairDB metric: %s", q)
		for _, n := range names {
			for _, h := range histograms {
				if n == h+"_bucket" || n == h+"_sum" || n == h+"_count" {
					n = h
				}
			}
			_, ok := dashboardMetrics[n]
			require.True(t, ok, "the dashboard queries %s, which is not in the allow-list (a typo, or a metric the code does not define)", n)
			require.False(t, slices.Contains(histograms, n) && !strings.Contains(q, n+"_"),
				"histogram %s must be queried through _bucket, _sum or _count: %s", n, q)
			used[n] = true
		}
	}
	for name := range dashboardMetrics {
		require.True(t, used[name], "%s is allow-listed but no panel shows it", name)
	}
}

// TestDashboardMetricsAreDefined checks the allow-list against the code: each
// defined metric's source fragment is in a non-test Go file, and the process
// metrics are what metrics.WriteProcessMetrics writes.
func TestDashboardMetricsAreDefined(t *testing.T) {
	var src bytes.Buffer
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	require.NoError(t, err)

	var process bytes.Buffer
	metrics.WriteProcessMetrics(&process)

	for name, from := range dashboardMetrics {
		switch from {
		case fromProcess:
			require.Regexp(t, `(?m)^`+name+` `, process.String(), "%s is not a process metric", name)
		default:
			require.True(t, bytes.Contains(src.Bytes(), []byte(from)), "no Go source defines %s (looked for %s)", name, from)
		}
	}
}
