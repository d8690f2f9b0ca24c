package membership

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// fold applies events in order, failing on a skipped one unless allowed.
type fold struct {
	t  *testing.T
	st *State
}

func newFold(t *testing.T) *fold { return &fold{t: t, st: New()} }

func (f *fold) apply(ev *pb.RingEvent) error {
	next, err := f.st.Apply(f.st.Seq+1, ev)
	f.st = next
	return err
}

func (f *fold) must(ev *pb.RingEvent) {
	f.t.Helper()
	require.NoError(f.t, f.apply(ev))
}

func register(id, inc string) *pb.RingEvent {
	return &pb.RingEvent{Event: &pb.RingEvent_Registered{Registered: &pb.NodeRegistered{NodeId: id, Incarnation: inc}}}
}

func start(c *pb.ChangeStarted) *pb.RingEvent {
	return &pb.RingEvent{Event: &pb.RingEvent_Started{Started: c}}
}

func tenantEv(id string, rf uint32) *pb.RingEvent {
	return &pb.RingEvent{Event: &pb.RingEvent_Tenant{Tenant: &pb.TenantChanged{TenantId: id, ReplicationFactor: rf}}}
}

func done(id, node string) *pb.RingEvent {
	return &pb.RingEvent{Event: &pb.RingEvent_TransferDone{TransferDone: &pb.TransferDone{MigrationId: id, NodeId: node}}}
}

func bootstrapped(t *testing.T, ids ...string) *fold {
	f := newFold(t)
	for _, id := range ids {
		f.must(register(id, id+"-1"))
	}
	f.must(start(&pb.ChangeStarted{MigrationId: "b", Type: pb.ChangeType_BOOTSTRAP, NodeIds: ids, Settings: &pb.ClusterSettings{VirtualNodes: 20}}))
	require.Nil(t, f.st.Change, "a bootstrap has nothing to move")
	return f
}

func TestBootstrapAndRegistration(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c")
	require.Equal(t, []string{"a", "b", "c"}, f.st.Normal())
	require.Equal(t, 3, f.st.Current().Size())
	epoch := f.st.Epoch
	f.must(register("a", "a-1"))
	require.Equal(t, epoch, f.st.Epoch, "re-registering the same incarnation changes nothing")
	f.must(register("d", "d-1"))
	require.Equal(t, Registered, f.st.Nodes["d"].State)
	require.Equal(t, epoch, f.st.Epoch, "a registered node owns nothing")

	// A wiped disk: a known member with a new incarnation stops serving
	// reads, and keeps its place: no other node becomes a replica of its
	// arcs without a transfer.
	f.must(tenantEv("t", 3))
	before := f.st.Current()
	f.must(register("b", "b-2"))
	require.Equal(t, Normal, f.st.Nodes["b"].State)
	require.True(t, f.st.Nodes["b"].Refilling)
	require.False(t, f.st.Serving("b"))
	require.True(t, f.st.Serving("a"))
	require.Greater(t, f.st.Epoch, epoch)
	require.Equal(t, f.st.Epoch, f.st.HoldersSeq)
	for h := uint64(0); h < 1<<20; h += 4099 {
		cur, next := f.st.ReplicaSets("t", h)
		require.Equal(t, before.Preference(h, 3), cur, "the replica sets stay")
		require.Equal(t, cur, next)
	}
	refill := f.st.Refill("b")
	require.NotEmpty(t, refill)
	for _, mv := range refill {
		require.Contains(t, mv.From, "b")
		require.Equal(t, "t", mv.Tenant)
	}
}

func refilled(id, inc string, basis uint64) *pb.RingEvent {
	return &pb.RingEvent{Event: &pb.RingEvent_RefillDone{RefillDone: &pb.RefillDone{NodeId: id, Incarnation: inc, BasisSeq: basis}}}
}

func TestRefillDoneNeedsTheLatestHolders(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c", "d")
	f.must(tenantEv("t", 3))
	f.must(register("b", "b-2"))
	basis := f.st.Seq
	require.Error(t, f.apply(refilled("b", "b-1", basis)), "an old incarnation cannot end the refill")
	require.Error(t, f.apply(refilled("a", "a-1", basis)), "a is not refilling")

	// Another node loses its data after b computed its refill: b may have
	// counted c's empty copy as a source, so its refill is skipped.
	f.must(register("c", "c-2"))
	require.Error(t, f.apply(refilled("b", "b-2", basis)))
	require.True(t, f.st.Nodes["b"].Refilling)

	// A tenant created since does not move data: a refill based after the
	// last wipe is accepted.
	basis = f.st.Seq
	f.must(tenantEv("u", 1))
	epoch := f.st.Epoch
	f.must(refilled("b", "b-2", basis))
	require.False(t, f.st.Nodes["b"].Refilling)
	require.True(t, f.st.Serving("b"))
	require.Greater(t, f.st.Epoch, epoch, "reads may use b again: the epoch moves")
	require.Error(t, f.apply(refilled("b", "b-2", basis)), "recorded once")

	// A target wiped mid-change transfers again: what it reported is gone.
	f.must(start(&pb.ChangeStarted{MigrationId: "rf", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t", ReplicationFactor: 4}))
	require.Greater(t, len(f.st.Change.Targets), 1)
	target := slices.Sorted(maps.Keys(f.st.Change.Targets))[0]
	f.must(done("rf", target))
	f.must(register(target, target+"-9"))
	require.NotContains(t, f.st.Change.Done, target)
	require.True(t, f.st.Nodes[target].Refilling)

	// A refilling node that is removed is no longer refilling.
	f2 := bootstrapped(t, "a", "b", "c", "d")
	f2.must(tenantEv("t", 2))
	f2.must(register("d", "d-2"))
	f2.must(start(&pb.ChangeStarted{MigrationId: "rm-d", Type: pb.ChangeType_FORCE_REMOVE_NODE, NodeIds: []string{"d"}}))
	for id := range f2.st.Change.Targets {
		f2.must(done("rm-d", id))
	}
	require.Equal(t, Removed, f2.st.Nodes["d"].State)
	require.False(t, f2.st.Nodes["d"].Refilling)
}

func TestAddNodeCutsOverWhenTargetsFinish(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c")
	f.must(register("d", "d-1"))
	f.must(tenantEv("t", 3))
	f.must(start(&pb.ChangeStarted{MigrationId: "m1", Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"d"}}))
	require.NotNil(t, f.st.Change)
	require.Equal(t, map[string]bool{"d": true}, f.st.Change.Targets)
	require.Equal(t, Joining, f.st.Nodes["d"].State)

	// During the change a key's writes go to both sets; reads to the current.
	cur, next := f.st.ReplicaSets("t", 12345)
	require.Len(t, cur, 3)
	require.NotContains(t, cur, "d")
	require.Len(t, next, 3)

	// A second change is refused while one runs.
	err := f.st.CheckStart(&pb.ChangeStarted{MigrationId: "m2", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"a"}})
	require.Equal(t, pb.ErrorCode_CHANGE_IN_PROGRESS, status.CodeOf(err))
	require.Error(t, f.apply(start(&pb.ChangeStarted{MigrationId: "m2", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"a"}})),
		"a racing change that reached the log is skipped by every folder")
	require.Equal(t, "m1", f.st.Change.ID)

	require.Error(t, f.apply(done("m1", "a")), "a is not a target")
	epoch := f.st.Epoch
	f.must(done("m1", "d"))
	require.Nil(t, f.st.Change)
	require.Equal(t, Normal, f.st.Nodes["d"].State)
	require.Greater(t, f.st.Epoch, epoch)
	rec, running, ok := f.st.Migration("m1")
	require.True(t, ok)
	require.False(t, running)
	require.Equal(t, "m1", rec.ID)
}

func TestRemoveNode(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c", "d")
	f.must(tenantEv("t", 2))
	f.must(start(&pb.ChangeStarted{MigrationId: "r", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"b"}}))
	require.Equal(t, map[string]uint32{"t": 2}, f.st.Change.TenantRF, "the fold takes the tenant snapshot")
	require.Equal(t, Leaving, f.st.Nodes["b"].State)
	require.NotContains(t, f.st.Change.Targets, "b", "the leaving node gains nothing")
	require.NotEmpty(t, f.st.Change.Targets)
	require.Empty(t, f.st.Dead())
	for n := range f.st.Change.Targets {
		f.must(done("r", n))
	}
	require.Equal(t, Removed, f.st.Nodes["b"].State)
	require.Equal(t, 3, f.st.Current().Size())
}

func TestReplicationFactorChange(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c")
	f.must(tenantEv("t", 2))
	f.must(tenantEv("u", 2))
	c := &pb.ChangeStarted{MigrationId: "rf", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t", ReplicationFactor: 3}
	f.must(start(c))
	cur, next := f.st.TenantRF("t")
	require.Equal(t, []uint32{2, 3}, []uint32{cur, next}, "reads keep the old factor until the cutover")
	cur, next = f.st.TenantRF("u")
	require.Equal(t, []uint32{2, 2}, []uint32{cur, next}, "other tenants are untouched")
	for n := range f.st.Change.Targets {
		f.must(done("rf", n))
	}
	cur, next = f.st.TenantRF("t")
	require.Equal(t, []uint32{3, 3}, []uint32{cur, next}, "the ring log holds the new factor")
	require.Error(t, f.apply(tenantEv("t", 3)), "recording the tenant again changes nothing")

	// Lowering gains nobody a replica, but the kept replicas catch up with
	// the old set before the cutover (see ring.Move.Targets).
	f.must(start(&pb.ChangeStarted{MigrationId: "down", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t", ReplicationFactor: 2}))
	require.Equal(t, map[string]bool{"a": true, "b": true, "c": true}, f.st.Change.Targets,
		"with three nodes each is a kept replica of some arc")
	for n := range f.st.Change.Targets {
		f.must(done("down", n))
	}
	require.Nil(t, f.st.Change)
	cur, _ = f.st.TenantRF("t")
	require.EqualValues(t, 2, cur)
	cur, _ = f.st.TenantRF("nobody")
	require.Zero(t, cur, "a tenant the log does not know has no placement")
}

func TestCheckStartRefusals(t *testing.T) {
	f := bootstrapped(t, "a", "b")
	f.must(tenantEv("t", 2))
	cases := map[string]*pb.ChangeStarted{
		"unregistered":  {MigrationId: "x", Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"zz"}},
		"already":       {MigrationId: "x", Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"a"}},
		"remove ghost":  {MigrationId: "x", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"zz"}},
		"rf too high":   {MigrationId: "x", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t", ReplicationFactor: 3},
		"rf unchanged":  {MigrationId: "x", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t", ReplicationFactor: 2},
		"rf of nobody":  {MigrationId: "x", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "nobody", ReplicationFactor: 2},
		"bootstrap two": {MigrationId: "x", Type: pb.ChangeType_BOOTSTRAP, NodeIds: []string{"a"}},
		"no id":         {Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"a"}},
	}
	for name, c := range cases {
		require.Error(t, f.st.CheckStart(c), name)
	}
}
