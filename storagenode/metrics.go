package storagenode

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// nodeMetrics are the node's series in the injected set. Every series
// carries the node label, so several nodes in one process (dev mode, tests)
// can share a set.
type nodeMetrics struct {
	set      *metrics.Set
	node     string
	requests map[string]*metrics.Counter
	duration map[string]*metrics.PrometheusHistogram

	mergeChanged *metrics.Counter
	// forwardErr counts forwarded writes that could not be published.
	forwardErr   *metrics.Counter
	diskBytes    *metrics.Gauge
	keys         *metrics.Gauge
	heartbeatErr *metrics.Counter

	gainedCleared *metrics.Counter
	staleEpoch    *metrics.Counter
	originsSwept  *metrics.Counter
}

func newNodeMetrics(set *metrics.Set, node string, ops ...string) *nodeMetrics {
	m := &nodeMetrics{
		set:          set,
		node:         node,
		requests:     make(map[string]*metrics.Counter, len(ops)),
		duration:     make(map[string]*metrics.PrometheusHistogram, len(ops)),
		mergeChanged: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_merge_changed_total{node=%q}`, node)),
		forwardErr:   set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_forward_errors_total{node=%q}`, node)),
		diskBytes:    set.GetOrCreateGauge(fmt.Sprintf(`pairdb_node_disk_bytes{node=%q}`, node), nil),
		keys:         set.GetOrCreateGauge(fmt.Sprintf(`pairdb_node_keys{node=%q}`, node), nil),
		heartbeatErr: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_heartbeat_errors_total{node=%q}`, node)),

		gainedCleared: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_gained_orphans_cleared_total{node=%q}`, node)),
		staleEpoch:    set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_stale_epoch_total{node=%q}`, node)),
		originsSwept:  set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_origin_records_swept_total{node=%q}`, node)),
	}
	for _, op := range ops {
		m.requests[op] = set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_requests_total{node=%q,op=%q}`, node, op))
		m.duration[op] = set.GetOrCreatePrometheusHistogram(
			fmt.Sprintf(`pairdb_node_request_duration_seconds{node=%q,op=%q}`, node, op))
	}
	return m
}

// refused counts one request the node's checks refused (guard.go), by
// reason: a small closed set.
func (m *nodeMetrics) refused(reason string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_refused_total{node=%q,reason=%q}`, m.node, reason)).Inc()
}

// requestError counts one failed request. Error codes are a small closed
// set, so creating series on first use stays bounded.
func (m *nodeMetrics) requestError(op, code string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_request_errors_total{node=%q,op=%q,code=%q}`, m.node, op, code)).Inc()
}

// observe records one answered request (bus.Server.Observe): its count,
// its duration up to the reply, and its error code. It sees every request,
// including those refused before a handler ran (malformed body, overload,
// shutdown).
func (m *nodeMetrics) observe(op string, start time.Time, code string) {
	if c, ok := m.requests[op]; ok {
		c.Inc()
		m.duration[op].UpdateDuration(start)
	}
	if code != "" {
		m.requestError(op, code)
	}
}
