package tests

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/coordinator"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/jetstream/hints"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// hintWait bounds every wait for hint replay.
const hintWait = 20 * time.Second

func (h *harness) counter(name string) uint64 {
	return h.dev.Metrics().GetOrCreateCounter(name).Get()
}

func (h *harness) stored(node string) uint64 {
	return h.counter(fmt.Sprintf(`pairdb_hints_stored_total{node=%q}`, node))
}

// waitStored waits until exactly n hints were stored for node: hints are
// stored by the merge goroutines, which may finish after the write answered.
func (h *harness) waitStored(node string, n uint64) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.stored(node) >= n }, hintWait, 5*time.Millisecond,
		"%s: %d hints stored, want %d", node, h.stored(node), n)
	require.EqualValues(h.t, n, h.stored(node))
}

func (h *harness) replayed(node string) uint64 {
	return h.counter(fmt.Sprintf(`pairdb_hints_replayed_total{node=%q}`, node))
}

// waitReplayed waits until node has replayed at least n hints (counted
// since the cluster started).
func (h *harness) waitReplayed(node string, n uint64) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.replayed(node) >= n }, hintWait, 5*time.Millisecond,
		"node %s replayed %d of %d hints", node, h.replayed(node), n)
}

// waitReplayedExactly also checks that no hint was replayed twice.
func (h *harness) waitReplayedExactly(node string, n uint64) {
	h.t.Helper()
	h.waitReplayed(node, n)
	require.Equal(h.t, n, h.replayed(node), "no hint is replayed twice here")
}

func (h *harness) coordinator() *cluster.Coordinator {
	cs := h.dev.Coordinators()
	require.NotEmpty(h.t, cs)
	return cs[0]
}

// putKeys writes n keys named prefix-i at level with a few writers; every
// put must succeed.
func (h *harness) putKeys(prefix string, n int, level string) []string {
	h.t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := atomic.Int64{}
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				_, err := h.c.Put(ctxT(h.t), keys[i], []byte("v-"+keys[i]), client.Consistency(level))
				if err != nil {
					errs <- fmt.Errorf("put %s: %w", keys[i], err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(h.t, err)
	}
	return keys
}

// requireConverged checks, on direct node reads, that every key is on every
// node with equal objects.
func (h *harness) requireConverged(keys []string, nodes ...string) {
	h.t.Helper()
	for _, k := range keys {
		want, found := h.readNode(nodes[0], "default", k)
		require.True(h.t, found, "%s on %s", k, nodes[0])
		for _, n := range nodes[1:] {
			got, found := h.readNode(n, "default", k)
			require.True(h.t, found, "%s missing on %s", k, n)
			require.True(h.t, dvv.Equal(want, got), "%s differs on %s: %+v vs %+v", k, n, got, want)
		}
	}
}

func (h *harness) waitHealth(node string, want coordinator.Health) {
	h.t.Helper()
	c := h.coordinator()
	require.Eventually(h.t, func() bool { return c.Health(node) == want }, hintWait, 5*time.Millisecond,
		"node %s is %s, want %s", node, c.Health(node), want)
}

// hintQueue opens the hints stream as a coordinator does.
func (h *harness) hintQueue() (*hints.Queue, jetstream.JetStream) {
	h.t.Helper()
	js, err := jetstream.New(h.nc)
	require.NoError(h.t, err)
	q, err := hints.Open(ctxT(h.t), js, hints.Config{})
	require.NoError(h.t, err)
	return q, js
}

func TestHintsHealANodeThatWasDown(t *testing.T) {
	h := startCluster(t, 3)
	h.stopNode("node-3")
	keys := h.putKeys("down", 300, "quorum")
	// RF 3 on 3 nodes: node-3 replicates every key and missed every write.
	h.waitStored("node-3", uint64(len(keys)))
	require.Zero(t, h.counter(`pairdb_hints_failed_total{node="node-3"}`))
	require.Equal(t, coordinator.Down, h.coordinator().Health("node-3"))
	require.Equal(t, coordinator.Down, h.coordinator().Liveness()["node-3"])

	h.startNode("node-3")
	h.waitHealth("node-3", coordinator.Up)
	h.waitReplayedExactly("node-3", uint64(len(keys)))
	h.requireConverged(keys, "node-1", "node-2", "node-3")
	// Nothing but hints fixed node-3: no key was read through a coordinator.
	require.Zero(t, h.counter(`coordinator_repairs_total{status="ok"}`))
	require.Zero(t, h.counter(`coordinator_requests_total{operation="get",consistency="quorum"}`))
}

func TestHintReplayIsIdempotent(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	q, _ := h.hintQueue()
	hint := func(node, key string, o dvv.Object) {
		t.Helper()
		require.NoError(t, q.Add(ctx, node, &pb.MergeRequest{
			TenantId: "default", Key: key, Object: dvvpb.ObjectToProto(o), Policy: pb.ConflictPolicy_SIBLINGS,
		}))
	}

	// An older object replayed after a newer write, and twice: nothing
	// changes.
	p1, err := h.c.Put(ctx, "k", []byte("v1"), client.Consistency("all"))
	require.NoError(t, err)
	older, _ := h.readNode("node-1", "default", "k")
	_, err = h.c.Put(ctx, "k", []byte("v2"), client.Consistency("all"), client.WithContext(p1.GetContext()))
	require.NoError(t, err)
	newer, _ := h.readNode("node-1", "default", "k")
	require.False(t, dvv.Equal(older, newer))
	hint("node-1", "k", older)
	hint("node-1", "k", older)
	hint("node-1", "k", newer)

	// A concurrent object replayed twice merges once.
	_, err = h.c.Put(ctx, "c", []byte("base"), client.Consistency("all"))
	require.NoError(t, err)
	base, _ := h.readNode("node-1", "default", "c")
	concurrent := dvv.Update(dvv.Object{}, nil, h.ghostActor("elsewhere"), []byte("other"), false, time.Now().UnixMilli(), dvv.Siblings)
	hint("node-1", "c", concurrent)
	hint("node-1", "c", concurrent)

	h.waitReplayedExactly("node-1", 5)
	got, _ := h.readNode("node-1", "default", "k")
	require.True(t, dvv.Equal(newer, got), "replaying an older object twice must change nothing: %+v", got)
	got, _ = h.readNode("node-1", "default", "c")
	require.True(t, dvv.Equal(dvv.Merge(base, concurrent, dvv.Siblings), got), "got %+v", got)
	require.Len(t, got.Live(), 2)
	other, _ := h.readNode("node-2", "default", "c")
	require.True(t, dvv.Equal(base, other), "a hint reaches only its node")
}

func TestHintsSurviveCoordinatorAndNodeRestarts(t *testing.T) {
	h := startCluster(t, 3)
	_, js := h.hintQueue()
	h.stopNode("node-3")
	keys := h.putKeys("restart", 100, "quorum")
	h.waitStored("node-3", 100)
	require.NoError(t, h.dev.StopCoordinator(ctxT(t), h.coordinator()))

	in, err := hints.OpenInbox(ctxT(t), js, hints.Config{}, "node-3")
	require.NoError(t, err)
	pending, err := in.Pending(ctxT(t))
	require.NoError(t, err)
	require.EqualValues(t, 100, pending, "the hints outlive the coordinator that stored them")

	_, err = h.dev.StartCoordinator(ctxT(t))
	require.NoError(t, err)
	// The new coordinator has never heard of node-3: it finds it gone on
	// its first call and hints that write too.
	keys = append(keys, h.putKeys("after", 10, "quorum")...)
	h.waitStored("node-3", 110)

	h.startNode("node-3")
	h.waitReplayedExactly("node-3", 110)
	h.requireConverged(keys, "node-1", "node-2", "node-3")
	require.Eventually(t, func() bool { n, err := in.Pending(ctxT(t)); return err == nil && n == 0 }, hintWait, 10*time.Millisecond)
}

func TestDownNodeIsHintedWithoutACall(t *testing.T) {
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, HeartbeatInterval: 100 * time.Millisecond,
		Coordinator: cluster.CoordinatorConfig{
			HeartbeatTimeout: 300 * time.Millisecond, DownAfter: 600 * time.Millisecond, ReplicaTimeout: 2 * time.Second,
		}})
	h.stopNode("node-3")
	// A partition, not a crash: node-3's subjects have a silent listener,
	// so a call would wait for the replica timeout instead of failing fast.
	var calls atomic.Int64
	sub, err := h.nc.Subscribe(bus.Subjects{}.Node("node-3", ">"), func(*nats.Msg) { calls.Add(1) })
	require.NoError(t, err)
	require.NoError(t, h.nc.Flush())
	h.waitHealth("node-3", coordinator.Down) // heartbeats stopped for DownAfter

	keys := h.putKeys("partitioned", 30, "quorum")
	h.waitStored("node-3", 30)
	start := time.Now()
	_, err = h.c.Put(ctxT(t), "all", []byte("x"), client.Consistency("all"))
	requireCode(t, err, pb.ErrorCode_QUORUM_NOT_REACHED)
	require.Less(t, time.Since(start), time.Second, "ALL fails at once, not after the replica timeout")
	require.Zero(t, calls.Load(), "a down node is neither the coordinating replica nor sent merges")
	require.NoError(t, sub.Unsubscribe())

	h.startNode("node-3")
	h.waitHealth("node-3", coordinator.Up) // its first heartbeat
	h.waitReplayedExactly("node-3", 31)    // the failed ALL write was applied on two replicas and hinted too
	h.requireConverged(keys, "node-1", "node-2", "node-3")
}

func TestHintBacklogIsReplayedAtTheConfiguredPace(t *testing.T) {
	const (
		backlog = 5000
		rate    = 2500 // hints per second
	)
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, HintRate: rate})
	q, _ := h.hintQueue()
	loader := h.ghostActor("loader")
	h.stopNode("node-3")
	keys := make([]string, backlog)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < backlog; i += 16 {
				keys[i] = fmt.Sprintf("backlog-%d", i)
				o := dvv.Update(dvv.Object{}, nil, loader, []byte(keys[i]), false, time.Now().UnixMilli(), dvv.Siblings)
				if err := q.Add(ctxT(t), "node-3", &pb.MergeRequest{
					TenantId: "default", Key: keys[i], Object: dvvpb.ObjectToProto(o), Policy: pb.ConflictPolicy_SIBLINGS,
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// Client traffic runs throughout the replay; node-3 is a replica of
	// every key, so its writes share the node with the replay.
	stop := make(chan struct{})
	var stopOnce sync.Once
	var (
		puts, failures atomic.Int64
		latMu          sync.Mutex
		lat            []time.Duration
		clients        sync.WaitGroup
	)
	// Stop the clients before the cluster closes, even when the test fails.
	t.Cleanup(func() { stopOnce.Do(func() { close(stop) }); clients.Wait() })
	for w := range 4 {
		clients.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				_, err := h.c.Put(ctxT(t), fmt.Sprintf("live-%d-%d", w, i), []byte("x"), client.Consistency("quorum"))
				d := time.Since(t0)
				puts.Add(1)
				if err != nil {
					failures.Add(1)
					t.Logf("put during replay failed: %v", err)
				}
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
			}
		})
	}
	start := time.Now()
	h.startNode("node-3")
	h.waitReplayed("node-3", backlog)
	elapsed := time.Since(start)
	stopOnce.Do(func() { close(stop) })
	clients.Wait()
	// Puts made while node-3 was still down were hinted too.
	h.waitReplayed("node-3", backlog+h.stored("node-3"))

	minimum := time.Duration(float64(backlog) / rate * float64(time.Second))
	require.GreaterOrEqual(t, elapsed, minimum, "the limiter paces replay at %d hints/s", rate)
	require.Positive(t, puts.Load())
	require.Zero(t, failures.Load(), "client puts keep succeeding during the replay")
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("replayed %d hints in %s (%.0f hints/s at a configured %d/s); %d client puts meanwhile, p50 %s, p99 %s, max %s",
		backlog, elapsed.Round(time.Millisecond), float64(backlog)/elapsed.Seconds(), rate, len(lat),
		lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	for _, k := range keys {
		_, found := h.readNode("node-3", "default", k)
		require.True(t, found, "%s was replayed", k)
	}
}
