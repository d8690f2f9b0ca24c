package tests

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// TestLastWriteWinsHoldsInTransfersAndAntiEntropy: a last-write-wins
// tenant's keys whose replicas missed each other's writes (one holds the
// earlier value, another the later) end with the later value alone on
// every replica, whether a node gaining the key pulls both (a transfer) or
// anti-entropy reconciles them: every merge path applies the tenant's
// policy, not only the write path.
func TestLastWriteWinsHoldsInTransfersAndAntiEntropy(t *testing.T) {
	h := startMembershipCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "lww", ReplicationFactor: 3, ConflictPolicy: "last_write_wins"})
	require.NoError(t, err)
	early, late := h.ghostActor("early"), h.ghostActor("late")
	st := h.dev.Coordinators()[0].Ring.State()
	const keys = 60
	for i := range keys {
		key := fmt.Sprint("k-", i)
		cur, _ := st.ReplicaSets("lww", keyspace.Hash("lww", key))
		for j, o := range []dvv.Object{
			{Siblings: []dvv.Sibling{{Value: []byte("early"), Dot: dvv.Dot{Actor: early, Counter: 1}, TimestampMs: 1000}}, Clock: dvv.VV{early: 1}},
			{Siblings: []dvv.Sibling{{Value: []byte("late"), Dot: dvv.Dot{Actor: late, Counter: 1}, TimestampMs: 2000}}, Clock: dvv.VV{late: 1}},
		} {
			require.NoError(t, bus.Request(ctx, h.nc, bus.Subjects{}.Node(cur[j], bus.OpMerge), &pb.MergeRequest{
				TenantId: "lww", Key: key, Object: dvvpb.ObjectToProto(o), Policy: pb.ConflictPolicy_LAST_WRITE_WINS, Epoch: st.Epoch,
			}, new(pb.MergeResponse)))
		}
	}
	live := func(node, key string) []string {
		o, _ := h.readNode(node, "lww", key)
		var out []string
		for _, s := range o.Live() {
			out = append(out, string(s.Value))
		}
		return out
	}

	// A fourth node pulls what it gains from every replica.
	h.startNode("node-4")
	h.waitRegistered("node-4")
	resp, err := h.c.AddNodes(ctx, "node-4")
	require.NoError(t, err)
	h.waitMigration(resp.GetMigrationId())
	st = h.dev.Coordinators()[0].Ring.State()
	gained := 0
	for i := range keys {
		key := fmt.Sprint("k-", i)
		if cur, _ := st.ReplicaSets("lww", keyspace.Hash("lww", key)); slices.Contains(cur, "node-4") {
			gained++
			require.Equal(t, []string{"late"}, live("node-4", key), "%s pulled by node-4", key)
		}
	}
	require.Positive(t, gained, "node-4 gained some of the keys")

	// Anti-entropy reconciles the rest.
	for _, n := range []string{"node-1", "node-2", "node-3", "node-4"} {
		require.Equal(t, "done", runRepair(t, h.c, n, "lww").GetState(), "repair round on %s", n)
	}
	for i := range keys {
		key := fmt.Sprint("k-", i)
		cur, _ := st.ReplicaSets("lww", keyspace.Hash("lww", key))
		for _, n := range cur {
			require.Equal(t, []string{"late"}, live(n, key), "%s on %s after anti-entropy", key, n)
		}
	}
}
