package tests

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/schemas/pairdbpb"
)

// TestPlacementInputsComeFromTheRingLog bootstraps a cluster with 16 ring
// points per node. Every storage node reads the count (and the durations
// safety depends on) from the ring log, with no setting of its own, and
// computes the coordinators' replica sets; a coordinator configured
// otherwise refuses to start, saying which setting disagrees. A
// replication-factor change reaches the nodes through the log alone.
func TestPlacementInputsComeFromTheRingLog(t *testing.T) {
	settings := membership.Settings{VNodes: 16, HintMaxAge: time.Hour, TombstoneGrace: 2 * time.Hour}
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, DefaultTenantRF: 2, Cluster: settings})
	ctx := ctxT(t)
	coord := h.dev.Coordinators()[0].Ring.State()
	require.Equal(t, settings, coord.Settings)
	check := func(rf uint32) {
		t.Helper()
		coord := h.dev.Coordinators()[0].Ring.State()
		for _, id := range h.dev.NodeIDs() {
			require.NoError(t, h.dev.WaitFolded(ctx, coord.Seq))
			st := h.dev.Node(id).RingState()
			require.Equal(t, settings, st.Settings, id)
			cur, _ := st.TenantRF("default")
			require.Equal(t, rf, cur, "%s's replication factor of tenant default", id)
			for i := uint64(0); i < 200; i++ {
				hash := i * 0x9e3779b97f4a7c15
				want, _ := coord.ReplicaSets("default", hash)
				got, _ := st.ReplicaSets("default", hash)
				require.Equal(t, want, got, "%s places hash %d elsewhere", id, hash)
			}
		}
	}
	check(2)

	for _, tc := range []struct {
		mine membership.Settings
		want string
	}{
		{membership.Settings{VNodes: 150, HintMaxAge: time.Hour, TombstoneGrace: 2 * time.Hour}, "virtual nodes are 150 here but 16 in the ring log"},
		{membership.Settings{VNodes: 16, HintMaxAge: 3 * time.Hour, TombstoneGrace: 4 * time.Hour}, "hint_max_age is 3h0m0s here but 1h0m0s in the ring log"},
		{membership.Settings{VNodes: 16, HintMaxAge: time.Hour, TombstoneGrace: 240 * time.Hour}, "tombstone_grace is 240h0m0s here but 2h0m0s in the ring log"},
	} {
		nc, err := nats.Connect(h.dev.ClientURL(), nats.CustomInboxPrefix(bus.CoordinatorInbox))
		require.NoError(t, err)
		_, err = cluster.StartCoordinator(ctx, nc, cluster.CoordinatorConfig{
			Cluster: tc.mine, StreamReplicas: 1, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		})
		nc.Close()
		require.ErrorContains(t, err, tc.want)
	}

	up, err := h.c.UpdateTenant(ctx, &pairdbpb.UpdateTenantRequest{TenantId: "default", ReplicationFactor: ptr(uint32(3))})
	require.NoError(t, err)
	waitMigration(t, h, up.GetMigrationId())
	check(3)
	_, err = h.c.Put(ctx, "k", []byte("v"), client.Consistency("all"))
	require.NoError(t, err)
}
