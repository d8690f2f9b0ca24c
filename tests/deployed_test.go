package tests

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/internal/deployedtest"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/natsauth"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode"
)

// deployedWait bounds every condition the deployed-cluster tests wait on.
const deployedWait = 30 * time.Second

// deployed is PairDB on a nats-server started from deploy/nats, every part
// as its own NATS user: one coordinator, the three example storage nodes,
// an operator and tenant acme's client.
type deployed struct {
	t        *testing.T
	ctx      context.Context
	s        *deployedtest.Server
	c        *deployedtest.Cluster
	coord    *cluster.Coordinator
	dirs     map[string]string
	operator *client.Client
	// opConn is the operator's connection (operator is a client on it).
	opConn *nats.Conn
	acme   *client.Client
	// asCoordinator is a connection of the coordinator user: what the
	// tests do in a coordinator's place (craft a write one replica missed).
	asCoordinator *nats.Conn
}

func startDeployed(t *testing.T) *deployed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	s := deployedtest.StartServer(t, t.Setenv)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("permission violations: %q", s.Violations())
		}
	})
	d := &deployed{t: t, ctx: ctx, s: s, dirs: map[string]string{}}
	d.c = deployedtest.NewCluster(t, s, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	d.c.Tweak = func(cfg *storagenode.Config) {
		cfg.AntiEntropyInterval = time.Hour // rounds run when the operator asks
		cfg.HeartbeatInterval = 200 * time.Millisecond
	}
	// The coordinator first: it creates the control plane, nodes wait for it.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	d.coord = d.c.StartCoordinator(sctx, cluster.CoordinatorConfig{})
	scancel()
	for _, id := range deployedtest.Nodes {
		d.dirs[id] = t.TempDir()
		d.c.StartNode(ctx, id, d.dirs[id])
	}
	d.opConn = s.Connect(t, natsauth.OperatorUser, bus.OperatorInbox)
	d.operator = client.New(d.opConn, client.WithTimeout(10*time.Second))
	d.acme = client.New(s.Connect(t, natsauth.TenantUser("acme"), ""), client.WithTenant("acme"), client.WithTimeout(10*time.Second))
	d.asCoordinator = s.Connect(t, natsauth.CoordinatorUser, bus.CoordinatorInbox)

	// The operator bootstraps the ring with the nodes, which registered by
	// asking the coordinator, and creates the tenant.
	_, err := d.operator.AddNodes(ctx, deployedtest.Nodes...)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(d.coord.Ring.State().Normal()) == 3 }, deployedWait, 10*time.Millisecond)
	_, err = d.operator.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "acme", ReplicationFactor: 3})
	require.NoError(t, err)
	return d
}

// requireNoViolations fails when any part's connection was refused
// anything: the shipped permissions must let every part do its work.
func (d *deployed) requireNoViolations() {
	d.t.Helper()
	require.Empty(d.t, d.s.Violations(), "a part did something its NATS user may not")
}

// holds waits until node's replica of acme's key holds value.
func (d *deployed) holds(node, key, value string) {
	d.t.Helper()
	require.Eventually(d.t, func() bool {
		n := d.c.Node(node)
		if n == nil {
			return false
		}
		obj, found, err := n.Local("acme", key)
		return err == nil && found && slices.ContainsFunc(obj.Live(), func(s dvv.Sibling) bool { return string(s.Value) == value })
	}, deployedWait, 10*time.Millisecond, "%s never held %s=%s", node, key, value)
}

// missedBy writes key=value at the other replicas only, as a coordinator
// whose messages to node were all lost and whose hint was too: minted at
// one replica, merged into the other.
func (d *deployed) missedBy(node, key, value string) {
	d.t.Helper()
	var others []string
	for _, id := range deployedtest.Nodes {
		if id != node {
			others = append(others, id)
		}
	}
	epoch := d.coord.Ring.State().Epoch
	applied := new(pb.ApplyResponse)
	require.NoError(d.t, bus.Request(d.ctx, d.asCoordinator, bus.Subjects{}.Node(others[0], bus.OpApply), &pb.ApplyRequest{
		TenantId: "acme", Key: key, Value: []byte(value), Policy: pb.ConflictPolicy_SIBLINGS, Epoch: epoch, DeadlineUnixMs: soon(),
	}, applied))
	require.NoError(d.t, bus.Request(d.ctx, d.asCoordinator, bus.Subjects{}.Node(others[1], bus.OpMerge), &pb.MergeRequest{
		TenantId: "acme", Key: key, Object: applied.GetObject(), Policy: pb.ConflictPolicy_SIBLINGS, Epoch: epoch,
	}, new(pb.MergeResponse)))
	_, found, err := d.c.Node(node).Local("acme", key)
	require.NoError(d.t, err)
	require.False(d.t, found, "%s missed %s", node, key)
}

// migrated waits for migration id to complete and returns it.
func (d *deployed) migrated(id string) *pb.Migration {
	d.t.Helper()
	var m *pb.Migration
	require.Eventually(d.t, func() bool {
		var err error
		m, err = d.operator.GetMigration(d.ctx, id)
		return err == nil && m.GetState() == "completed"
	}, deployedWait, 20*time.Millisecond, "migration %s did not complete: %v", id, m)
	return m
}

// TestShippedAccountsRunTheCluster runs PairDB under deploy/nats exactly as
// shipped, each part as its own user with its own inbox prefix, and drives
// everything a cluster does: put, get and delete at every consistency
// level as tenant acme; a node stopped and its hints replayed; read repair;
// anti-entropy started by the operator (pairdb repair); tenant admin; a
// node removed and added back with transfers (and their progress); a node
// back with an empty disk that is refilled; service discovery.
// No connection is refused anything along the way.
func TestShippedAccountsRunTheCluster(t *testing.T) {
	d := startDeployed(t)
	ctx := d.ctx

	for _, level := range []string{"one", "quorum", "all"} {
		key := "level-" + level
		_, err := d.acme.Put(ctx, key, []byte(level), client.Consistency(level))
		require.NoError(t, err, "put at %s", level)
		got, err := d.acme.Get(ctx, key, client.ReadConsistency(level))
		require.NoError(t, err)
		require.Equal(t, level, string(got.GetValue()), "get at %s", level)
		_, err = d.acme.Delete(ctx, key, client.WithContext(got.GetContext()), client.Consistency(level))
		require.NoError(t, err, "delete at %s", level)
		got, err = d.acme.Get(ctx, key, client.ReadConsistency(level))
		require.NoError(t, err)
		require.False(t, got.GetFound(), "deleted at %s", level)
	}
	for i := range 20 {
		k := fmt.Sprintf("k%02d", i)
		_, err := d.acme.Put(ctx, k, []byte(k), client.Consistency("all"))
		require.NoError(t, err)
	}
	// Batches and listing run under the tenant's own user too.
	var items []*pb.PutRequest
	for i := range 10 {
		items = append(items, &pb.PutRequest{Key: fmt.Sprintf("b%02d", i), Value: []byte("b")})
	}
	puts, err := d.acme.PutMany(ctx, items, client.Consistency("all"))
	require.NoError(t, err)
	for _, p := range puts {
		require.Nil(t, p.GetError())
	}
	listed := 0
	for it, err := range d.acme.List(ctx, &pb.ListRequest{PageSize: 7}) {
		require.NoError(t, err)
		require.NotEmpty(t, it.GetKey())
		listed++
	}
	require.Equal(t, 30, listed, "the 20 keys and the 10 of the batch")

	// Hints: a write storage-2 misses while stopped is replayed when it is
	// back (its own hint consumer, under its own user).
	d.c.StopNode(ctx, "pairdb-storage-2")
	_, err = d.acme.Put(ctx, "hinted", []byte("h"), client.Consistency("quorum"))
	require.NoError(t, err)
	d.c.StartNode(ctx, "pairdb-storage-2", d.dirs["pairdb-storage-2"])
	d.holds("pairdb-storage-2", "hinted", "h")

	// Read repair: a read at ALL brings the replica that missed a write up
	// to date.
	d.missedBy("pairdb-storage-1", "repair-me", "r")
	got, err := d.acme.Get(ctx, "repair-me", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, "r", string(got.GetValue()))
	d.holds("pairdb-storage-1", "repair-me", "r")

	// Anti-entropy, run by the operator as `pairdb repair` does: the node
	// that missed a write pulls it from its peers' digests and scans.
	d.missedBy("pairdb-storage-0", "entropy", "e")
	_, err = d.operator.ListNodes(ctx)
	require.NoError(t, err)
	st, err := d.operator.StartRepair(ctx, "pairdb-storage-0", "acme")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err = d.operator.RepairStatus(ctx, "pairdb-storage-0", st.GetRoundId())
		return err == nil && st.GetState() != "queued" && st.GetState() != "running"
	}, deployedWait, 10*time.Millisecond)
	require.Equal(t, "done", st.GetState(), "repair round: %v", st)
	d.holds("pairdb-storage-0", "entropy", "e")

	// Tenant admin.
	scratch := &pb.CreateTenantRequest{TenantId: "scratch", ReplicationFactor: 1}
	_, err = d.operator.CreateTenant(ctx, scratch)
	require.NoError(t, err)
	tenants, _, err := d.operator.ListTenants(ctx, 100, "")
	require.NoError(t, err)
	require.Len(t, tenants, 2)
	_, err = d.operator.UpdateTenant(ctx, &pb.UpdateTenantRequest{TenantId: "scratch", MaxSiblings: proto.Uint32(8)})
	require.NoError(t, err)
	require.NoError(t, bus.Request(ctx, d.opConn, bus.Subjects{}.Admin("tenants", "delete"),
		&pb.DeleteTenantRequest{TenantId: "scratch"}, new(pb.TenantResponse)))
	_, err = d.operator.GetTenant(ctx, "scratch")
	requireCode(t, err, pb.ErrorCode_TENANT_NOT_FOUND)

	// Remove a node and add it back: data moves both ways, the targets
	// report their progress through the coordinators.
	up, err := d.operator.UpdateTenant(ctx, &pb.UpdateTenantRequest{TenantId: "acme", ReplicationFactor: proto.Uint32(2)})
	require.NoError(t, err)
	d.migrated(up.GetMigrationId())
	rm, err := d.operator.RemoveNode(ctx, "pairdb-storage-2", false)
	require.NoError(t, err)
	removal := d.migrated(rm.GetMigrationId())
	require.Positive(t, removal.GetKeysTransferred(), "the removal moved keys: %v", removal)
	add, err := d.operator.AddNodes(ctx, "pairdb-storage-2")
	require.NoError(t, err)
	addition := d.migrated(add.GetMigrationId())
	require.Positive(t, addition.GetKeysTransferred(), "the addition moved keys: %v", addition)
	for i := range 20 {
		k := fmt.Sprintf("k%02d", i)
		got, err := d.acme.Get(ctx, k, client.ReadConsistency("quorum"))
		require.NoError(t, err)
		require.Equal(t, k, string(got.GetValue()))
	}

	// A node back with an empty disk registers a new incarnation, which
	// makes it refilling: it pulls its ranges from the other replicas and
	// asks the coordinators to record that it is refilled.
	old := d.c.Node("pairdb-storage-0").Incarnation()
	d.c.StopNode(ctx, "pairdb-storage-0")
	fresh := d.c.StartNode(ctx, "pairdb-storage-0", t.TempDir()).Incarnation()
	require.NotEqual(t, old, fresh)
	require.Eventually(t, func() bool {
		n := d.coord.Ring.State().Nodes["pairdb-storage-0"]
		return n.Incarnation == fresh && n.State == membership.Normal && !n.Refilling
	}, deployedWait, 20*time.Millisecond, "the wiped node was not refilled")
	for i := range 20 {
		k := fmt.Sprintf("k%02d", i)
		got, err := d.acme.Get(ctx, k, client.ReadConsistency("all"))
		require.NoError(t, err)
		require.Equal(t, k, string(got.GetValue()))
	}

	// Service discovery as the operator: every service answers $SRV.PING
	// into the operator's own inbox.
	op := d.s.Connect(t, natsauth.OperatorUser, bus.OperatorInbox)
	inbox := op.NewInbox()
	pongs, err := op.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, op.PublishRequest("$SRV.PING", inbox, nil))
	for range 1 + len(deployedtest.Nodes) {
		_, err := pongs.NextMsg(deployedWait)
		require.NoError(t, err, "a service did not answer $SRV.PING")
	}

	d.requireNoViolations()
}
