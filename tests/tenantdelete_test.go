package tests

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// tenantKeysEverywhere counts tenant's stored keys and origin records on
// every running node.
func (h *harness) tenantKeysEverywhere(tenant string) map[string]uint64 {
	h.t.Helper()
	out := map[string]uint64{}
	for _, id := range h.dev.NodeIDs() {
		n := h.dev.Node(id)
		if n == nil {
			continue
		}
		keys, err := n.TenantKeys(tenant)
		require.NoError(h.t, err)
		origins, err := n.Origins(tenant)
		require.NoError(h.t, err)
		out[id] = keys + uint64(len(origins))
	}
	return out
}

// TestDeletingATenantDeletesItsData: a tenant that holds data is not
// deleted without force; deleted with force, its data goes from every
// replica (a replica that was down when it was deleted drops it when it
// comes back, and drops the hints it missed meanwhile), its idempotency
// records go, and a tenant created again under the same id starts empty,
// even on the replica that still held the old data when it was created.
func TestDeletingATenantDeletesItsData(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "gone", ReplicationFactor: 3})
	require.NoError(t, err)
	c := client.New(h.nc, client.WithTenant("gone"), client.WithRetries(0))
	for i := range 40 {
		_, err := c.Put(ctx, fmt.Sprint("k-", i), []byte("old"), client.Consistency("all"), client.IdempotencyKey(fmt.Sprint("idem-", i)))
		require.NoError(t, err)
	}
	// node-3 misses some writes (hints wait for it) and is down for the
	// deletion and for the tenant's re-creation.
	h.stopNode("node-3")
	for i := 40; i < 50; i++ {
		_, err := c.Put(ctx, fmt.Sprint("k-", i), []byte("old"), client.Consistency("quorum"), client.IdempotencyKey(fmt.Sprint("idem-", i)))
		require.NoError(t, err)
	}

	_, err = h.c.DeleteTenant(ctx, &pb.DeleteTenantRequest{TenantId: "gone"})
	requireCode(t, err, pb.ErrorCode_TENANT_NOT_EMPTY)
	// node-3 is down, so whether it holds data cannot be told: force it.
	del, err := h.c.DeleteTenant(ctx, &pb.DeleteTenantRequest{TenantId: "gone", Force: true})
	require.NoError(t, err)
	_, err = c.Get(ctx, "k-1")
	requireCode(t, err, pb.ErrorCode_TENANT_NOT_FOUND)
	require.Eventually(t, func() bool {
		left := h.tenantKeysEverywhere("gone")
		return left["node-1"] == 0 && left["node-2"] == 0
	}, 20*time.Second, 20*time.Millisecond, "the running replicas drop the data")
	m, err := h.c.GetMigration(ctx, del.GetMigrationId())
	require.NoError(t, err)
	require.Equal(t, "running", m.GetState(), "node-3 has not dropped it yet")
	require.Equal(t, []string{"node-3"}, m.GetPendingNodes())

	// Created again while node-3 still holds the old data.
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "gone", ReplicationFactor: 3})
	require.NoError(t, err)
	h.startNode("node-3")
	require.Eventually(t, func() bool {
		m, err := h.c.GetMigration(ctx, del.GetMigrationId())
		return err == nil && m.GetState() == "completed"
	}, 20*time.Second, 20*time.Millisecond, "node-3 drops the old data when it comes back")
	require.Zero(t, h.tenantKeysEverywhere("gone")["node-3"], "node-3 dropped the old incarnation's data")

	for i := range 50 {
		got, err := c.Get(ctx, fmt.Sprint("k-", i), client.ReadConsistency("all"))
		require.NoError(t, err)
		require.False(t, got.GetFound(), "k-%d of the old tenant is gone", i)
	}
	// The old idempotency records went with it: the same key and payload
	// is a new write, not a duplicate of the old tenant's.
	resp, err := c.Put(ctx, "k-1", []byte("old"), client.Consistency("all"), client.IdempotencyKey("idem-1"))
	require.NoError(t, err)
	require.False(t, resp.GetDuplicate(), "an old idempotency record answered the new tenant")
	for _, n := range h.dev.NodeIDs() {
		require.Equal(t, "done", runRepair(t, h.c, n, "gone").GetState())
	}
	left := h.tenantKeysEverywhere("gone")
	for _, n := range h.dev.NodeIDs() {
		require.Equal(t, uint64(2), left[n], "node %s holds the new k-1 and its origin record, nothing of the old tenant", n)
	}
}
