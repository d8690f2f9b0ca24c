package coordinator

import (
	"bytes"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/stretchr/testify/require"
)

// A cached series is the set's series of the formatted name, created once.
func TestSeriesVecNamesAndCachesSeries(t *testing.T) {
	set := metrics.NewSet()
	v := newCounterVec(set, `coordinator_replica_%s_total{node_id=%q,status=%q}`)
	c := v.with(labels{"reads", "node-1", "ok"})
	c.Inc()
	require.Same(t, c, v.with(labels{"reads", "node-1", "ok"}))
	require.NotSame(t, c, v.with(labels{"reads", "node-2", "ok"}))
	require.Same(t, c, set.GetOrCreateCounter(`coordinator_replica_reads_total{node_id="node-1",status="ok"}`))

	h := newHistogramVec(set, `coordinator_request_duration_seconds{operation=%q,consistency=%q}`)
	h.with(labels{"get", "quorum"}).Update(0.001)
	var out bytes.Buffer
	set.WritePrometheus(&out)
	require.Contains(t, out.String(), `coordinator_request_duration_seconds_count{operation="get",consistency="quorum"} 1`)
}
