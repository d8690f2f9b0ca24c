package transfer

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// Metrics are a Mover's series in the node's set, labelled with the node.
type Metrics struct {
	set             *metrics.Set
	node            string
	keysTransferred *metrics.Counter
	cleanupDeleted  *metrics.Counter
}

// NewMetrics creates the mover's counters in set; the node creates them at
// start, so they are exported (at zero) before any transfer runs.
func NewMetrics(set *metrics.Set, node string) *Metrics {
	return &Metrics{
		set:             set,
		node:            node,
		keysTransferred: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_migration_keys_transferred_total{node=%q}`, node)),
		cleanupDeleted:  set.GetOrCreateCounter(fmt.Sprintf(`pairdb_node_cleanup_deleted_keys_total{node=%q}`, node)),
	}
}

// Transfer outcomes, per (tenant, arc) a target pulls.
const (
	transferVerified = "verified" // digests matched, or a full pass found nothing new
	transferResumed  = "resumed"  // started from a checkpoint left by an earlier run
	transferFailed   = "failed"   // every source failed or the passes did not converge; retried
)

// transfer counts one transfer outcome (a closed set of statuses).
func (m *Metrics) transfer(status string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`pairdb_migration_transfers_total{node=%q,status=%q}`, m.node, status)).Inc()
}
