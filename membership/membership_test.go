package membership

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/coordinator/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// fold applies events in order, failing on a skipped one unless allowed.
type fold struct {
	t  *testing.T
	st *State
}

func newFold(t *testing.T) *fold { return &fold{t: t, st: New(20)} }

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

func done(id, node string) *pb.RingEvent {
	return &pb.RingEvent{Event: &pb.RingEvent_TransferDone{TransferDone: &pb.TransferDone{MigrationId: id, NodeId: node}}}
}

func bootstrapped(t *testing.T, ids ...string) *fold {
	f := newFold(t)
	for _, id := range ids {
		f.must(register(id, id+"-1"))
	}
	f.must(start(&pb.ChangeStarted{MigrationId: "b", Type: pb.ChangeType_BOOTSTRAP, NodeIds: ids}))
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

	// A wiped disk: a known member with a new incarnation stops serving reads.
	f.must(register("b", "b-2"))
	require.Equal(t, ring.Joining, f.st.Nodes["b"].State)
	require.Greater(t, f.st.Epoch, epoch)
	require.Equal(t, 2, f.st.Current().Size())
	require.Equal(t, 3, f.st.Next().Size(), "it still takes writes")
}

func TestAddNodeCutsOverWhenTargetsFinish(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c")
	f.must(register("d", "d-1"))
	f.must(start(&pb.ChangeStarted{MigrationId: "m1", Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"d"},
		TenantRf: map[string]uint32{"t": 3}}))
	require.NotNil(t, f.st.Change)
	require.Equal(t, map[string]bool{"d": true}, f.st.Change.Targets)
	require.Equal(t, ring.Joining, f.st.Nodes["d"].State)

	// During the change a key's writes go to both sets; reads to the current.
	cur, next := f.st.ReplicaSets("t", 3, 12345)
	require.Len(t, cur, 3)
	require.NotContains(t, cur, "d")
	require.Len(t, next, 3)

	// A second change is refused while one runs.
	err := f.st.CheckStart(&pb.ChangeStarted{MigrationId: "m2", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"a"}})
	require.Equal(t, pb.ErrorCode_CHANGE_IN_PROGRESS, bus.CodeOf(err))
	require.Error(t, f.apply(start(&pb.ChangeStarted{MigrationId: "m2", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"a"}})),
		"a racing change that reached the log is skipped by every folder")
	require.Equal(t, "m1", f.st.Change.ID)

	require.Error(t, f.apply(done("m1", "a")), "a is not a target")
	epoch := f.st.Epoch
	f.must(done("m1", "d"))
	require.Nil(t, f.st.Change)
	require.Equal(t, ring.Normal, f.st.Nodes["d"].State)
	require.Greater(t, f.st.Epoch, epoch)
	rec, running, ok := f.st.Migration("m1")
	require.True(t, ok)
	require.False(t, running)
	require.Equal(t, "m1", rec.ID)
}

func TestRemoveNode(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c", "d")
	f.must(start(&pb.ChangeStarted{MigrationId: "r", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"b"},
		TenantRf: map[string]uint32{"t": 2}}))
	require.Equal(t, ring.Leaving, f.st.Nodes["b"].State)
	require.NotContains(t, f.st.Change.Targets, "b", "the leaving node gains nothing")
	require.NotEmpty(t, f.st.Change.Targets)
	require.Empty(t, f.st.Dead())
	for n := range f.st.Change.Targets {
		f.must(done("r", n))
	}
	require.Equal(t, ring.Removed, f.st.Nodes["b"].State)
	require.Equal(t, 3, f.st.Current().Size())
}

func TestReplicationFactorChange(t *testing.T) {
	f := bootstrapped(t, "a", "b", "c")
	c := &pb.ChangeStarted{MigrationId: "rf", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t",
		ReplicationFactor: 3, TenantRf: map[string]uint32{"t": 2, "u": 2}}
	f.must(start(c))
	cur, next := f.st.TenantRF("t", 3)
	require.Equal(t, []uint32{2, 3}, []uint32{cur, next}, "reads keep the old factor while the store already says 3")
	cur, next = f.st.TenantRF("u", 2)
	require.Equal(t, []uint32{2, 2}, []uint32{cur, next}, "other tenants are untouched")
	for n := range f.st.Change.Targets {
		f.must(done("rf", n))
	}
	cur, next = f.st.TenantRF("t", 2)
	require.Equal(t, []uint32{3, 3}, []uint32{cur, next}, "a finished change wins over a store still at the old factor")
	cur, _ = f.st.TenantRF("t", 3)
	require.EqualValues(t, 3, cur)

	// Lowering gains nobody a replica, but the kept replicas catch up with
	// the old set before the cutover (see ring.Move.Targets).
	f.must(start(&pb.ChangeStarted{MigrationId: "down", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t",
		ReplicationFactor: 2, TenantRf: map[string]uint32{"t": 3}}))
	require.Equal(t, map[string]bool{"a": true, "b": true, "c": true}, f.st.Change.Targets,
		"with three nodes each is a kept replica of some arc")
	for n := range f.st.Change.Targets {
		f.must(done("down", n))
	}
	require.Nil(t, f.st.Change)
	cur, _ = f.st.TenantRF("t", 3)
	require.EqualValues(t, 2, cur)
}

func TestCheckStartRefusals(t *testing.T) {
	f := bootstrapped(t, "a", "b")
	cases := map[string]*pb.ChangeStarted{
		"unregistered":  {MigrationId: "x", Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"zz"}},
		"already":       {MigrationId: "x", Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"a"}},
		"remove ghost":  {MigrationId: "x", Type: pb.ChangeType_REMOVE_NODE, NodeIds: []string{"zz"}},
		"rf too high":   {MigrationId: "x", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t", ReplicationFactor: 3, TenantRf: map[string]uint32{"t": 2}},
		"rf unchanged":  {MigrationId: "x", Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: "t", ReplicationFactor: 2, TenantRf: map[string]uint32{"t": 2}},
		"bootstrap two": {MigrationId: "x", Type: pb.ChangeType_BOOTSTRAP, NodeIds: []string{"a"}},
		"no id":         {Type: pb.ChangeType_ADD_NODE, NodeIds: []string{"a"}},
	}
	for name, c := range cases {
		require.Error(t, f.st.CheckStart(c), name)
	}
}
