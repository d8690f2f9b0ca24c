package tests

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/internal/faults"
)

// Reads that ask R replicas (ReadRepairChance below 1): when one of them
// swallows the request, the read
// does not wait for the replica timeout: the hedge asks the remaining one
// and the read succeeds with the value written.
func TestReadHedgesPastASilentReplica(t *testing.T) {
	inj := faults.New(1)
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, Middleware: inj.Middleware, Coordinator: cluster.CoordinatorConfig{ReadRepairChance: 0.1}})
	ctx := ctxT(t)
	const keys = 30
	for i := range keys {
		_, err := h.c.Put(ctx, fmt.Sprintf("hedge-%d", i), []byte(fmt.Sprint(i)), client.Consistency("all"))
		require.NoError(t, err)
	}
	hedges := h.dev.Metrics().GetOrCreateCounter(`coordinator_read_hedges_total`)
	before := hedges.Get()

	// node-1 drops every read; it is among the first two replicas asked
	// for most keys.
	inj.Set(faults.Rule{Match: ".node.node-1.read", Drop: 1})
	for i := range keys {
		got, err := h.c.Get(ctx, fmt.Sprintf("hedge-%d", i), client.ReadConsistency("quorum"))
		require.NoError(t, err, "key %d", i)
		require.Equal(t, fmt.Sprint(i), string(got.GetValue()))
	}
	require.Greater(t, hedges.Get(), before, "some reads must have hedged past node-1")
	require.Positive(t, inj.Stats().Dropped, "node-1 dropped reads")
}
