package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/internal/faults"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// nodeState is node's state as `pairdb node list` shows it.
func (h *harness) nodeState(id string) (state, incarnation string) {
	h.t.Helper()
	resp, err := h.c.ListNodes(ctxT(h.t))
	require.NoError(h.t, err)
	for _, n := range resp.GetNodes() {
		if n.GetNodeId() == id {
			return n.GetState(), n.GetIncarnation()
		}
	}
	return "", ""
}

// TestWipedNodeIsRefilledBeforeItServesReads: on three nodes at RF 3, a
// QUORUM write lands on node-1 and node-2 only; node-1 then loses its disk.
// It comes back under a new incarnation and keeps its place: reads leave it
// out (QUORUM still meets R from node-2 and node-3, so the write is found;
// ALL cannot be met and says so), writes reach it, and `node list` shows it
// REFILLING until its refill, held here, completes. Then it holds the write.
func TestWipedNodeIsRefilledBeforeItServesReads(t *testing.T) {
	inj := faults.New(20261202)
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, Middleware: inj.Middleware, Coordinator: cluster.CoordinatorConfig{NoHints: true}})
	ctx := ctxT(t)
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
		_, err := h.c.Put(ctx, keys[i], []byte(keys[i]), client.Consistency("all"))
		require.NoError(t, err)
	}
	// node-3 misses the write (and, without hints, keeps missing it).
	cut := inj.Add(faults.Rule{Match: ".node.node-3.", Drop: 1})
	_, err := h.c.Put(ctx, "only-two", []byte("v"), client.Consistency("quorum"))
	require.NoError(t, err)
	cut()
	_, found := h.readNode("node-3", "default", "only-two")
	require.False(t, found)

	// node-1 loses its disk. Its refill waits on scans of the others.
	_, oldInc := h.nodeState("node-1")
	h.stopNode("node-1")
	require.NoError(t, os.RemoveAll(filepath.Join(h.dir, "node-1")))
	release := make(chan struct{})
	hold := inj.Add(faults.Rule{Match: ".scan", Hold: release})
	defer hold()
	h.startNode("node-1")
	require.Eventually(t, func() bool {
		state, inc := h.nodeState("node-1")
		return state == "REFILLING" && inc != oldInc
	}, 20*time.Second, 10*time.Millisecond, "node-1 is shown refilling")

	for range 20 {
		resp, err := h.c.Get(ctx, "only-two", client.ReadConsistency("quorum"))
		require.NoError(t, err, "a QUORUM read is met by the two replicas that hold their data")
		require.Equal(t, "v", string(resp.GetValue()))
	}
	for _, k := range keys {
		resp, err := h.c.Get(ctx, k, client.ReadConsistency("quorum"))
		require.NoError(t, err)
		require.Equal(t, k, string(resp.GetValue()))
	}
	_, err = h.c.Get(ctx, "only-two", client.ReadConsistency("all"))
	requireCode(t, err, pb.ErrorCode_UNAVAILABLE)
	_, err = h.c.Put(ctx, "during", []byte("d"), client.Consistency("all"))
	require.NoError(t, err, "the refilling replica takes writes")

	close(release)
	require.Eventually(t, func() bool {
		state, _ := h.nodeState("node-1")
		return state == "NORMAL"
	}, 20*time.Second, 10*time.Millisecond, "node-1 is refilled")
	for _, k := range append([]string{"only-two", "during"}, keys...) {
		_, found := h.readNode("node-1", "default", k)
		require.True(t, found, "node-1 holds %s again", k)
	}
	resp, err := h.c.Get(ctx, "only-two", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, "v", string(resp.GetValue()))
}

// TestReaddedNodeWithStaleDiskDoesNotBringBackPurgedKeys: a node is
// removed and keeps its disk (no cleanup yet); the key it held is deleted
// and the tombstone purged on the remaining replicas; the node is added
// back with that disk. The arcs it gains start empty, so the old value is
// gone: not served, not spread by anti-entropy.
func TestReaddedNodeWithStaleDiskDoesNotBringBackPurgedKeys(t *testing.T) {
	const grace = 300 * time.Millisecond
	h := startClusterWith(t, cluster.DevConfig{Nodes: 4, CleanupGrace: time.Hour,
		Cluster: membership.Settings{TombstoneGrace: grace, HintMaxAge: grace}})
	ctx := ctxT(t)
	const key = "victim"
	_, err := h.c.Put(ctx, key, []byte("old"), client.Consistency("all"))
	require.NoError(t, err)
	st := h.dev.Coordinators()[0].Ring.State()
	replicas, _ := st.ReplicaSets("default", keyspace.Hash("default", key))
	x := replicas[0]

	rm, err := h.c.RemoveNode(ctx, x, false)
	require.NoError(t, err)
	waitMigration(t, h, rm.GetMigrationId())
	_, found := h.readNode(x, "default", key)
	require.True(t, found, "the removed node still holds its old copy")

	got, err := h.c.Get(ctx, key, client.ReadConsistency("all"))
	require.NoError(t, err)
	_, err = h.c.Delete(ctx, key, client.WithContext(got.GetContext()), client.Consistency("all"))
	require.NoError(t, err)
	deleted := time.Now()
	time.Sleep(time.Until(deleted.Add(2 * grace)))
	members := h.dev.Coordinators()[0].Ring.State().Normal()
	for _, id := range members {
		st := runRepair(t, h.c, id, "")
		require.Equal(t, "done", st.GetState(), st.GetError())
	}
	for _, id := range members {
		_, found := h.readNode(id, "default", key)
		require.False(t, found, "%s purged the tombstone", id)
	}

	add, err := h.c.AddNodes(ctx, x)
	require.NoError(t, err)
	waitMigration(t, h, add.GetMigrationId())
	_, found = h.readNode(x, "default", key)
	require.False(t, found, "the re-added node must not keep the value whose tombstone was purged")
	for _, id := range h.dev.Coordinators()[0].Ring.State().Normal() {
		st := runRepair(t, h.c, id, "")
		require.Equal(t, "done", st.GetState(), st.GetError())
	}
	for _, level := range []string{"one", "quorum", "all"} {
		resp, err := h.c.Get(ctx, key, client.ReadConsistency(level))
		require.NoError(t, err)
		require.False(t, resp.GetFound(), "the key stays deleted at %s", level)
	}
}

// waitMigration waits until migration id has completed.
func waitMigration(t *testing.T, h *harness, id string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, running, ok := h.dev.Coordinators()[0].Ring.State().Migration(id)
		return ok && !running
	}, 30*time.Second, 10*time.Millisecond, "migration %s did not complete", id)
}
