package storagenode_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// TestGainedArcsStartEmptyAndObsoleteHintsAreDropped adds node c, whose
// disk still holds keys of an earlier life (orphans: a removed node added
// back, a cleanup that never ran). Every arc c gains starts empty, so no
// orphan outlives the change (it could predate a tombstone the replicas
// have purged). Hints for c minted before it gained the key's arc, or
// older than the cluster's hint_max_age, are obsolete: acked, not merged.
func TestGainedArcsStartEmptyAndObsoleteHintsAreDropped(t *testing.T) {
	_, nc := natstest.Start(t)
	r := newRingNet(t, nc)
	dirC := t.TempDir()
	e, err := engine.Open(dirC, engine.Options{CacheBytes: 8 << 20})
	require.NoError(t, err)
	orphans := make([]string, 200)
	for i := range orphans {
		orphans[i] = fmt.Sprintf("orphan-%03d", i)
		_, err := e.Apply("t", orphans[i], nil, []byte("stale"), false, dvv.Siblings, 0, 1, nil)
		require.NoError(t, err)
	}
	require.NoError(t, e.Close())

	a := startNode(t, nc, memberConfig(t, r, "a", t.TempDir()))
	startNode(t, nc, memberConfig(t, r, "b", t.TempDir()))
	r.bootstrap("a", "b")
	cfgC := memberConfig(t, r, "c", dirC)
	c1, err := storagenode.Start(nc, cfgC)
	require.NoError(t, err)
	r.waitState("c to register", registered("c"))
	st := r.start(&pb.ChangeStarted{MigrationId: "add-c", Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"c"}})
	start := st.Change.StartSeq
	var gainedArcs []membership.TenantMove
	for _, mv := range st.Moves() {
		if mv.Tenant == "t" && slices.Contains(mv.Gainers(), "c") {
			gainedArcs = append(gainedArcs, mv)
		}
	}
	inGained := func(key string) bool {
		h := keyspace.Hash("t", key)
		return slices.ContainsFunc(gainedArcs, func(mv membership.TenantMove) bool { return mv.Arc.Contains(h) })
	}
	end := r.waitState("the addition to finish", finished("add-c"))

	cleared := 0
	for _, k := range orphans {
		if inGained(k) {
			cleared++
			require.False(t, readAt(t, nc, "c", "t", k, end.Epoch).GetFound(), "orphan %s survived in a gained arc", k)
		}
	}
	require.Positive(t, cleared)
	require.EqualValues(t, cleared, counter(cfgC.Metrics, `pairdb_node_gained_orphans_cleared_total{node="c"}`))
	require.NoError(t, c1.Stop(context.Background()))

	// c again, on the same disk, with hints for a key of a gained arc.
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("hinted-%d", i); inGained(k) {
			key = k
		}
	}
	inbox := newFakeInbox()
	cfgC2 := memberConfig(t, r, "c", dirC)
	cfgC2.Hints = inbox
	hint := func(name, value string, epoch uint64, stored time.Time) *fakeHint {
		o := objectOf(a.Incarnation(), value)
		return &fakeHint{name: name, stored: stored, req: &pb.MergeRequest{
			TenantId: "t", Key: key, Object: dvvpb.ObjectToProto(o), Epoch: epoch}}
	}
	inbox.add(
		hint("before-gain", "old", start-1, time.Now()),
		hint("after-gain", "new", start, time.Now()),
		hint("too-old", "ancient", start, time.Now().Add(-membership.DefaultHintMaxAge-time.Minute)),
	)
	startNode(t, nc, cfgC2)
	require.Equal(t, map[string]string{"before-gain": "ack", "after-gain": "ack", "too-old": "ack"}, inbox.waitSettled(t, 3))
	got := dvvpb.ObjectFromProto(readAt(t, nc, "c", "t", key, end.Epoch).GetObject())
	var vals []string
	for _, s := range got.Live() {
		vals = append(vals, string(s.Value))
	}
	require.Equal(t, []string{"new"}, vals, "only the hint minted after the gain is merged")
	require.EqualValues(t, 2, counter(cfgC2.Metrics, `pairdb_node_hints_obsolete_total{node="c"}`))
}

// readAt reads key from node at epoch (the node waits to have folded it).
func readAt(t *testing.T, nc *nats.Conn, node, tenant, key string, epoch uint64) *pb.ReadResponse {
	t.Helper()
	resp := &pb.ReadResponse{}
	require.NoError(t, bus.Request(context.Background(), nc, subjects.Node(node, bus.OpRead),
		&pb.ReadRequest{TenantId: tenant, Key: key, Epoch: epoch}, resp))
	return resp
}
