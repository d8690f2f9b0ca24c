package coordinator

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// labels are the label values of one series (unused ones empty).
type labels [3]string

// seriesVec caches one metric family's series by label values, so a
// request does not format a series name and look it up in the set on every
// call. Label values come from small closed sets (operations, levels,
// error codes, node ids), so the cache stays bounded.
type seriesVec[T any] struct {
	format string // fmt format of the full name, one verb per label
	create func(name string) T
	series sync.Map // labels → T
}

func newCounterVec(set *metrics.Set, format string) *seriesVec[*metrics.Counter] {
	return &seriesVec[*metrics.Counter]{format: format, create: set.GetOrCreateCounter}
}

func newHistogramVec(set *metrics.Set, format string) *seriesVec[*metrics.PrometheusHistogram] {
	return &seriesVec[*metrics.PrometheusHistogram]{format: format, create: set.GetOrCreatePrometheusHistogram}
}

func (v *seriesVec[T]) with(l labels) T {
	if x, ok := v.series.Load(l); ok {
		return x.(T)
	}
	args := make([]any, strings.Count(v.format, "%"))
	for i := range args {
		args[i] = l[i]
	}
	x, _ := v.series.LoadOrStore(l, v.create(fmt.Sprintf(v.format, args...)))
	return x.(T)
}

// serviceMetrics keeps the original PairDB metric names where they fit
// (shared/upstream/coordinator.md §8.2). Tenant ids are deliberately not a
// label: unbounded label values would grow the series count with tenants.
// The one exception is the rate-limit pair, for tenants an operator gave a
// limit (see Service.admit).
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
	readHedges      *metrics.Counter
	staleResends    *metrics.Counter

	minterReassigned *metrics.Counter

	requests, requestErrors, quorumFailures *seriesVec[*metrics.Counter]
	outcomeUnknown, skewExceeded            *seriesVec[*metrics.Counter]
	clockSkew                               *seriesVec[*metrics.Gauge]
	replicaCalls, hintsStored, hintsFailed  *seriesVec[*metrics.Counter]
	tenantRequests, tenantThrottled         *seriesVec[*metrics.Counter]
	duration                                *seriesVec[*metrics.PrometheusHistogram]
}

func newServiceMetrics(set *metrics.Set) *serviceMetrics {
	return &serviceMetrics{
		set:              set,
		tenantHits:       set.GetOrCreateCounter(`coordinator_cache_hits_total{cache_type="tenant"}`),
		tenantMisses:     set.GetOrCreateCounter(`coordinator_cache_misses_total{cache_type="tenant"}`),
		tenantStale:      set.GetOrCreateCounter(`coordinator_cache_stale_served_total{cache_type="tenant"}`),
		idempotencyHits:  set.GetOrCreateCounter(`coordinator_cache_hits_total{cache_type="idempotency"}`),
		repairsDropped:   set.GetOrCreateCounter(`coordinator_repairs_total{status="dropped"}`),
		repairsOK:        set.GetOrCreateCounter(`coordinator_repairs_total{status="ok"}`),
		repairsFailed:    set.GetOrCreateCounter(`coordinator_repairs_total{status="failed"}`),
		conflicts:        set.GetOrCreateCounter(`coordinator_conflicts_total`),
		readHedges:       set.GetOrCreateCounter(`coordinator_read_hedges_total`),
		staleResends:     set.GetOrCreateCounter(`coordinator_stale_epoch_resends_total`),
		minterReassigned: set.GetOrCreateCounter(`coordinator_minter_reassigned_total`),
		outcomeUnknown:   newCounterVec(set, `coordinator_outcome_unknown_total{operation=%q}`),
		skewExceeded:     newCounterVec(set, `coordinator_clock_skew_exceeded_total{node_id=%q}`),
		clockSkew: &seriesVec[*metrics.Gauge]{format: `coordinator_node_clock_skew_seconds{node_id=%q}`,
			create: func(name string) *metrics.Gauge { return set.GetOrCreateGauge(name, nil) }},

		requests:       newCounterVec(set, `coordinator_requests_total{operation=%q,consistency=%q}`),
		requestErrors:  newCounterVec(set, `coordinator_request_errors_total{operation=%q,error_type=%q}`),
		quorumFailures: newCounterVec(set, `coordinator_quorum_failures_total{operation=%q,consistency=%q}`),
		replicaCalls:   newCounterVec(set, `coordinator_replica_%s_total{node_id=%q,status=%q}`),
		hintsStored:    newCounterVec(set, `pairdb_hints_stored_total{node=%q}`),
		hintsFailed:    newCounterVec(set, `pairdb_hints_failed_total{node=%q}`),
		duration:       newHistogramVec(set, `coordinator_request_duration_seconds{operation=%q,consistency=%q}`),

		tenantRequests:  newCounterVec(set, `coordinator_tenant_requests_total{tenant=%q,kind=%q}`),
		tenantThrottled: newCounterVec(set, `coordinator_tenant_throttled_total{tenant=%q,kind=%q}`),
	}
}

// request records one client request's outcome and latency.
func (m *serviceMetrics) request(op, consistency string, start time.Time, code string) {
	m.requests.with(labels{op, consistency}).Inc()
	m.duration.with(labels{op, consistency}).UpdateDuration(start)
	if code != "" {
		m.requestErrors.with(labels{op, code}).Inc()
	}
}

func (m *serviceMetrics) quorumFailure(op, consistency string) {
	m.quorumFailures.with(labels{op, consistency}).Inc()
}

// replica records one call to one storage node.
func (m *serviceMetrics) replica(kind, node string, err error) {
	status := "ok"
	if err != nil {
		status = "error"
	}
	m.replicaCalls.with(labels{kind, node, status}).Inc()
}

// hint records one hint the coordinator tried to store for node: stored, or
// failed (the store was unreachable; anti-entropy must heal that write).
func (m *serviceMetrics) hint(node string, err error) {
	if err != nil {
		m.hintsFailed.with(labels{node}).Inc()
		return
	}
	m.hintsStored.with(labels{node}).Inc()
}
