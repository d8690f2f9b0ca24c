package storagenode_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/jetstream/ringlog"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// gained lists the moves of st's change that node gains, and how many of
// keys (of tenant) they hold.
func gained(st *membership.State, node, tenant string, keys []string) ([]membership.TenantMove, int) {
	var out []membership.TenantMove
	n := 0
	for _, mv := range st.Moves() {
		if mv.Tenant != tenant || !slices.Contains(mv.Gainers(), node) {
			continue
		}
		out = append(out, mv)
		for _, k := range keys {
			if mv.Arc.Contains(keyspace.Hash(tenant, k)) && slices.Contains(mv.From, "a") {
				n++
			}
		}
	}
	return out, n
}

// TestReplicationFactorChangeTransfersAndVerifies raises a tenant's
// replication factor from 1 to 2 on two nodes whose data sits on node a
// only: b pulls every arc it gains, reports TransferDone, the change
// finishes, and b's digest equals a's for every arc b gained from a.
func TestReplicationFactorChangeTransfersAndVerifies(t *testing.T) {
	_, nc := natstest.Start(t)
	r := newRingNet(t, nc)
	cfgA := memberConfig(t, r, "a", t.TempDir())
	cfgB := memberConfig(t, r, "b", t.TempDir())
	a := startNode(t, nc, cfgA)
	startNode(t, nc, cfgB)
	boot := r.bootstrap("a", "b")

	beats := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(subjects.Heartbeat("a"), beats)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	keys := writeKeys(t, nc, "a", "t", 600, boot.Epoch)
	require.Equal(t, uint64(600), a.Keys())

	// Heartbeats carry the ring state, the epoch and the key count.
	deadline := time.After(waitTimeout)
	for seen := false; !seen; {
		select {
		case m := <-beats:
			var hb pb.Heartbeat
			require.NoError(t, proto.Unmarshal(m.Data, &hb))
			seen = hb.GetState() == "NORMAL" && hb.GetEpoch() == boot.Epoch && hb.GetKeys() == 600
		case <-deadline:
			t.Fatal("no heartbeat of a NORMAL node at the bootstrap epoch with 600 keys")
		}
	}

	st := r.start(&pb.ChangeStarted{MigrationId: "rf", Type: pb.ChangeType_REPLICATION_FACTOR,
		TenantId: "t", ReplicationFactor: 2, TenantRf: map[string]uint32{"t": 1}})
	require.True(t, st.Change.Targets["b"])
	moves, want := gained(st, "b", "t", keys)
	require.NotEmpty(t, moves)
	require.Positive(t, want)

	end := r.waitState("the RF change to finish", finished("rf"))
	rec, _, _ := end.Migration("rf")
	require.Contains(t, rec.Done, "b")
	for _, mv := range moves {
		if !slices.Contains(mv.From, "a") {
			continue
		}
		da := digest(t, nc, "a", "t", mv.Arc.Start, mv.Arc.End, end.Epoch)
		db := digest(t, nc, "b", "t", mv.Arc.Start, mv.Arc.End, end.Epoch)
		require.Equal(t, da.GetDigest(), db.GetDigest(), "arc %+v", mv.Arc)
		require.Equal(t, da.GetKeys(), db.GetKeys())
		require.Equal(t, end.Epoch, db.GetEpoch())
	}
	require.GreaterOrEqual(t, counter(cfgB.Metrics, `pairdb_migration_keys_transferred_total{node="b"}`), float64(want))
	require.Positive(t, counter(cfgB.Metrics, `pairdb_migration_transfers_total{node="b",status="verified"}`))

	// The last progress message of b says done.
	prog := ringlog.Progress(context.Background(), r.progress, subjects, "rf", []string{"b"})
	require.True(t, prog["b"].GetDone())
	require.Equal(t, uint64(want), prog["b"].GetKeysTransferred())
	require.Equal(t, uint64(want), prog["b"].GetKeysTotal())

	// A request from an older ring is refused and told the node's epoch.
	resp := &pb.ApplyResponse{}
	err = bus.Request(context.Background(), nc, subjects.Node("a", bus.OpApply),
		&pb.ApplyRequest{TenantId: "t", Key: "late", Value: []byte("v"), Epoch: boot.Epoch, DeadlineUnixMs: soon()}, resp)
	require.Equal(t, pb.ErrorCode_STALE_EPOCH, status.CodeOf(err), "%v", err)
	require.ErrorContains(t, err, strconv.FormatUint(end.Epoch, 10))
	require.Equal(t, end.Epoch, resp.GetEpoch())
	for _, op := range []string{bus.OpRead, bus.OpScan, bus.OpDigest} {
		var req, rsp proto.Message
		switch op {
		case bus.OpRead:
			req, rsp = &pb.ReadRequest{TenantId: "t", Key: "k", Epoch: boot.Epoch}, &pb.ReadResponse{}
		case bus.OpScan:
			req, rsp = &pb.ScanRequest{TenantId: "t", Range: &pb.HashRange{}, Epoch: boot.Epoch}, &pb.ScanResponse{}
		default:
			req, rsp = &pb.DigestRequest{TenantId: "t", Range: &pb.HashRange{}, Epoch: boot.Epoch}, &pb.DigestResponse{}
		}
		err := bus.Request(context.Background(), nc, subjects.Node("b", op), req, rsp)
		require.Equal(t, pb.ErrorCode_STALE_EPOCH, status.CodeOf(err), "%s: %v", op, err)
	}
	require.Equal(t, float64(1), counter(cfgA.Metrics, `pairdb_node_stale_epoch_total{node="a"}`))
	// Epoch 0 (a sender without a ring) is served; a newer epoch than the
	// log has waits, bounded, and fails UNAVAILABLE.
	_, err = apply(t, nc, "a", &pb.ApplyRequest{TenantId: "t", Key: "k0", Value: []byte("v")})
	require.NoError(t, err)
	err = bus.Request(context.Background(), nc, subjects.Node("a", bus.OpRead),
		&pb.ReadRequest{TenantId: "t", Key: "k0", Epoch: end.Seq + 100}, &pb.ReadResponse{})
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(err))

	// Scan and digest validate their input.
	err = bus.Request(context.Background(), nc, subjects.Node("a", bus.OpScan), &pb.ScanRequest{TenantId: "t"}, &pb.ScanResponse{})
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	err = bus.Request(context.Background(), nc, subjects.Node("a", bus.OpDigest),
		&pb.DigestRequest{TenantId: "a.b", Range: &pb.HashRange{}}, &pb.DigestResponse{})
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	err = bus.Request(context.Background(), nc, subjects.Node("a", bus.OpScan),
		&pb.ScanRequest{TenantId: "t", Range: &pb.HashRange{Start: 10, End: 20}, HasAfter: true, AfterHash: 30}, &pb.ScanResponse{})
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
}

// TestTransferResumesAfterRestartThenCleanup adds a third node and stops it
// in the middle of its transfer: restarted, it resumes from its
// checkpoint (it pulls exactly the keys the first run had not), the change
// finishes with equal digests, and after the grace period node a deletes
// exactly the arcs it lost to c.
func TestTransferResumesAfterRestartThenCleanup(t *testing.T) {
	_, nc := natstest.Start(t)
	r := newRingNet(t, nc)
	cfgA := memberConfig(t, r, "a", t.TempDir())
	cfgA.CleanupGrace = 5 * time.Millisecond
	a := startNode(t, nc, cfgA)
	startNode(t, nc, memberConfig(t, r, "b", t.TempDir()))
	boot := r.bootstrap("a", "b")
	keys := writeKeys(t, nc, "a", "t", 1200, boot.Epoch)

	dirC := t.TempDir()
	cfgC := memberConfig(t, r, "c", dirC)
	cfgC.TransferPageSize = 5
	interrupted := make(chan struct{})
	var once sync.Once
	storagenode.SetTransferHook(&cfgC, func(ctx context.Context, page int) {
		if page < 2 {
			return
		}
		// Two pages of one range are merged and checkpointed: stop here
		// until the node is stopped.
		once.Do(func() { close(interrupted) })
		<-ctx.Done()
	})
	c1, err := storagenode.Start(nc, cfgC)
	require.NoError(t, err)
	r.waitState("c to register", registered("c"))

	st := r.start(&pb.ChangeStarted{MigrationId: "add-c", Type: pb.ChangeType_ADD_NODE,
		NodeIds: []string{"c"}, TenantRf: map[string]uint32{"t": 1}})
	moves, want := gained(st, "c", "t", keys)
	require.Positive(t, want)

	select {
	case <-interrupted:
	case <-time.After(waitTimeout):
		t.Fatal("the transfer never reached its third page")
	}
	require.NoError(t, c1.Stop(context.Background()))
	first := counter(cfgC.Metrics, `pairdb_migration_keys_transferred_total{node="c"}`)
	require.Positive(t, first)
	require.Less(t, first, float64(want))

	cfgC2 := memberConfig(t, r, "c", dirC)
	cfgC2.TransferPageSize = 5
	startNode(t, nc, cfgC2)
	end := r.waitState("the addition to finish", finished("add-c"))
	require.Equal(t, membership.Normal, end.Nodes["c"].State)

	require.Equal(t, float64(1), counter(cfgC2.Metrics, `pairdb_migration_transfers_total{node="c",status="resumed"}`))
	second := counter(cfgC2.Metrics, `pairdb_migration_keys_transferred_total{node="c"}`)
	require.Equal(t, float64(want), first+second, "the restarted transfer pulls exactly what the first run had not")

	lost := 0
	var lostArcs []ring.Arc
	for _, mv := range moves {
		if !slices.Contains(mv.From, "a") {
			continue
		}
		da := digest(t, nc, "a", "t", mv.Arc.Start, mv.Arc.End, end.Epoch)
		dc := digest(t, nc, "c", "t", mv.Arc.Start, mv.Arc.End, end.Epoch)
		require.Equal(t, da.GetDigest(), dc.GetDigest(), "arc %+v", mv.Arc)
		lost += int(da.GetKeys())
		lostArcs = append(lostArcs, mv.Arc)
	}
	require.Equal(t, want, lost)

	// After the grace period a deletes every arc it does not replicate under
	// the new ring (what it lost to c, and the strays it held for b), and
	// nothing else.
	owned := 0
	for _, k := range keys {
		if slices.Contains(end.Current().Preference(keyspace.Hash("t", k), 1), "a") {
			owned++
		}
	}
	require.Eventually(t, func() bool {
		return counter(cfgA.Metrics, `pairdb_node_cleanup_deleted_keys_total{node="a"}`) == float64(len(keys)-owned)
	}, waitTimeout, 10*time.Millisecond)
	require.Equal(t, uint64(owned), a.Keys())
	for _, arc := range lostArcs {
		require.Zero(t, digest(t, nc, "a", "t", arc.Start, arc.End, end.Epoch).GetKeys())
	}
	for _, k := range keys {
		h := keyspace.Hash("t", k)
		owner := end.Current().Preference(h, 1)[0]
		require.Equal(t, owner == "a", read(t, nc, "a", "t", k).GetFound(), "key %s", k)
		// Keys of arcs c gained from a moved to c (the ones it gained from b
		// were never on b: the test wrote everything to a).
		if slices.ContainsFunc(lostArcs, func(arc ring.Arc) bool { return arc.Contains(h) }) {
			require.True(t, read(t, nc, "c", "t", k).GetFound(), "key %s moved to c", k)
		}
	}
}

// TestTransferSpeed measures a transfer of PAIRDB_TRANSFER_KEYS keys
// (default 5000) prefilled on node a, pulled by b on an RF change 1 → 2.
func TestTransferSpeed(t *testing.T) {
	n := 5000
	if v := os.Getenv("PAIRDB_TRANSFER_KEYS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	if testing.Short() {
		n = 500
	}
	_, nc := natstest.Start(t)
	r := newRingNet(t, nc)
	dirA := t.TempDir()
	e, err := engine.Open(dirA, engine.Options{CacheBytes: 8 << 20})
	require.NoError(t, err)
	for i := range n {
		k := "key-" + strconv.Itoa(i)
		_, err := e.Apply("t", k, nil, []byte("value-of-"+k+"-padded-to-a-realistic-size-0123456789"), false, dvv.Siblings, 0, 1, nil)
		require.NoError(t, err)
	}
	require.NoError(t, e.Close())

	cfgB := memberConfig(t, r, "b", t.TempDir())
	startNode(t, nc, memberConfig(t, r, "a", dirA))
	startNode(t, nc, cfgB)
	r.bootstrap("a", "b")
	start := time.Now()
	r.start(&pb.ChangeStarted{MigrationId: "rf", Type: pb.ChangeType_REPLICATION_FACTOR,
		TenantId: "t", ReplicationFactor: 2, TenantRf: map[string]uint32{"t": 1}})
	r.waitState("the RF change to finish", finished("rf"))
	took := time.Since(start)
	moved := counter(cfgB.Metrics, `pairdb_migration_keys_transferred_total{node="b"}`)
	require.Positive(t, moved)
	t.Logf("transferred %.0f of %d keys in %s: %.0f keys/s (sync on, page %d)",
		moved, n, took, moved/took.Seconds(), storagenode.DefaultTransferPageSize)
}

// TestNodeWithLostDataIsRefilled restarts a NORMAL node on an empty disk:
// it registers a new incarnation, keeps its place on the ring as
// refilling, refuses reads while it pulls its arcs from the other replica,
// and is serving again once it holds everything that replica holds.
func TestNodeWithLostDataIsRefilled(t *testing.T) {
	_, nc := natstest.Start(t)
	r := newRingNet(t, nc)
	a1, err := storagenode.Start(nc, memberConfig(t, r, "a", t.TempDir()))
	require.NoError(t, err)
	startNode(t, nc, memberConfig(t, r, "b", t.TempDir()))
	r.bootstrap("a", "b")
	st := r.tenantRF("u", 2)
	keys := writeKeys(t, nc, "b", "u", 300, st.Epoch)
	require.NoError(t, a1.Stop(context.Background()))

	// The refill is held at its first page until the test saw a refuse a
	// read.
	cfg := memberConfig(t, r, "a", t.TempDir())
	cfg.TransferPageSize = 10
	release := make(chan struct{})
	storagenode.SetTransferHook(&cfg, func(ctx context.Context, _ int) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	a2 := startNode(t, nc, cfg)
	require.NotEqual(t, a1.Incarnation(), a2.Incarnation())
	st = r.waitState("a to come back refilling", func(st *membership.State) bool {
		return st.Nodes["a"].Incarnation == a2.Incarnation() && st.Nodes["a"].Refilling
	})
	require.Equal(t, membership.Normal, st.Nodes["a"].State, "it keeps its place")
	require.False(t, st.Serving("a"))
	err = bus.Request(context.Background(), nc, subjects.Node("a", bus.OpRead),
		&pb.ReadRequest{TenantId: "u", Key: keys[0], Epoch: st.Epoch}, &pb.ReadResponse{})
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(err), "a refilling node serves no reads: %v", err)

	close(release)
	st = r.waitState("a to be refilled", func(st *membership.State) bool { return !st.Nodes["a"].Refilling })
	require.True(t, st.Serving("a"))
	full := func(node string) *pb.DigestResponse { return digest(t, nc, node, "u", 0, 0, st.Epoch) }
	require.EqualValues(t, len(keys), full("a").GetKeys())
	require.Equal(t, full("b").GetDigest(), full("a").GetDigest())
	for _, k := range keys[:10] {
		resp := &pb.ReadResponse{}
		require.NoError(t, bus.Request(context.Background(), nc, subjects.Node("a", bus.OpRead),
			&pb.ReadRequest{TenantId: "u", Key: k, Epoch: st.Epoch}, resp))
		require.True(t, resp.GetFound(), k)
	}
}
