package tests

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/dvv"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

func TestPutGetDeleteAtEveryLevel(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	// Reads pair with writes so that R + W > N: only then must a read see
	// the write it follows.
	readAfter := map[string]string{"one": "all", "quorum": "quorum", "all": "one"}
	for _, level := range []string{"one", "quorum", "all"} {
		key := "k-" + level
		put, err := h.c.Put(ctx, key, []byte("v-"+level), client.Consistency(level))
		require.NoError(t, err)
		require.Equal(t, level, put.GetConsistency())
		require.GreaterOrEqual(t, int(put.GetReplicaCount()), map[string]int{"one": 1, "quorum": 2, "all": 3}[level])
		require.NotEmpty(t, put.GetVectorClock())
		require.NotEmpty(t, put.GetIdempotencyKey())

		got, err := h.c.Get(ctx, key, client.ReadConsistency(readAfter[level]))
		require.NoError(t, err)
		require.True(t, got.GetFound())
		require.Equal(t, "v-"+level, string(got.GetValue()))
		require.Equal(t, []string{"v-" + level}, values(got))

		_, err = h.c.Delete(ctx, key, client.Consistency(level), client.WithContext(got.GetContext()))
		require.NoError(t, err)
		got, err = h.c.Get(ctx, key, client.ReadConsistency(readAfter[level]))
		require.NoError(t, err)
		require.False(t, got.GetFound(), "deleted key must read as not found")
		require.NotEmpty(t, got.GetVectorClock(), "a deleted key still returns its context")
	}
}

func TestMissingKeyIsNotFound(t *testing.T) {
	h := startCluster(t, 3)
	got, err := h.c.Get(ctxT(t), "never-written")
	require.NoError(t, err)
	require.False(t, got.GetFound())
	require.Empty(t, got.GetSiblings())
}

func TestOneNodeDown(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	h.stopNode("node-3")
	for i := range 20 { // enough keys that node-3 is a replica of all and the first choice of some
		key := fmt.Sprintf("down-%d", i)
		_, err := h.c.Put(ctx, key, []byte("x"), client.Consistency("one"))
		require.NoError(t, err)
		_, err = h.c.Put(ctx, key, []byte("y"), client.Consistency("quorum"))
		require.NoError(t, err)
		got, err := h.c.Get(ctx, key, client.ReadConsistency("quorum"))
		require.NoError(t, err)
		require.Contains(t, values(got), "y")
	}
	start := time.Now()
	_, err := h.c.Put(ctx, "down-all", []byte("z"), client.Consistency("all"))
	requireCode(t, err, pb.ErrorCode_QUORUM_NOT_REACHED)
	require.Less(t, time.Since(start), 6*time.Second, "ALL must fail within the request deadline")
	_, err = h.c.Get(ctx, "down-0", client.ReadConsistency("all"))
	requireCode(t, err, pb.ErrorCode_QUORUM_NOT_REACHED)
}

func TestSiblingsAndResolution(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.Put(ctx, "cart", []byte("apple"))
	require.NoError(t, err)
	_, err = h.c.Put(ctx, "cart", []byte("pear")) // no context: concurrent with apple
	require.NoError(t, err)
	got, err := h.c.Get(ctx, "cart", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"apple", "pear"}, values(got))
	require.Empty(t, got.GetValue(), "value is only set for a single sibling")

	_, err = h.c.Put(ctx, "cart", []byte("apple+pear"), client.WithContext(got.GetContext()))
	require.NoError(t, err)
	got, err = h.c.Get(ctx, "cart", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, []string{"apple+pear"}, values(got))
}

func TestLastWriteWinsTenant(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "lww", ConflictPolicy: "last_write_wins"})
	require.NoError(t, err)
	c := client.New(h.nc, client.WithTenant("lww"))
	for i := range 5 {
		_, err := c.Put(ctx, "k", []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	got, err := c.Get(ctx, "k", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Len(t, got.GetSiblings(), 1)
}

func TestSiblingCap(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "capped", MaxSiblings: 2})
	require.NoError(t, err)
	c := client.New(h.nc, client.WithTenant("capped"))
	for _, v := range []string{"a", "b"} {
		_, err := c.Put(ctx, "k", []byte(v), client.Consistency("all"))
		require.NoError(t, err)
	}
	_, err = c.Put(ctx, "k", []byte("c"), client.Consistency("all"))
	requireCode(t, err, pb.ErrorCode_TOO_MANY_SIBLINGS)
	got, err := c.Get(ctx, "k", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a", "b"}, values(got), "a refused write must not replace a sibling")
	_, err = c.Put(ctx, "k", []byte("c"), client.WithContext(got.GetContext()))
	require.NoError(t, err, "a write with context resolves the siblings")
}

func TestReadRepairFixesMissedWrite(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	// A write node-2 missed and holds no hint for (its hint could not be
	// stored): minted on node-1 and merged into node-3 directly. (Stopping
	// node-2 for a real write would leave a hint that can reach it before
	// the read does.)
	epoch := h.dev.Coordinators()[0].Ring.State().Epoch
	applied := new(pb.ApplyResponse)
	require.NoError(t, bus.Request(ctx, h.nc, bus.Subjects{}.Node("node-1", bus.OpApply), &pb.ApplyRequest{
		TenantId: "default", Key: "repair-me", Value: []byte("v1"), Policy: pb.ConflictPolicy_SIBLINGS, Epoch: epoch,
		DeadlineUnixMs: soon(),
	}, applied))
	require.NoError(t, bus.Request(ctx, h.nc, bus.Subjects{}.Node("node-3", bus.OpMerge), &pb.MergeRequest{
		TenantId: "default", Key: "repair-me", Object: applied.GetObject(), Policy: pb.ConflictPolicy_SIBLINGS, Epoch: epoch,
	}, new(pb.MergeResponse)))
	_, found := h.readNode("node-2", "default", "repair-me")
	require.False(t, found, "node-2 missed the write")

	got, err := h.c.Get(ctx, "repair-me", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, "v1", string(got.GetValue()))
	require.Eventually(t, func() bool {
		obj, found := h.readNode("node-2", "default", "repair-me")
		return found && len(obj.Live()) == 1 && string(obj.Live()[0].Value) == "v1"
	}, 10*time.Second, 20*time.Millisecond, "read repair must bring node-2 up to date")
	a, _ := h.readNode("node-1", "default", "repair-me")
	b, _ := h.readNode("node-2", "default", "repair-me")
	require.True(t, dvv.Equal(a, b), "replicas converge to the same object")
}

func TestIdempotentRetry(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	first, err := h.c.Put(ctx, "once", []byte("v"), client.IdempotencyKey("req-1"))
	require.NoError(t, err)
	require.False(t, first.GetDuplicate())
	again, err := h.c.Put(ctx, "once", []byte("v"), client.IdempotencyKey("req-1"))
	require.NoError(t, err)
	require.True(t, again.GetDuplicate())
	require.Equal(t, first.GetVectorClock(), again.GetVectorClock())
	got, err := h.c.Get(ctx, "once", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Len(t, got.GetSiblings(), 1, "a retried write is applied once")

	_, err = h.c.Put(ctx, "once", []byte("other"), client.IdempotencyKey("req-1"))
	requireCode(t, err, pb.ErrorCode_IDEMPOTENCY_KEY_CONFLICT)
}

func TestConcurrentDuplicatesApplyOnce(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	resps := make([]*pb.PutResponse, 8)
	errs := make([]error, 8)
	for i := range resps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = h.c.Put(ctx, "dup", []byte("v"), client.IdempotencyKey("same"))
		}()
	}
	wg.Wait()
	originals := 0
	for i := range resps {
		require.NoError(t, errs[i])
		if !resps[i].GetDuplicate() {
			originals++
		}
		require.Equal(t, resps[0].GetVectorClock(), resps[i].GetVectorClock())
	}
	require.Equal(t, 1, originals)
	got, err := h.c.Get(ctx, "dup", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Len(t, got.GetSiblings(), 1)
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	h := startClusterIn(t, dir, 3)
	_, err := h.c.Put(ctxT(t), "durable", []byte("still here"), client.Consistency("all"))
	require.NoError(t, err)
	h.close()

	h = startClusterIn(t, dir, 3)
	got, err := h.c.Get(ctxT(t), "durable", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, "still here", string(got.GetValue()))
}

func TestRestartedNodeKeepsData(t *testing.T) {
	h := startCluster(t, 3)
	_, err := h.c.Put(ctxT(t), "k", []byte("v"), client.Consistency("all"))
	require.NoError(t, err)
	before, _ := h.readNode("node-1", "default", "k")
	h.stopNode("node-1")
	h.startNode("node-1")
	after, found := h.readNode("node-1", "default", "k")
	require.True(t, found)
	require.True(t, dvv.Equal(before, after))
}

func TestTwoCoordinatorsShareTheLoad(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	second, err := h.dev.StartCoordinator(ctx)
	require.NoError(t, err)
	for i := range 100 {
		_, err := h.c.Put(ctx, fmt.Sprintf("k%d", i), []byte("v"))
		require.NoError(t, err)
	}
	require.Positive(t, second.Served(), "the second coordinator must take part of the traffic")
	require.Less(t, second.Served(), 100, "the first coordinator must take part of the traffic")

	// Stopping a coordinator under load loses no request: what it already
	// received is answered (or refused as UNAVAILABLE, which a client
	// retries elsewhere); nothing waits out its deadline.
	get := func() error {
		for {
			err := bus.Request(ctx, h.nc, bus.Subjects{}.KV("default", bus.OpGet), &pb.GetRequest{Key: "k1"}, new(pb.GetResponse))
			if !status.Is(err, pb.ErrorCode_UNAVAILABLE) {
				return err
			}
		}
	}
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []error
		served   atomic.Int64
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := get(); err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				served.Add(1)
			}
		}()
	}
	require.Eventually(t, func() bool { return served.Load() > 20 }, 5*time.Second, time.Millisecond)
	require.NoError(t, h.dev.StopCoordinator(ctx, second))
	before := served.Load()
	require.Eventually(t, func() bool { return served.Load() > before+20 }, 5*time.Second, time.Millisecond,
		"the remaining coordinator serves alone")
	close(stop)
	wg.Wait()
	require.Empty(t, failures)
}

func TestFiveNodes(t *testing.T) {
	h := startCluster(t, 5)
	ctx := ctxT(t)
	for i := range 50 {
		_, err := h.c.Put(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i)), client.Consistency("all"))
		require.NoError(t, err)
	}
	// RF 3 on 5 nodes: each key is on exactly 3 nodes.
	for i := range 50 {
		holders := 0
		for _, n := range h.dev.NodeIDs() {
			if _, found := h.readNode(n, "default", fmt.Sprintf("k%d", i)); found {
				holders++
			}
		}
		require.Equal(t, 3, holders, "key k%d", i)
	}
	h.stopNode("node-5")
	h.stopNode("node-4")
	ok := 0
	for i := range 50 {
		if _, err := h.c.Get(ctx, fmt.Sprintf("k%d", i), client.ReadConsistency("quorum")); err == nil {
			ok++
		}
	}
	require.Positive(t, ok, "keys with two live replicas still read at QUORUM")
}

func TestLargeValue(t *testing.T) {
	h := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i)
	}
	_, err := h.c.Put(ctx, "big", big)
	require.NoError(t, err)
	got, err := h.c.Get(ctx, "big")
	require.NoError(t, err)
	require.Equal(t, big, got.GetValue())
	_, err = h.c.Put(ctx, "too-big", append(big, 0))
	requireCode(t, err, pb.ErrorCode_VALUE_TOO_LARGE)
}

// TestRetryAfterFailedWriteAppliesOnce: a write that failed its quorum may
// still have landed on some replicas; its retry (same idempotency key)
// finishes that write instead of adding the value a second time.
func TestRetryAfterFailedWriteAppliesOnce(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	h.stopNode("node-3")
	_, err := h.c.Put(ctx, "partial", []byte("v"), client.Consistency("all"), client.IdempotencyKey("once"))
	requireCode(t, err, pb.ErrorCode_QUORUM_NOT_REACHED)
	landed := 0
	for _, n := range []string{"node-1", "node-2"} {
		if _, found := h.readNode(n, "default", "partial"); found {
			landed++
		}
	}
	require.Positive(t, landed, "the failed write reached some replicas")

	resp, err := h.c.Put(ctx, "partial", []byte("v"), client.Consistency("quorum"), client.IdempotencyKey("once"))
	require.NoError(t, err)
	require.False(t, resp.GetDuplicate())
	h.startNode("node-3")
	got, err := h.c.Get(ctx, "partial", client.ReadConsistency("all"))
	require.NoError(t, err)
	require.Equal(t, []string{"v"}, values(got), "the value must not appear twice")

	// And the finished retry is now a plain duplicate.
	again, err := h.c.Put(ctx, "partial", []byte("v"), client.IdempotencyKey("once"))
	require.NoError(t, err)
	require.True(t, again.GetDuplicate())
}
