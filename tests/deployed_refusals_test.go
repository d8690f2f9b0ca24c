package tests

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/internal/deployedtest"
	"github.com/pairdb/pairdb/natsauth"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Roles as the refusal tests name them: the node under test is
// pairdb-storage-0 ("n0"); pairdb-storage-1 is "another node".
const (
	roleCoord    = "coordinator"
	roleNode     = "n0"
	roleOperator = "operator"
	roleTenant   = "tenant"
)

// subjectCase is one subject and the roles that may use it; every other
// role must be refused. Written out by hand, not derived from package
// natsauth, so a permission that widens by mistake fails here.
type subjectCase struct {
	subject string
	may     []string
}

const (
	n0, n1         = "pairdb-storage-0", "pairdb-storage-1"
	hints0, hints1 = "pairdb-hints-" + n0, "pairdb-hints-" + n1
)

// publishCases cover every subject family and JetStream API call.
var publishCases = []subjectCase{
	// Key-value API: a tenant's own keys only.
	{"pairdb.v1.kv.acme.put", []string{roleTenant}},
	{"pairdb.v1.kv.other.get", nil},
	{"pairdb.v1.kv.acme.get_many", []string{roleTenant}},
	{"pairdb.v1.kv.acme.list", []string{roleTenant}},
	{"pairdb.v1.kv.other.put_many", nil},
	{"pairdb.v1.kv.other.list", nil},
	// Admin API: the operator.
	{"pairdb.v1.admin.tenants.create", []string{roleOperator}},
	{"pairdb.v1.admin.nodes.add", []string{roleOperator}},
	// Member requests: a node for itself only.
	{"pairdb.v1.member." + n0 + ".register", []string{roleNode}},
	{"pairdb.v1.member." + n1 + ".register", nil},
	{"pairdb.v1.member." + n1 + ".done", nil},
	{"pairdb.v1.member." + n1 + ".refilled", nil},
	{"pairdb.v1.member." + n1 + ".progress", nil},
	// Storage node endpoints.
	{"pairdb.v1.node." + n1 + ".apply", []string{roleCoord}},
	{"pairdb.v1.node." + n1 + ".merge", []string{roleCoord, roleNode}},
	{"pairdb.v1.node." + n1 + ".read", []string{roleCoord}},
	{"pairdb.v1.node." + n1 + ".scan", []string{roleCoord, roleNode}},
	{"pairdb.v1.node." + n1 + ".digest", []string{roleNode}},
	{"pairdb.v1.node." + n1 + ".digests", []string{roleNode}},
	{"pairdb.v1.node." + n1 + ".repair", []string{roleOperator}},
	// Heartbeats: a node's own.
	{"pairdb.v1.heartbeat." + n0, []string{roleNode}},
	{"pairdb.v1.heartbeat." + n1, nil},
	// The ring log, tenant invalidations, migration progress, hints.
	{"pairdb.v1.events.ring", []string{roleCoord}},
	{"pairdb.v1.events.tenants", []string{roleCoord}},
	{"pairdb.v1.events.coordinators", []string{roleCoord}},
	{"pairdb.v1.events.migrations.m1." + n0, []string{roleCoord}},
	{"pairdb.v1.hints." + n1, []string{roleCoord}},
	// Buckets.
	{"$KV.pairdb_tenants.acme", []string{roleCoord}},
	{"$KV.pairdb_idempotency.acme.k", []string{roleCoord}},
	{"$KV.pairdb_secrets.context-key-1", []string{roleCoord}},
	// JetStream: stream management. Nobody deletes a stream or bucket;
	// only the idempotency bucket is purged (a deleted tenant's records).
	{"$JS.API.INFO", []string{roleCoord}},
	{"$JS.API.STREAM.CREATE.PAIRDB_RING", []string{roleCoord}},
	{"$JS.API.STREAM.UPDATE.PAIRDB_RING", []string{roleCoord}},
	{"$JS.API.STREAM.UPDATE.PAIRDB_HINTS", []string{roleCoord}},
	{"$JS.API.STREAM.CREATE.EVIL", nil},
	{"$JS.API.STREAM.DELETE.PAIRDB_RING", nil},
	{"$JS.API.STREAM.DELETE.PAIRDB_HINTS", nil},
	{"$JS.API.STREAM.DELETE.PAIRDB_MIGRATIONS", nil},
	{"$JS.API.STREAM.DELETE.KV_pairdb_tenants", nil},
	{"$JS.API.STREAM.DELETE.KV_pairdb_idempotency", nil},
	{"$JS.API.STREAM.DELETE.KV_pairdb_secrets", nil},
	{"$JS.API.STREAM.PURGE.PAIRDB_RING", nil},
	{"$JS.API.STREAM.PURGE.PAIRDB_HINTS", nil},
	{"$JS.API.STREAM.PURGE.PAIRDB_MIGRATIONS", nil},
	{"$JS.API.STREAM.PURGE.KV_pairdb_tenants", nil},
	{"$JS.API.STREAM.PURGE.KV_pairdb_secrets", nil},
	{"$JS.API.STREAM.PURGE.KV_pairdb_idempotency", []string{roleCoord}},
	{"$JS.API.STREAM.MSG.DELETE.PAIRDB_RING", nil},
	{"$JS.API.STREAM.SNAPSHOT.PAIRDB_RING", nil},
	{"$JS.API.STREAM.RESTORE.PAIRDB_RING", nil},
	{"$JS.API.STREAM.LIST", nil},
	{"$JS.API.STREAM.NAMES", nil},
	{"$JS.API.STREAM.INFO.PAIRDB_RING", []string{roleCoord, roleNode}},
	{"$JS.API.STREAM.INFO.PAIRDB_HINTS", []string{roleCoord, roleNode}},
	{"$JS.API.STREAM.INFO.KV_pairdb_secrets", []string{roleCoord}},
	{"$JS.API.STREAM.MSG.GET.KV_pairdb_secrets", nil},
	{"$JS.API.DIRECT.GET.KV_pairdb_secrets.$KV.pairdb_secrets.context-key-1", []string{roleCoord}},
	{"$JS.API.DIRECT.GET.KV_pairdb_tenants.$KV.pairdb_tenants.acme", []string{roleCoord}},
	{"$JS.API.ACCOUNT.PURGE.PAIRDB", nil},
	{"$JS.API.META.LEADER.STEPDOWN", nil},
	// JetStream: consumers. The ring log is read through filtered
	// consumers; a node drains its own hints, nobody else's.
	{"$JS.API.CONSUMER.CREATE.PAIRDB_RING.c1", nil},
	{"$JS.API.CONSUMER.CREATE.PAIRDB_RING.c1.pairdb.v1.events.ring", []string{roleCoord, roleNode}},
	{"$JS.API.CONSUMER.DELETE.PAIRDB_RING.c1", []string{roleCoord}},
	{"$JS.API.CONSUMER.CREATE.PAIRDB_HINTS." + hints0 + ".pairdb.v1.hints." + n0, []string{roleNode}},
	{"$JS.API.CONSUMER.CREATE.PAIRDB_HINTS." + hints1 + ".pairdb.v1.hints." + n1, nil},
	{"$JS.API.CONSUMER.CREATE.PAIRDB_HINTS." + hints0 + ".pairdb.v1.hints.>", nil},
	{"$JS.API.CONSUMER.CREATE.PAIRDB_HINTS.c1", nil},
	{"$JS.API.CONSUMER.MSG.NEXT.PAIRDB_HINTS." + hints0, []string{roleNode}},
	{"$JS.API.CONSUMER.MSG.NEXT.PAIRDB_HINTS." + hints1, nil},
	{"$JS.API.CONSUMER.INFO.PAIRDB_HINTS." + hints1, nil},
	{"$JS.API.CONSUMER.DELETE.PAIRDB_HINTS." + hints0, nil},
	{"$JS.API.CONSUMER.DELETE.PAIRDB_HINTS." + hints1, nil},
	{"$JS.API.CONSUMER.LIST.PAIRDB_HINTS", nil},
	{"$JS.API.CONSUMER.NAMES.PAIRDB_RING", nil},
	{"$JS.API.CONSUMER.CREATE.KV_pairdb_secrets.c1.$KV.pairdb_secrets.>", nil},
	{"$JS.ACK.PAIRDB_HINTS." + hints1 + ".1.1.1.1.1.1", nil},
	// Other users' inboxes (forged replies), service discovery.
	{bus.CoordinatorInbox + ".forged", nil},
	{bus.NodeInbox(n1) + ".forged", nil},
	{"$SRV.PING", []string{roleOperator}},
}

// subscribeCases: what each role may listen to.
var subscribeCases = []subjectCase{
	{"pairdb.v1.kv.*.*", []string{roleCoord}},
	{"pairdb.v1.kv.acme.put", []string{roleCoord}},
	{"pairdb.v1.admin.*.*", []string{roleCoord}},
	{"pairdb.v1.member.*.*", []string{roleCoord}},
	{"pairdb.v1.node." + n0 + ".*", []string{roleNode}},
	{"pairdb.v1.node." + n1 + ".*", nil},
	{"pairdb.v1.node.*.apply", nil},
	{"pairdb.v1.heartbeat.*", []string{roleCoord}},
	{"pairdb.v1.heartbeat." + n0, []string{roleCoord, roleNode}},
	{"pairdb.v1.events.tenants", []string{roleCoord}},
	{"pairdb.v1.events.coordinators", []string{roleCoord}},
	{"pairdb.v1.events.ring", nil},
	{"pairdb.v1.events.>", nil},
	{"pairdb.v1.hints.>", nil},
	{"pairdb.v1.>", nil},
	{"$KV.>", nil},
	{"$JS.API.>", nil},
	{"$JS.ACK.>", nil},
	// Inboxes: each user its own.
	{"_INBOX.>", []string{roleTenant}},
	{bus.CoordinatorInbox + ".>", []string{roleCoord}},
	{bus.NodeInbox(n0) + ".>", []string{roleNode}},
	{bus.NodeInbox(n1) + ".>", nil},
	{bus.OperatorInbox + ".>", []string{roleOperator}},
	{"$SRV.PING", []string{roleCoord, roleNode}},
	{"$SRV.>", nil},
	{">", nil},
}

// requireRefused publishes (or subscribes, op "Subscription") on subject
// and waits for the server to refuse it.
func requireRefused(t *testing.T, nc *nats.Conn, errs <-chan error, who, op, subject string) {
	t.Helper()
	var sub *nats.Subscription
	var err error
	if op == "Publish" {
		err = nc.PublishRequest(subject, nc.NewInbox(), []byte("{}"))
	} else {
		sub, err = nc.SubscribeSync(subject)
	}
	require.NoError(t, err)
	require.NoError(t, nc.FlushTimeout(5*time.Second))
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-errs:
			if deployedtest.Denied(err, op, subject) {
				if sub != nil {
					_ = sub.Unsubscribe()
				}
				return
			}
		case <-deadline:
			t.Fatalf("%s: %s on %q was not refused", who, op, subject)
		}
	}
}

// TestShippedAccountsRefuseForbiddenActions connects as every role of
// deploy/nats and tries, for every subject family and JetStream API call,
// what that role must not do: each is refused by the server. Afterwards
// every stream, bucket and hint consumer is still there, the ring log has
// not moved, and the cluster serves as before. A node's requests on its
// own member subjects that a coordinator must refuse (a stale incarnation,
// a re-addition while NORMAL, a transfer of no running migration, progress
// for another node) are refused and change nothing either.
func TestShippedAccountsRefuseForbiddenActions(t *testing.T) {
	d := startDeployed(t)
	ctx := d.ctx
	_, err := d.acme.Put(ctx, "before", []byte("b"), client.Consistency("all"))
	require.NoError(t, err)
	seq := d.coord.Ring.State().Seq

	conns := map[string]*nats.Conn{
		roleCoord:    d.s.Connect(t, natsauth.CoordinatorUser, bus.CoordinatorInbox),
		roleNode:     d.s.Connect(t, n0, bus.NodeInbox(n0)),
		roleOperator: d.s.Connect(t, natsauth.OperatorUser, bus.OperatorInbox),
		roleTenant:   d.s.Connect(t, natsauth.TenantUser("acme"), ""),
	}
	refusals := 0
	for who, nc := range conns {
		errs, stop := d.s.Watch(nc)
		for _, c := range publishCases {
			if !slices.Contains(c.may, who) {
				requireRefused(t, nc, errs, who, "Publish", c.subject)
				refusals++
			}
		}
		for _, c := range subscribeCases {
			if !slices.Contains(c.may, who) {
				requireRefused(t, nc, errs, who, "Subscription", c.subject)
				refusals++
			}
		}
		stop()
	}
	t.Logf("%d actions refused", refusals)

	// A wrong password is no connection at all, and a node's password is
	// no other node's.
	_, err = d.s.Dial(n1, d.s.Password(n0), "")
	require.Error(t, err, "storage-0's password logs in as storage-1")

	// What a node may send on its own member subjects is judged by the
	// coordinators.
	inc := d.c.Node(n0).Incarnation()
	node := conns[roleNode]
	ask := func(op string, req proto.Message) error {
		return bus.Request(ctx, node, bus.Subjects{}.Member(n0, op), req, new(pb.MemberResponse))
	}
	requireCode(t, ask(bus.OpRegister, &pb.RegisterNodeRequest{Incarnation: "bad.incarnation"}), pb.ErrorCode_INVALID_ARGUMENT)
	// A node that is not refilling cannot end a refill: nothing is
	// appended (the ring log is checked below).
	require.NoError(t, ask(bus.OpRefilled, &pb.RefilledRequest{Incarnation: inc, BasisSeq: seq}))
	requireCode(t, ask(bus.OpRefilled, &pb.RefilledRequest{Incarnation: "0123abcd", BasisSeq: seq}), pb.ErrorCode_INVALID_ARGUMENT)
	requireCode(t, ask(bus.OpTransferDone, &pb.TransferDoneRequest{Incarnation: inc, MigrationId: "nope", ExpectedSeq: seq}),
		pb.ErrorCode_MIGRATION_NOT_FOUND)
	requireCode(t, ask(bus.OpProgress, &pb.ProgressRequest{Incarnation: inc,
		Progress: &pb.MigrationProgress{MigrationId: "m1", NodeId: n1}}), pb.ErrorCode_INVALID_ARGUMENT)
	requireCode(t, ask(bus.OpProgress, &pb.ProgressRequest{Incarnation: inc,
		Progress: &pb.MigrationProgress{MigrationId: "m1.>", NodeId: n0}}), pb.ErrorCode_INVALID_ARGUMENT)

	// Nothing changed: the ring log, every stream and bucket, every node's
	// hint consumer; the cluster serves.
	require.Equal(t, seq, d.coord.Ring.State().Seq, "the ring log moved")
	js, err := jetstream.New(d.asCoordinator)
	require.NoError(t, err)
	for _, name := range []string{natsauth.RingStream, natsauth.HintsStream, natsauth.MigrationsStream,
		natsauth.KVStream(natsauth.TenantsBucket), natsauth.KVStream(natsauth.IdempotencyBucket), natsauth.KVStream(natsauth.SecretsBucket)} {
		_, err := js.Stream(ctx, name)
		require.NoError(t, err, "stream %s", name)
	}
	for _, id := range deployedtest.Nodes {
		hc := d.s.Connect(t, id, bus.NodeInbox(id))
		hjs, err := jetstream.New(hc)
		require.NoError(t, err)
		_, err = hjs.Consumer(ctx, natsauth.HintsStream, "pairdb-hints-"+id)
		require.NoError(t, err, "hint consumer of %s", id)
	}
	got, err := d.acme.Get(ctx, "before", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, "b", string(got.GetValue()))
	_, err = d.acme.Put(ctx, "after", []byte("a"), client.Consistency("all"))
	require.NoError(t, err)
}
