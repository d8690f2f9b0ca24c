package heal

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// Metrics are the healing series in the node's set, labelled with the
// node. NewMetrics creates the ones every node exports from its start;
// hint replay and anti-entropy add theirs when they start.
type Metrics struct {
	set  *metrics.Set
	node string
	// mergeChanged is the node's count of merges that changed what it
	// stores, shared with its merge endpoint.
	mergeChanged  *metrics.Counter
	hintsObsolete *metrics.Counter
}

// NewMetrics creates the healing counters of node in set; mergeChanged is
// the node's own (pairdb_node_merge_changed_total).
func NewMetrics(set *metrics.Set, node string, mergeChanged *metrics.Counter) *Metrics {
	return &Metrics{
		set:           set,
		node:          node,
		mergeChanged:  mergeChanged,
		hintsObsolete: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_hints_obsolete_total{node=%q}`, node)),
	}
}

type aeMetrics struct {
	set      *metrics.Set
	node     string
	compared *metrics.Counter
	fixed    *metrics.Counter
	purged   *metrics.Counter
}

func newAEMetrics(set *metrics.Set, node string) *aeMetrics {
	return &aeMetrics{
		set:      set,
		node:     node,
		compared: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_antientropy_digests_compared_total{node=%q}`, node)),
		fixed:    set.GetOrCreateCounter(fmt.Sprintf(`pairdb_antientropy_keys_fixed_total{node=%q}`, node)),
		purged:   set.GetOrCreateCounter(fmt.Sprintf(`pairdb_tombstones_purged_total{node=%q}`, node)),
	}
}

func (m *aeMetrics) round(status string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`pairdb_antientropy_rounds_total{node=%q,status=%q}`, m.node, status)).Inc()
}
