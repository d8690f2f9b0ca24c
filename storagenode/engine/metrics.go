package engine

import (
	"fmt"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/pebble/v2"
)

// metricsRefresh is the longest a scrape reuses a snapshot of Pebble's
// metrics: DB.Metrics takes locks Pebble's own work needs, and every series
// below would otherwise take it once per scrape.
const metricsRefresh = time.Second

// pebbleMetrics exports Pebble's own metrics (DB.Metrics) as gauges in the
// node's metrics set, each labelled with the node id so several engines can
// share one set. Values come from a snapshot refreshed at most once per
// metricsRefresh, on scrape: nothing runs while nobody is looking.
//
// Series (node label on each):
//
//	pairdb_pebble_compactions_total          compactions completed
//	pairdb_pebble_compactions_in_progress    compactions running now
//	pairdb_pebble_compaction_debt_bytes      estimated compaction work outstanding
//	pairdb_pebble_flushes_total              memtable flushes completed
//	pairdb_pebble_l0_files                   sstables in L0
//	pairdb_pebble_l0_sublevels               L0 sublevels (write stalls start at 20 by default)
//	pairdb_pebble_read_amplification         sorted runs a point read may consult
//	pairdb_pebble_wal_files                  live WAL files
//	pairdb_pebble_wal_bytes                  live WAL size, logical
//	pairdb_pebble_wal_written_bytes_total    bytes written to the WAL, with its overhead
//	pairdb_pebble_memtable_bytes             memory held by memtables
//	pairdb_pebble_disk_usage_bytes           bytes on disk: tables, WAL, manifests
//	pairdb_pebble_table_bytes                live sstable bytes over all levels
//	pairdb_pebble_block_cache_bytes          block cache in use
//	pairdb_pebble_block_cache_hits_total     block cache hits
//	pairdb_pebble_block_cache_misses_total   block cache misses
//
// Pebble's counters restart at zero when the engine is reopened, which
// Prometheus' rate() treats as a counter reset.
type pebbleMetrics struct {
	set   *metrics.Set
	names []string

	// read takes a fresh snapshot; false once the engine is closed.
	read func() (*pebble.Metrics, bool)
	now  func() time.Time

	mu      sync.Mutex
	snap    *pebble.Metrics
	takenAt time.Time
}

// registerMetrics adds the engine's series to set under node's label. The
// returned value's unregister removes them (Close calls it), so an engine
// reopened in the same process, as the dev cluster does, registers afresh.
// nil set registers nothing.
func registerMetrics(set *metrics.Set, node string, read func() (*pebble.Metrics, bool)) *pebbleMetrics {
	if set == nil {
		return nil
	}
	p := &pebbleMetrics{set: set, read: read, now: time.Now}
	gauge := func(name string, f func(m *pebble.Metrics) float64) {
		full := fmt.Sprintf(`pairdb_pebble_%s{node=%q}`, name, node)
		// A series left by an engine that was not closed (a crashed test)
		// would make NewGauge panic; the newest engine owns the name.
		set.UnregisterMetric(full)
		set.NewGauge(full, func() float64 {
			m := p.snapshot()
			if m == nil {
				return 0
			}
			return f(m)
		})
		p.names = append(p.names, full)
	}
	gauge("compactions_total", func(m *pebble.Metrics) float64 { return float64(m.Compact.Count) })
	gauge("compactions_in_progress", func(m *pebble.Metrics) float64 { return float64(m.Compact.NumInProgress) })
	gauge("compaction_debt_bytes", func(m *pebble.Metrics) float64 { return float64(m.Compact.EstimatedDebt) })
	gauge("flushes_total", func(m *pebble.Metrics) float64 { return float64(m.Flush.Count) })
	gauge("l0_files", func(m *pebble.Metrics) float64 { return float64(m.Levels[0].TablesCount) })
	gauge("l0_sublevels", func(m *pebble.Metrics) float64 { return float64(m.Levels[0].Sublevels) })
	gauge("read_amplification", func(m *pebble.Metrics) float64 { return float64(m.ReadAmp()) })
	gauge("wal_files", func(m *pebble.Metrics) float64 { return float64(m.WAL.Files) })
	gauge("wal_bytes", func(m *pebble.Metrics) float64 { return float64(m.WAL.Size) })
	gauge("wal_written_bytes_total", func(m *pebble.Metrics) float64 { return float64(m.WAL.BytesWritten) })
	gauge("memtable_bytes", func(m *pebble.Metrics) float64 { return float64(m.MemTable.Size) })
	gauge("disk_usage_bytes", func(m *pebble.Metrics) float64 { return float64(m.DiskSpaceUsage()) })
	gauge("table_bytes", func(m *pebble.Metrics) float64 {
		t := m.Total()
		return float64(t.TablesSize)
	})
	gauge("block_cache_bytes", func(m *pebble.Metrics) float64 { return float64(m.BlockCache.Size) })
	gauge("block_cache_hits_total", func(m *pebble.Metrics) float64 { return float64(m.BlockCache.Hits) })
	gauge("block_cache_misses_total", func(m *pebble.Metrics) float64 { return float64(m.BlockCache.Misses) })
	return p
}

// snapshot returns Pebble's metrics, at most metricsRefresh old; after the
// engine closed, the last snapshot taken (nil if none).
func (p *pebbleMetrics) snapshot() *pebble.Metrics {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.snap != nil && p.now().Sub(p.takenAt) < metricsRefresh {
		return p.snap
	}
	if m, ok := p.read(); ok {
		p.snap, p.takenAt = m, p.now()
	}
	return p.snap
}

// unregister removes the series; safe on nil.
func (p *pebbleMetrics) unregister() {
	if p == nil {
		return
	}
	for _, name := range p.names {
		p.set.UnregisterMetric(name)
	}
}

// readMetrics is registerMetrics' view of the engine: a fresh DB.Metrics
// while the engine is open.
func (e *Engine) readMetrics() (*pebble.Metrics, bool) {
	if e.acquire() != nil {
		return nil, false
	}
	defer e.mu.RUnlock()
	return e.db.Metrics(), true
}
