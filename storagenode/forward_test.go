package storagenode_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/internal/natstest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// An apply with forwards sends the minted object to the named replicas,
// whose acks arrive on the given reply subjects; each replica then holds
// the same object as the minting one. A retry of the same origin mints
// nothing and forwards what is stored.
func TestApplyForwardsTheMintedObject(t *testing.T) {
	srv, _ := natstest.Start(t)
	nc := natstest.ConnectCoordinator(t, srv)
	for _, id := range []string{"n1", "n2", "n3"} {
		startNode(t, nc, testConfig(t, id, t.TempDir()))
	}
	mux, err := bus.NewMux(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = mux.Close() })

	forwardTo := func(req *pb.ApplyRequest) *bus.MuxWaiter {
		w := mux.Open(2)
		req.Forwards = []*pb.Forward{{NodeId: "n2", Reply: w.Subject(0)}, {NodeId: "n3", Reply: w.Subject(1)}}
		return w
	}
	waitAcks := func(w *bus.MuxWaiter) {
		t.Helper()
		for range 2 {
			select {
			case r := <-w.Replies():
				require.NoError(t, bus.DecodeReply("merge", r.Msg, new(pb.MergeResponse)), "replica %d", r.Index)
			case <-time.After(5 * time.Second):
				t.Fatal("a forwarded write was not acknowledged")
			}
		}
		w.Close()
	}

	req := &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("v1"), Policy: pb.ConflictPolicy_SIBLINGS, Origin: []byte("origin-1")}
	w := forwardTo(req)
	resp, err := apply(t, nc, "n1", req)
	require.NoError(t, err)
	waitAcks(w)
	minted := dvvpb.ObjectFromProto(resp.GetObject())
	for _, id := range []string{"n2", "n3"} {
		got := read(t, nc, id, "acme", "k")
		require.True(t, got.GetFound(), id)
		require.Equal(t, minted, dvvpb.ObjectFromProto(got.GetObject()), id)
	}

	// The same request again: nothing new is minted; the stored object
	// goes to the replicas again (one that missed it would get it now).
	w = forwardTo(req)
	again, err := apply(t, nc, "n1", req)
	require.NoError(t, err)
	waitAcks(w)
	require.Equal(t, minted, dvvpb.ObjectFromProto(again.GetObject()))
}

// Forward targets are subject tokens and acks go to the coordinators'
// inboxes only: anything else is refused before a version is minted.
func TestApplyRefusesBadForwards(t *testing.T) {
	_, nc := natstest.Start(t)
	startNode(t, nc, testConfig(t, "n1", t.TempDir()))
	coordinator := bus.CoordinatorInbox + ".x"
	for _, f := range []*pb.Forward{{NodeId: "n2.>", Reply: coordinator}, {NodeId: "", Reply: coordinator}, {NodeId: "n2"},
		// nats.go's default inbox and another part's: not the coordinators'.
		{NodeId: "n2", Reply: "_INBOX.x"}, {NodeId: "n2", Reply: bus.NodeInbox("n2") + ".x"}} {
		_, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("v"), Forwards: []*pb.Forward{f}})
		require.True(t, status.Is(err, pb.ErrorCode_INVALID_ARGUMENT), "forward %v: got %v", f, err)
	}
	require.False(t, read(t, nc, "n1", "acme", "k").GetFound(), "a refused apply stored nothing")
}

// BenchmarkNodeApplyForwarded is the storage side of one put (a fresh key
// each, so objects do not grow), over NATS on
// real Pebble with fsync: an apply on one node that forwards to two
// others, until both acks are in. Parallel clients show group commit.
func BenchmarkNodeApplyForwarded(b *testing.B) {
	srv, _ := natstest.Start(b)
	nc := natstest.ConnectCoordinator(b, srv)
	for _, id := range []string{"n1", "n2", "n3"} {
		startNode(b, nc, testConfig(b, id, b.TempDir()))
	}
	mux, err := bus.NewMux(nc)
	require.NoError(b, err)
	b.Cleanup(func() { _ = mux.Close() })
	value := make([]byte, 128)
	b.SetParallelism(8)
	var seq atomic.Uint64
	b.RunParallel(func(pb_ *testing.PB) {
		for pb_.Next() {
			w := mux.Open(2)
			req := &pb.ApplyRequest{
				TenantId: "bench", Key: fmt.Sprintf("key-%d", seq.Add(1)), Value: value, Policy: pb.ConflictPolicy_SIBLINGS,
				DeadlineUnixMs: soon(),
				Forwards:       []*pb.Forward{{NodeId: "n2", Reply: w.Subject(0)}, {NodeId: "n3", Reply: w.Subject(1)}},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := bus.Request(ctx, nc, subjects.Node("n1", bus.OpApply), req, new(pb.ApplyResponse))
			for i := 0; err == nil && i < 2; i++ {
				select {
				case <-w.Replies():
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
			cancel()
			w.Close()
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}
