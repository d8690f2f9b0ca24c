package tests

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// putRaw sends a PutRequest as any NATS client could.
func (h *harness) putRaw(tenant string, req *pb.PutRequest) error {
	return bus.Request(ctxT(h.t), h.nc, bus.Subjects{}.KV(tenant, bus.OpPut), req, new(pb.PutResponse))
}

// TestForgedContextsAreRefused: a write's context must be one the cluster
// issued for that key. Readable clocks sent alone, made-up or damaged
// tokens, another key's token, a clock with a counter that would wrap or
// with thousands of made-up actors: each is INVALID_ARGUMENT, nothing is
// written, and the key goes on as before, with its replicas equal.
func TestForgedContextsAreRefused(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.Put(ctx, "k", []byte("v1"), client.Consistency("all"))
	require.NoError(t, err)
	got, err := h.c.Get(ctx, "k", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.NotEmpty(t, got.GetContext())
	_, err = h.c.Put(ctx, "other", []byte("x"), client.Consistency("all"))
	require.NoError(t, err)
	otherCtx, err := h.c.Get(ctx, "other")
	require.NoError(t, err)
	inc := h.dev.Coordinators()[0].Ring.State().Nodes["node-1"].Incarnation

	many := make([]*pb.ClockEntry, 20000)
	for i := range many {
		many[i] = &pb.ClockEntry{Actor: fmt.Sprintf("made-up-%06d", i), Counter: 1}
	}
	flipped := bytes.Clone(got.GetContext())
	flipped[len(flipped)/2] ^= 0x40
	for name, req := range map[string]*pb.PutRequest{
		"readable clock alone":       {Key: "k", Value: []byte("f"), VectorClock: got.GetVectorClock()},
		"wrapping counter":           {Key: "k", Value: []byte("f"), VectorClock: []*pb.ClockEntry{{Actor: inc, Counter: 1<<64 - 1}}},
		"made-up actors":             {Key: "k", Value: []byte("f"), VectorClock: many},
		"made-up token":              {Key: "k", Value: []byte("f"), Context: []byte("a context of my own making")},
		"damaged token":              {Key: "k", Value: []byte("f"), Context: flipped},
		"another key's token":        {Key: "k", Value: []byte("f"), Context: otherCtx.GetContext()},
		"token and a clock it lacks": {Key: "k", Value: []byte("f"), Context: got.GetContext(), VectorClock: []*pb.ClockEntry{{Actor: inc, Counter: 1 << 40}}},
	} {
		err := h.putRaw("default", req)
		require.True(t, status.Is(err, pb.ErrorCode_INVALID_ARGUMENT), "%s: %v", name, err)
	}
	err = bus.Request(ctx, h.nc, bus.Subjects{}.KV("default", bus.OpDelete),
		&pb.DeleteRequest{Key: "k", Context: []byte("forged")}, new(pb.DeleteResponse))
	require.True(t, status.Is(err, pb.ErrorCode_INVALID_ARGUMENT), "delete: %v", err)

	again, err := h.c.Get(ctx, "k", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, values(again), "nothing was written")
	// The issued context works, with or without its readable twin.
	require.NoError(t, h.putRaw("default", &pb.PutRequest{Key: "k", Value: []byte("v2"), Consistency: "all",
		Context: got.GetContext(), VectorClock: got.GetVectorClock()}))
	final, err := h.c.Get(ctx, "k", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, []string{"v2"}, values(final))
	h.requireConverged([]string{"k"}, h.dev.NodeIDs()...)
}

// TestStoredObjectsStayWithinOneMessage: a key's stored object (siblings
// and clock) counts against the limits, not only each value: a write that
// would store more than one NATS message carries is VALUE_TOO_LARGE, and
// an answer too large for one message (a JSON read of a big object) is an
// error, not silence until the client's deadline.
func TestStoredObjectsStayWithinOneMessage(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "big", ReplicationFactor: 3,
		MaxValueBytes: 4 << 20, MaxSiblings: 1000})
	require.NoError(t, err)
	c := client.New(h.nc, client.WithTenant("big"), client.WithRetries(0), client.WithTimeout(20*time.Second))
	value := bytes.Repeat([]byte("x"), 3<<20+512<<10) // 3.5 MiB: two fit in a message, three do not
	for i := range 2 {
		_, err := c.Put(ctx, "k", value, client.Consistency("all"), client.IdempotencyKey(fmt.Sprint("big-", i)))
		require.NoError(t, err, "sibling %d", i)
	}
	_, err = c.Put(ctx, "k", value, client.Consistency("all"), client.IdempotencyKey("big-2"))
	requireCode(t, err, pb.ErrorCode_VALUE_TOO_LARGE)
	got, err := c.Get(ctx, "k", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Len(t, got.GetSiblings(), 2, "the refused write stored nothing")

	body, err := protojson.Marshal(&pb.GetRequest{Key: "k", Consistency: "one"})
	require.NoError(t, err)
	msg := nats.NewMsg(bus.Subjects{}.KV("big", bus.OpGet))
	msg.Data = body
	msg.Header.Set(bus.HeaderContentType, bus.ContentTypeJSON)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := h.nc.RequestMsgWithContext(rctx, msg)
	require.NoError(t, err, "a JSON answer over max_payload is answered, not dropped")
	require.Equal(t, pb.ErrorCode_VALUE_TOO_LARGE.String(), reply.Header.Get("Nats-Service-Error-Code"))
}

// TestNodesRefuseHostileRequests: a storage node checks what it is sent as
// if anyone could send it (NATS permissions are the first fence; this is
// the second). Objects no replica could produce, clocks naming actors the
// ring log never registered or dots this node never minted, applies with
// no deadline, one too far ahead, or past it, forwards to non-replicas, to
// subjects that are not inboxes, or two thousand of them: each is refused
// with a typed error and counted, nothing is stored and nothing is sent.
// So is data for a tenant the ring log never recorded or recorded deleted.
func TestNodesRefuseHostileRequests(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.Put(ctx, "k", []byte("v"), client.Consistency("all"))
	require.NoError(t, err)
	before, _ := h.readNode("node-1", "default", "k")
	st := h.dev.Coordinators()[0].Ring.State()
	self, peer := st.Nodes["node-1"].Incarnation, st.Nodes["node-2"].Incarnation
	epoch := st.Epoch
	obj := func(sibs []dvv.Sibling, clock dvv.VV) *pb.Object {
		return dvvpb.ObjectToProto(dvv.Object{Siblings: sibs, Clock: clock})
	}
	tomb := func(actor string, c uint64) []dvv.Sibling {
		return []dvv.Sibling{{Tombstone: true, Dot: dvv.Dot{Actor: actor, Counter: c}}}
	}
	merges := func() uint64 {
		return h.counter(`pairdb_node_requests_total{node="node-2",op="merge"}`) +
			h.counter(`pairdb_node_requests_total{node="node-3",op="merge"}`)
	}
	mergesBefore := merges()

	for name, o := range map[string]*pb.Object{
		"a clock alone":               obj(nil, dvv.VV{peer: 1<<64 - 1}),
		"a wrapping counter":          obj(tomb(peer, 1<<64-1), dvv.VV{peer: 1<<64 - 1}),
		"an actor nobody knows":       obj(tomb("made-up", 1), dvv.VV{"made-up": 1}),
		"a dot node-1 never made":     obj(tomb(self, 1<<40), dvv.VV{self: 1 << 40}),
		"a tombstone with a value":    obj([]dvv.Sibling{{Tombstone: true, Value: []byte("x"), Dot: dvv.Dot{Actor: peer, Counter: 1}}}, dvv.VV{peer: 1}),
		"a sibling outside its clock": obj(tomb(peer, 5), dvv.VV{peer: 1}),
	} {
		err := bus.Request(ctx, h.nc, bus.Subjects{}.Node("node-1", bus.OpMerge),
			&pb.MergeRequest{TenantId: "default", Key: "k", Object: o, Epoch: epoch}, new(pb.MergeResponse))
		require.True(t, status.Is(err, pb.ErrorCode_INVALID_ARGUMENT), "merge with %s: %v", name, err)
	}

	// Tenants the ring log never recorded, or recorded as deleted, take no
	// data.
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "gone"})
	require.NoError(t, err)
	_, err = h.c.DeleteTenant(ctx, &pb.DeleteTenantRequest{TenantId: "gone"})
	require.NoError(t, err)
	epoch = h.dev.Coordinators()[0].Ring.State().Epoch
	valid := obj(tomb(peer, 1), dvv.VV{peer: 1})
	for _, tenant := range []string{"nosuch", "gone"} {
		err := bus.Request(ctx, h.nc, bus.Subjects{}.Node("node-1", bus.OpMerge),
			&pb.MergeRequest{TenantId: tenant, Key: "k", Object: valid, Epoch: epoch}, new(pb.MergeResponse))
		require.True(t, status.Is(err, pb.ErrorCode_TENANT_NOT_FOUND), "merge into %s: %v", tenant, err)
		err = bus.Request(ctx, h.nc, bus.Subjects{}.Node("node-1", bus.OpApply),
			&pb.ApplyRequest{TenantId: tenant, Key: "k", Value: []byte("v"), Epoch: epoch, DeadlineUnixMs: soon()}, new(pb.ApplyResponse))
		require.True(t, status.Is(err, pb.ErrorCode_TENANT_NOT_FOUND), "apply to %s: %v", tenant, err)
		_, found, lerr := h.dev.Node("node-1").Local(tenant, "k")
		require.NoError(t, lerr)
		require.False(t, found, "nothing stored for %s", tenant)
	}

	// A coordinator's inbox: the one reply prefix nodes answer forwards on.
	inbox := bus.CoordinatorInbox + ".hostile.1"
	many := make([]*pb.Forward, 2000)
	for i := range many {
		many[i] = &pb.Forward{NodeId: fmt.Sprintf("node-%d", i%3+2), Reply: inbox}
	}
	apply := func(mod func(*pb.ApplyRequest)) error {
		req := &pb.ApplyRequest{TenantId: "default", Key: "k", Value: []byte("hostile"), Epoch: epoch, DeadlineUnixMs: soon()}
		mod(req)
		return bus.Request(ctx, h.nc, bus.Subjects{}.Node("node-1", bus.OpApply), req, new(pb.ApplyResponse))
	}
	for name, tc := range map[string]struct {
		mod  func(*pb.ApplyRequest)
		code pb.ErrorCode
	}{
		"no deadline":              {func(r *pb.ApplyRequest) { r.DeadlineUnixMs = 0 }, pb.ErrorCode_INVALID_ARGUMENT},
		"a deadline an hour ahead": {func(r *pb.ApplyRequest) { r.DeadlineUnixMs = time.Now().Add(time.Hour).UnixMilli() }, pb.ErrorCode_INVALID_ARGUMENT},
		"a deadline passed":        {func(r *pb.ApplyRequest) { r.DeadlineUnixMs = time.Now().Add(-time.Second).UnixMilli() }, pb.ErrorCode_EXPIRED},
		"2000 forwards":            {func(r *pb.ApplyRequest) { r.Forwards = many }, pb.ErrorCode_INVALID_ARGUMENT},
		"a forward to a non-member": {func(r *pb.ApplyRequest) {
			r.Forwards = []*pb.Forward{{NodeId: "node-99", Reply: inbox}}
		}, pb.ErrorCode_INVALID_ARGUMENT},
		"a forward answering on a client subject": {func(r *pb.ApplyRequest) {
			r.Forwards = []*pb.Forward{{NodeId: "node-2", Reply: bus.Subjects{}.KV("default", bus.OpPut)}}
		}, pb.ErrorCode_INVALID_ARGUMENT},
		"a context naming nobody": {func(r *pb.ApplyRequest) {
			r.Context = []*pb.ClockEntry{{Actor: "made-up", Counter: 1}}
		}, pb.ErrorCode_INVALID_ARGUMENT},
		"a context with a wrapping counter": {func(r *pb.ApplyRequest) {
			r.Context = []*pb.ClockEntry{{Actor: peer, Counter: 1<<64 - 1}}
		}, pb.ErrorCode_INVALID_ARGUMENT},
		"a context ahead of node-1's own dots": {func(r *pb.ApplyRequest) {
			r.Context = []*pb.ClockEntry{{Actor: self, Counter: 1 << 40}}
		}, pb.ErrorCode_INVALID_ARGUMENT},
	} {
		err := apply(tc.mod)
		require.True(t, status.Is(err, tc.code), "apply with %s: want %s, got %v", name, tc.code, err)
	}

	after, _ := h.readNode("node-1", "default", "k")
	require.True(t, dvv.Equal(before, after), "nothing was stored: %+v", after)
	require.Equal(t, mergesBefore, merges(), "nothing was forwarded")
	var refused uint64
	for _, reason := range []string{"deadline", "unknown_actor", "forward", "not_a_replica", "tenant"} {
		refused += h.counter(fmt.Sprintf(`pairdb_node_refused_total{node="node-1",reason=%q}`, reason))
	}
	require.GreaterOrEqual(t, refused, uint64(11), "refusals are counted")
	got, err := h.c.Get(ctx, "k", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, []string{"v"}, values(got))
}
