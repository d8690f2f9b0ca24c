package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode"
)

// aeWait bounds every wait for an anti-entropy round.
const aeWait = 60 * time.Second

// aeCluster is a dev cluster whose storage nodes run with healing settings
// of the test's choosing: the dev nodes are stopped and restarted on their
// data directories (same incarnations) with the test's config.
type aeCluster struct {
	*harness
	tweak func(*storagenode.Config)

	mu    sync.Mutex
	nodes map[string]*cluster.StorageNode
	conns map[string]*nats.Conn
}

func startHealingCluster(t *testing.T, settings membership.Settings, tweak func(*storagenode.Config)) *aeCluster {
	t.Helper()
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, CleanupGrace: time.Hour, Cluster: settings})
	c := &aeCluster{harness: h, tweak: tweak, nodes: map[string]*cluster.StorageNode{}, conns: map[string]*nats.Conn{}}
	// Registered after the harness's cleanup, so it runs first: these
	// nodes stop before the dev cluster and its NATS server.
	t.Cleanup(func() {
		for _, id := range h.dev.NodeIDs() {
			if c.running(id) {
				c.stop(id)
			}
		}
	})
	for _, id := range h.dev.NodeIDs() {
		h.stopNode(id)
		c.start(id)
	}
	return c
}

func (c *aeCluster) running(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.nodes[id]
	return ok
}

func (c *aeCluster) start(id string) {
	c.t.Helper()
	nc, err := nats.Connect(c.dev.ClientURL(), nats.Name("pairdb-test-"+id), nats.MaxReconnects(-1))
	require.NoError(c.t, err)
	cfg := storagenode.DefaultConfig(id, filepath.Join(c.dir, id))
	cfg.Logger = zaptest.NewLogger(c.t, zaptest.Level(zap.WarnLevel)).Named(id)
	cfg.Metrics = c.dev.Metrics()
	cfg.CleanupGrace = time.Hour
	cfg.AntiEntropyInterval = time.Hour // rounds run on demand unless a test says otherwise
	cfg.AntiEntropyRate = 1 << 20
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := cluster.StartStorageNode(ctx, nc, cfg, 1)
	require.NoError(c.t, err)
	c.mu.Lock()
	c.nodes[id], c.conns[id] = n, nc
	c.mu.Unlock()
}

func (c *aeCluster) stop(id string) {
	c.t.Helper()
	c.mu.Lock()
	n, nc := c.nodes[id], c.conns[id]
	delete(c.nodes, id)
	delete(c.conns, id)
	c.mu.Unlock()
	require.NoError(c.t, n.Stop(ctxT(c.t)))
	nc.Close()
}

// repair runs one round on node (for tenant, "" for all) and waits for it.
func (c *aeCluster) repair(node, tenant string) *pb.RepairStatus {
	c.t.Helper()
	return runRepair(c.t, c.c, node, tenant)
}

// runRepair runs one anti-entropy round on node through c and waits for it.
func runRepair(t *testing.T, c *client.Client, node, tenant string) *pb.RepairStatus {
	t.Helper()
	st, err := c.StartRepair(ctxT(t), node, tenant)
	require.NoError(t, err)
	require.NotEmpty(t, st.GetRoundId())
	require.Eventually(t, func() bool {
		st, err = c.RepairStatus(ctxT(t), node, st.GetRoundId())
		require.NoError(t, err)
		return st.GetState() != "queued" && st.GetState() != "running"
	}, aeWait, 5*time.Millisecond)
	return st
}

// applyTo mints a version on node and merges it into others: a write the
// remaining replicas missed, as if every message to them was lost and no
// hint survived.
func (c *aeCluster) applyTo(key string, ctx dvv.VV, value string, tombstone bool, node string, others ...string) dvv.Object {
	c.t.Helper()
	req := &pb.ApplyRequest{TenantId: "default", Key: key, Tombstone: tombstone, Context: dvvpb.ClockToProto(ctx),
		Policy: pb.ConflictPolicy_SIBLINGS, DeadlineUnixMs: soon()}
	if !tombstone {
		req.Value = []byte(value)
	}
	resp := &pb.ApplyResponse{}
	require.NoError(c.t, bus.Request(ctxT(c.t), c.nc, bus.Subjects{}.Node(node, bus.OpApply), req, resp))
	for _, o := range others {
		require.NoError(c.t, bus.Request(ctxT(c.t), c.nc, bus.Subjects{}.Node(o, bus.OpMerge), &pb.MergeRequest{
			TenantId: "default", Key: key, Object: resp.GetObject(), Policy: pb.ConflictPolicy_SIBLINGS,
		}, &pb.MergeResponse{}))
	}
	return dvvpb.ObjectFromProto(resp.GetObject())
}

// requireSame checks that every node holds an equal object for every key
// (or that none holds it), and returns how many keys differ otherwise.
func (c *aeCluster) differing(keys []string) int {
	c.t.Helper()
	nodes := c.dev.NodeIDs()
	n := 0
	for _, k := range keys {
		want, wantFound := c.readNode(nodes[0], "default", k)
		for _, id := range nodes[1:] {
			got, found := c.readNode(id, "default", k)
			if found != wantFound || !dvv.Equal(want, got) {
				n++
				break
			}
		}
	}
	return n
}

func (c *aeCluster) metric(name, node string) uint64 {
	return c.dev.Metrics().GetOrCreateCounter(fmt.Sprintf(`%s{node=%q}`, name, node)).Get()
}

// A replica that missed writes (hints lost or expired) is healed by one
// anti-entropy round on any replica: pulled when the round runs on the
// replica that missed them, pushed when it runs on another.
func TestAntiEntropyHealsMissedWrites(t *testing.T) {
	c := startHealingCluster(t, membership.Settings{}, nil)
	base := c.putKeys("base", 500, "all")
	const missed = 400
	var keys []string
	for i := range missed {
		keys = append(keys, fmt.Sprintf("missed-3-%d", i))
	}
	// node-3 misses new keys, an overwrite and a delete.
	for _, k := range keys {
		c.applyTo(k, nil, "v-"+k, false, "node-1", "node-2")
	}
	cur, _ := c.readNode("node-1", "default", base[0])
	c.applyTo(base[0], cur.Clock, "overwritten", false, "node-1", "node-2")
	cur, _ = c.readNode("node-1", "default", base[1])
	c.applyTo(base[1], cur.Clock, "", true, "node-2", "node-1")
	all := append(append([]string{}, base...), keys...)
	require.Equal(t, missed+2, c.differing(all))

	// Run on node-1: node-3 is healed by push.
	start := time.Now()
	st := c.repair("node-1", "")
	took := time.Since(start)
	require.Equal(t, "done", st.GetState(), st.GetError())
	require.Zero(t, c.differing(all), "every replica holds the same objects after one round")
	require.EqualValues(t, missed+2, st.GetKeysFixed())
	require.Positive(t, st.GetDigestsCompared())
	require.Equal(t, st.GetArcsTotal(), st.GetArcsDone())
	t.Logf("round on node-1 pushed %d keys to node-3 in %s (%d arcs, %d digests compared)",
		st.GetKeysFixed(), took, st.GetArcsTotal(), st.GetDigestsCompared())

	// Now node-2 misses writes and runs the round itself: it pulls.
	keys = keys[:0]
	for i := range missed {
		keys = append(keys, fmt.Sprintf("missed-2-%d", i))
		c.applyTo(keys[i], nil, "v", false, "node-3", "node-1")
	}
	all = append(all, keys...)
	require.Equal(t, missed, c.differing(all))
	start = time.Now()
	st = c.repair("node-2", "default")
	require.Equal(t, "done", st.GetState(), st.GetError())
	require.Zero(t, c.differing(all))
	t.Logf("round on node-2 pulled %d keys in %s", st.GetKeysFixed(), time.Since(start))
	require.EqualValues(t, missed, c.metric("pairdb_antientropy_keys_fixed_total", "node-2"))

	// In sync: a round fixes nothing and only compares top-level digests.
	st = c.repair("node-3", "")
	require.Equal(t, "done", st.GetState(), st.GetError())
	require.Zero(t, st.GetKeysFixed())
	require.Equal(t, 2*st.GetArcsTotal(), st.GetDigestsCompared(), "one digest per arc and peer")
	got, err := c.c.Get(ctxT(t), base[0], client.ReadConsistency("one"))
	require.NoError(t, err)
	require.Equal(t, []string{"overwritten"}, values(got))
}

// Scheduled rounds heal without anyone asking.
func TestAntiEntropyRunsOnSchedule(t *testing.T) {
	c := startHealingCluster(t, membership.Settings{}, func(cfg *storagenode.Config) { cfg.AntiEntropyInterval = 100 * time.Millisecond })
	var keys []string
	for i := range 100 {
		keys = append(keys, fmt.Sprintf("k-%d", i))
		c.applyTo(keys[i], nil, "v", false, "node-2")
	}
	require.Eventually(t, func() bool { return c.differing(keys) == 0 }, aeWait, 20*time.Millisecond)
}

// A node whose data dir was wiped comes back as a new incarnation; the
// re-add refills it by transfer, and a repair round then finds (and fixes)
// nothing missing.
func TestAntiEntropyAfterWipedDataDir(t *testing.T) {
	c := startHealingCluster(t, membership.Settings{}, nil)
	keys := c.putKeys("wipe", 300, "all")
	c.stop("node-3")
	require.NoError(t, os.RemoveAll(filepath.Join(c.dir, "node-3")))
	c.start("node-3")
	c.mu.Lock()
	inc := c.nodes["node-3"].Incarnation()
	c.mu.Unlock()
	require.Eventually(t, func() bool {
		resp, err := c.c.ListNodes(ctxT(t))
		if err != nil {
			return false
		}
		for _, n := range resp.GetNodes() {
			if n.GetNodeId() == "node-3" {
				return n.GetIncarnation() == inc && n.GetState() == "NORMAL"
			}
		}
		return false
	}, aeWait, 10*time.Millisecond, "the wiped node is re-added")
	// Transfers verify by digest; rounds on every node confirm it.
	for _, id := range c.dev.NodeIDs() {
		st := c.repair(id, "")
		require.Equal(t, "done", st.GetState(), st.GetError())
	}
	require.Zero(t, c.differing(keys))
}

// Delete while a replica is down; it comes back after the tombstone is old
// enough to purge by time alone; the key stays deleted everywhere.
func TestDeletedKeyIsNeverResurrected(t *testing.T) {
	const grace = 300 * time.Millisecond
	c := startHealingCluster(t, membership.Settings{TombstoneGrace: grace, HintMaxAge: grace}, nil)
	keys := c.putKeys("del", 50, "all")
	victim := keys[0]
	c.stop("node-3")
	// node-3 misses the delete (no hint: written straight to the replicas).
	cur, found := c.readNode("node-1", "default", victim)
	require.True(t, found)
	tomb := c.applyTo(victim, cur.Clock, "", true, "node-1", "node-2")
	deleted := time.Now()

	// Old enough by time, but node-3 cannot be compared: nothing is purged.
	time.Sleep(time.Until(deleted.Add(2 * grace)))
	st := c.repair("node-1", "")
	require.Equal(t, "failed", st.GetState(), "the round cannot reach node-3")
	require.Contains(t, st.GetError(), "node-3")
	require.Zero(t, st.GetTombstonesPurged())
	_, found = c.readNode("node-1", "default", victim)
	require.True(t, found, "the tombstone is kept while a replica may still hold the value")

	// node-3 returns with the old value.
	c.start("node-3")
	old, found := c.readNode("node-3", "default", victim)
	require.True(t, found)
	require.NotEmpty(t, old.Live())

	// node-2's round pulls node-3's stale value (it changes nothing: the
	// tombstone descends it) and pushes the tombstone to node-3. The
	// digests then agree, so node-2 purges.
	st = c.repair("node-2", "")
	require.Equal(t, "done", st.GetState(), st.GetError())
	require.EqualValues(t, 1, st.GetTombstonesPurged())
	got, found := c.readNode("node-3", "default", victim)
	require.True(t, found)
	require.Empty(t, got.Live(), "node-3 got the tombstone")
	require.True(t, tomb.Clock.Descends(old.Clock))
	for _, id := range []string{"node-1", "node-3"} {
		st = c.repair(id, "")
		require.Equal(t, "done", st.GetState(), st.GetError())
		require.EqualValues(t, 1, st.GetTombstonesPurged(), id)
	}
	for _, id := range c.dev.NodeIDs() {
		_, found := c.readNode(id, "default", victim)
		require.False(t, found, "%s purged the tombstone", id)
		require.EqualValues(t, 1, c.metric("pairdb_tombstones_purged_total", id))
	}
	resp, err := c.c.Get(ctxT(t), victim, client.ReadConsistency("all"))
	require.NoError(t, err)
	require.False(t, resp.GetFound(), "the key stays deleted")
	// Further rounds neither copy tombstones back nor bring the value back.
	for _, id := range c.dev.NodeIDs() {
		st = c.repair(id, "")
		require.Equal(t, "done", st.GetState(), st.GetError())
		require.Zero(t, st.GetKeysFixed(), id)
	}
	require.Zero(t, c.differing(keys))

	// Written again without context, the key is a new value everywhere.
	_, err = c.c.Put(ctxT(t), victim, []byte("again"), client.Consistency("all"))
	require.NoError(t, err)
	resp, err = c.c.Get(ctxT(t), victim, client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, []string{"again"}, values(resp))
}
