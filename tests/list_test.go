package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/coordinator"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// putMany writes n keys "<prefix>NNNN" at QUORUM (in batches) and returns
// them with their values.
func (h *harness) putMany(prefix string, n int) map[string]string {
	h.t.Helper()
	want := map[string]string{}
	var items []*pb.PutRequest
	for i := range n {
		k := fmt.Sprintf("%s%04d", prefix, i)
		want[k] = "v-" + k
		items = append(items, &pb.PutRequest{Key: k, Value: []byte(want[k])})
	}
	puts, err := h.c.PutMany(ctxT(h.t), items, client.Consistency("quorum"))
	require.NoError(h.t, err)
	for _, p := range puts {
		require.Nil(h.t, p.GetError(), "put %s", p.GetKey())
	}
	return want
}

// listAll walks the tenant's keys with c from token and returns what it saw,
// failing on a key seen twice.
func listAll(t *testing.T, c *client.Client, req *pb.ListRequest) map[string]string {
	t.Helper()
	got := map[string]string{}
	for it, err := range c.List(ctxT(t), req) {
		require.NoError(t, err)
		_, dup := got[it.GetKey()]
		require.False(t, dup, "key %q listed twice", it.GetKey())
		require.NotEmpty(t, it.GetContext())
		v := ""
		if sibs := it.GetSiblings(); len(sibs) > 0 {
			v = string(sibs[0].GetValue())
		}
		got[it.GetKey()] = v
	}
	return got
}

// Every live key once across pages; deleted keys never; the prefix
// filters; keys_only leaves the values out.
func TestListEveryKeyOnce(t *testing.T) {
	h := startCluster(t, 3)
	want := h.putMany("k", 600)
	for k, v := range h.putMany("other/", 40) {
		want[k] = v
	}
	var dels []*pb.DeleteRequest
	gets, err := h.c.GetMany(ctxT(t), []string{"k0001", "k0100", "k0599", "other/0003"})
	require.NoError(t, err)
	for _, g := range gets {
		dels = append(dels, &pb.DeleteRequest{Key: g.GetKey(), Context: g.GetContext()})
		delete(want, g.GetKey())
	}
	deleted, err := h.c.DeleteMany(ctxT(t), dels)
	require.NoError(t, err)
	for _, d := range deleted {
		require.Nil(t, d.GetError())
	}

	require.Equal(t, want, listAll(t, h.c, &pb.ListRequest{PageSize: 37}))
	require.Equal(t, want, listAll(t, h.c, &pb.ListRequest{PageSize: 1000, Consistency: "all"}))
	require.Equal(t, want, listAll(t, h.c, &pb.ListRequest{Consistency: "one"}), "at ONE with every replica up, nothing is missing either")

	others := listAll(t, h.c, &pb.ListRequest{Prefix: "other/", KeysOnly: true})
	require.Len(t, others, 39)
	for k, v := range others {
		require.True(t, strings.HasPrefix(k, "other/"))
		require.Empty(t, v, "keys_only leaves the values out")
	}

	page, err := h.c.ListPage(ctxT(t), &pb.ListRequest{PageSize: 10})
	require.NoError(t, err)
	require.LessOrEqual(t, len(page.GetItems()), 10)
	require.NotEmpty(t, page.GetNextPageToken())
}

func TestListRefusesBadRequests(t *testing.T) {
	h := startCluster(t, 3)
	for _, req := range []*pb.ListRequest{
		{PageSize: 1001},
		{PageToken: "not a token"},
		{PageToken: "AAAA"},
		{Consistency: "most"},
	} {
		_, err := h.c.ListPage(ctxT(t), req)
		requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)
	}
	out, _ := h.jsonRequest("pairdb.v1.kv.default.list", `{"page_size":5}`)
	require.Nil(t, out["error"])
}

// A page token names a position: the walk goes on through a coordinator
// restart and a node added mid-walk, with a node stopped, and still sees
// every key acknowledged at QUORUM exactly once.
func TestListSurvivesRestartsAndMembershipChanges(t *testing.T) {
	h := startMembershipCluster(t, 3)
	want := h.putMany("m", 900)
	ctx := ctxT(t)

	got := map[string]string{}
	token := ""
	take := func() {
		page, err := h.c.ListPage(ctxT(t), &pb.ListRequest{PageSize: 50, PageToken: token})
		require.NoError(t, err)
		for _, it := range page.GetItems() {
			_, dup := got[it.GetKey()]
			require.False(t, dup, "key %q listed twice", it.GetKey())
			got[it.GetKey()] = string(it.GetSiblings()[0].GetValue())
		}
		token = page.GetNextPageToken()
	}
	take()
	take()

	// Another coordinator takes over between pages.
	old := h.dev.Coordinators()[0]
	_, err := h.dev.StartCoordinator(ctx)
	require.NoError(t, err)
	require.NoError(t, h.dev.StopCoordinator(ctx, old))
	take()

	// A node joins mid-walk, and a replica stops: QUORUM still holds.
	h.startNode("node-4")
	h.waitRegistered("node-4")
	resp, err := h.c.AddNodes(ctxT(t), "node-4")
	require.NoError(t, err)
	take()
	h.waitMigration(resp.GetMigrationId())
	take()
	h.stopNode("node-2")
	for token != "" {
		take()
	}
	require.Equal(t, want, got)
}

// An empty tenant lists nothing and says the walk is over.
func TestListEmptyTenant(t *testing.T) {
	h := startCluster(t, 3)
	page, err := h.c.ListPage(context.Background(), &pb.ListRequest{})
	require.NoError(t, err)
	require.Empty(t, page.GetItems())
	require.Empty(t, page.GetNextPageToken())
}

// Replicas that differ (one was down for the writes, and nothing repaired
// it: no hints, and anti-entropy has not run yet) still list every key acknowledged at
// QUORUM once: a page is merged only up to where every replica asked has
// scanned.
func TestListMergesReplicasThatDiffer(t *testing.T) {
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, Coordinator: cluster.CoordinatorConfig{NoHints: true}})
	early := h.putMany("a", 200)
	h.stopNode("node-1")
	late := h.putMany("b", 300)
	h.startNode("node-1")
	h.waitHealth("node-1", coordinator.Up)
	missing := 0
	for k := range late {
		if _, ok := h.readNode("node-1", "default", k); !ok {
			missing++
		}
	}
	require.Equal(t, len(late), missing, "node-1 holds none of the writes it missed")
	// With node-3 down, a QUORUM page must read node-1 and node-2.
	h.stopNode("node-3")
	for k, v := range late {
		early[k] = v
	}
	for _, size := range []uint32{7, 50, 1000} {
		require.Equal(t, early, listAll(t, h.c, &pb.ListRequest{PageSize: size}), "page size %d", size)
		// A prefix leaves pages short, so each ends at the frontier rather
		// than at a full page.
		require.Equal(t, late, listAll(t, h.c, &pb.ListRequest{PageSize: size, Prefix: "b"}), "page size %d", size)
	}
}
