package coordinator

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// serviceMetrics keeps the original PairDB metric names where they fit
// (shared/upstream/coordinator.md §8.2). Tenant ids are deliberately not a
// label: unbounded label values would grow the series count with tenants.
type serviceMetrics struct {
	set             *metrics.Set
	tenantHits      *metrics.Counter
	tenantMisses    *metrics.Counter
	tenantStale     *metrics.Counter
	idempotencyHits *metrics.Counter
	repairsDropped  *metrics.Counter
	repairsOK       *metrics.Counter
	repairsFailed   *metrics.Counter
	conflicts       *metrics.Counter
}

func newServiceMetrics(set *metrics.Set) *serviceMetrics {
	return &serviceMetrics{
		set:             set,
		tenantHits:      set.GetOrCreateCounter(`coordinator_cache_hits_total{cache_type="tenant"}`),
		tenantMisses:    set.GetOrCreateCounter(`coordinator_cache_misses_total{cache_type="tenant"}`),
		tenantStale:     set.GetOrCreateCounter(`coordinator_cache_stale_served_total{cache_type="tenant"}`),
		idempotencyHits: set.GetOrCreateCounter(`coordinator_cache_hits_total{cache_type="idempotency"}`),
		repairsDropped:  set.GetOrCreateCounter(`coordinator_repairs_total{status="dropped"}`),
		repairsOK:       set.GetOrCreateCounter(`coordinator_repairs_total{status="ok"}`),
		repairsFailed:   set.GetOrCreateCounter(`coordinator_repairs_total{status="failed"}`),
		conflicts:       set.GetOrCreateCounter(`coordinator_conflicts_total`),
	}
}

// request records one client request's outcome and latency.
func (m *serviceMetrics) request(op, consistency string, start time.Time, code string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`coordinator_requests_total{operation=%q,consistency=%q}`, op, consistency)).Inc()
	m.set.GetOrCreatePrometheusHistogram(fmt.Sprintf(`coordinator_request_duration_seconds{operation=%q,consistency=%q}`, op, consistency)).UpdateDuration(start)
	if code != "" {
		m.set.GetOrCreateCounter(fmt.Sprintf(`coordinator_request_errors_total{operation=%q,error_type=%q}`, op, code)).Inc()
	}
}

func (m *serviceMetrics) quorumFailure(op, consistency string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`coordinator_quorum_failures_total{operation=%q,consistency=%q}`, op, consistency)).Inc()
}

// replica records one call to one storage node.
func (m *serviceMetrics) replica(kind, node string, err error) {
	status := "ok"
	if err != nil {
		status = "error"
	}
	m.set.GetOrCreateCounter(fmt.Sprintf(`coordinator_replica_%s_total{node_id=%q,status=%q}`, kind, node, status)).Inc()
}

// hint records one hint the coordinator tried to store for node: stored, or
// failed (the store was unreachable; anti-entropy must heal that write).
func (m *serviceMetrics) hint(node string, err error) {
	name := `pairdb_hints_stored_total{node=%q}`
	if err != nil {
		name = `pairdb_hints_failed_total{node=%q}`
	}
	m.set.GetOrCreateCounter(fmt.Sprintf(name, node)).Inc()
}
