package tests

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/internal/faults"
	"github.com/pairdb/pairdb/internal/tcpproxy"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// The tests of "one write, at most one version": each forces a fault in
// which a write's outcome is unknown to its coordinator, and checks that
// the write is never minted a second time, that nothing the coordinator
// gave up on takes effect later, and that a retry finds the write.

// faultyCluster is a three-node cluster with a fault injector and short
// replica timeouts (a timed-out apply is what these tests are about).
func faultyCluster(t *testing.T) (*harness, *faults.Injector) {
	inj := faults.New(1)
	h := startClusterWith(t, cluster.DevConfig{Nodes: 3, Middleware: inj.Middleware,
		Coordinator: cluster.CoordinatorConfig{ReplicaTimeout: 600 * time.Millisecond, MaxClockSkew: 100 * time.Millisecond}})
	return h, inj
}

// keyFirstAt returns a key of tenant whose preference list starts at node:
// the replica a coordinator asks to mint its writes while all are healthy.
func (h *harness) keyFirstAt(tenant, node string, rf uint32) string {
	h.t.Helper()
	st := h.dev.Coordinators()[0].Ring.State()
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s-key-%d", node, i)
		if cur, _ := st.ReplicaSets(tenant, keyspace.Hash(tenant, k)); cur[0] == node {
			return k
		}
	}
}

// waitCounter waits until the cluster's metric name reaches n.
func (h *harness) waitCounter(name string, n uint64) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return h.counter(name) >= n }, 20*time.Second, 5*time.Millisecond,
		"%s reached %d, want %d", name, h.counter(name), n)
}

// expired is the metric of applies a node refused as past their deadline.
func expired(node string) string {
	return fmt.Sprintf(`pairdb_node_request_errors_total{node=%q,op="apply",code="EXPIRED"}`, node)
}

// originDots collects, for every origin (a keyed write) of tenant, the
// dots it has in every running node's origin records and in every stored
// sibling of keys: a write minted once has one.
func (h *harness) originDots(tenant string, keys []string) map[string]map[dvv.Dot]bool {
	h.t.Helper()
	dots := map[string]map[dvv.Dot]bool{}
	add := func(origin string, d dvv.Dot) {
		if dots[origin] == nil {
			dots[origin] = map[dvv.Dot]bool{}
		}
		dots[origin][d] = true
	}
	for _, id := range h.dev.NodeIDs() {
		n := h.dev.Node(id)
		if n == nil {
			continue
		}
		recs, err := n.Origins(tenant)
		require.NoError(h.t, err)
		for o, d := range recs {
			add(o, d)
		}
		for _, k := range keys {
			obj, _, err := n.Local(tenant, k)
			require.NoError(h.t, err)
			for _, s := range obj.Siblings {
				if len(s.Origin) > 0 {
					add(string(s.Origin), s.Dot)
				}
			}
		}
	}
	return dots
}

// requireOneVersion checks that no write of tenant was minted twice.
func (h *harness) requireOneVersion(tenant string, keys ...string) {
	h.t.Helper()
	for o, ds := range h.originDots(tenant, keys) {
		require.Len(h.t, ds, 1, "write %x was minted as %v", o, ds)
	}
}

// proxied starts a TCP proxy in front of the cluster's NATS server and
// returns it with the URL that goes through it.
func (h *harness) proxied() (*tcpproxy.Proxy, string) {
	h.t.Helper()
	srv, err := url.Parse(h.dev.ClientURL())
	require.NoError(h.t, err)
	p := tcpproxy.Start(h.t, srv.Host)
	return p, "nats://" + p.Addr()
}

// faultyTenant is faultyCluster with tenant id of the given conflict
// policy, three replicas.
func faultyTenant(t *testing.T, id, policy string) (*harness, *faults.Injector) {
	h, inj := faultyCluster(t)
	_, err := h.c.CreateTenant(ctxT(t), &pb.CreateTenantRequest{TenantId: id, ReplicationFactor: 3, ConflictPolicy: policy})
	require.NoError(t, err)
	return h, inj
}

// liveEverywhere returns the live values each running replica stores.
func (h *harness) liveEverywhere(tenant, key string) map[string][]string {
	h.t.Helper()
	out := map[string][]string{}
	for _, id := range h.dev.NodeIDs() {
		obj, _, err := h.dev.Node(id).Local(tenant, key)
		require.NoError(h.t, err)
		for _, s := range obj.Live() {
			out[id] = append(out[id], string(s.Value))
		}
	}
	return out
}

// TestPausedMinterMintsNothingLate: the replica asked to mint a write is
// paused past the coordinator's wait (a stopped process, a GC pause, a
// stalled disk). The write's outcome is unknown and it is minted nowhere
// else; the client then deletes the key (siblings) or overwrites it (last
// write wins), acknowledged at ALL. When the replica resumes and handles
// the apply it was sent, the deadline has passed: it mints nothing, and
// neither the deleted key nor the older value comes back.
func TestPausedMinterMintsNothingLate(t *testing.T) {
	for _, policy := range []string{"siblings", "last_write_wins"} {
		t.Run(policy, func(t *testing.T) {
			h, inj := faultyTenant(t, "p", policy)
			ctx := ctxT(t)
			c := client.New(h.nc, client.WithTenant("p"), client.WithRetries(0))
			key := h.keyFirstAt("p", "node-1", 3)

			resume := make(chan struct{})
			inj.Set(faults.Rule{Match: ".node.node-1.apply", Hold: resume, Limit: 1})
			_, err := c.Put(ctx, key, []byte("late"), client.Consistency("quorum"))
			requireCode(t, err, pb.ErrorCode_OUTCOME_UNKNOWN)
			require.Empty(t, h.liveEverywhere("p", key), "no other replica minted it")

			var want []string
			if policy == "siblings" {
				got, err := c.Get(ctx, key, client.ReadConsistency("all"))
				require.NoError(t, err)
				require.False(t, got.GetFound())
				_, err = c.Delete(ctx, key, client.Consistency("all"), client.WithContext(got.GetContext()))
				require.NoError(t, err)
			} else {
				_, err = c.Put(ctx, key, []byte("winner"), client.Consistency("all"))
				require.NoError(t, err)
				want = []string{"winner"}
			}

			close(resume) // node-1 runs again and handles the apply it held
			h.waitCounter(expired("node-1"), 1)
			got, err := c.Get(ctx, key, client.ReadConsistency("all"))
			require.NoError(t, err)
			require.Equal(t, want, values(got))
			for node, vals := range h.liveEverywhere("p", key) {
				require.Equal(t, want, vals, "replica %s", node)
			}
		})
	}
}

// TestHalfOpenMinterMintsOnce: the minting replica's connection becomes
// half-open (what it sends is lost, what it is sent arrives). It mints and
// commits the write, but its reply and forwards never arrive: the outcome is
// unknown, and no other replica mints the write. Once its connection heals,
// a retry with the same idempotency key finds the write there and completes
// it; a read's context then covers its one dot, and a delete with that
// context removes it from every replica for good.
func TestHalfOpenMinterMintsOnce(t *testing.T) {
	for _, policy := range []string{"siblings", "last_write_wins"} {
		t.Run(policy, func(t *testing.T) { halfOpenMinterMintsOnce(t, policy) })
	}
}

func halfOpenMinterMintsOnce(t *testing.T, policy string) {
	h, _ := faultyTenant(t, "h", policy)
	ctx := ctxT(t)
	proxy, via := h.proxied()
	h.stopNode("node-1")
	require.NoError(t, h.dev.StartNodeVia("node-1", via))
	t.Cleanup(func() { h.stopNode("node-1") }) // before the proxy closes (cleanups run last first)
	c := client.New(h.nc, client.WithTenant("h"), client.WithRetries(0))
	key := h.keyFirstAt("h", "node-1", 3)
	require.Eventually(t, func() bool { _, err := c.Put(ctx, "warm-up", []byte("x")); return err == nil },
		10*time.Second, 20*time.Millisecond, "node-1 serves through the proxy")

	proxy.Mute()
	_, err := c.Put(ctx, key, []byte("once"), client.Consistency("quorum"), client.IdempotencyKey("once-1"))
	requireCode(t, err, pb.ErrorCode_OUTCOME_UNKNOWN)
	require.Equal(t, map[string][]string{"node-1": {"once"}}, h.liveEverywhere("h", key),
		"node-1 minted it; nothing it sent arrived, and nobody else minted it")
	proxy.Unmute()

	resp, err := c.Put(ctx, key, []byte("once"), client.Consistency("quorum"), client.IdempotencyKey("once-1"))
	require.NoError(t, err, "the retry completes the write at node-1")
	require.GreaterOrEqual(t, resp.GetReplicaCount(), uint32(2))
	h.requireOneVersion("h", key)

	got, err := c.Get(ctx, key, client.ReadConsistency("quorum"))
	require.NoError(t, err)
	require.Equal(t, []string{"once"}, values(got))
	_, err = c.Delete(ctx, key, client.Consistency("all"), client.WithContext(got.GetContext()))
	require.NoError(t, err)
	for _, n := range h.dev.NodeIDs() {
		require.Equal(t, "done", runRepair(t, h.c, n, "h").GetState(), "repair round on %s", n)
	}
	got, err = c.Get(ctx, key, client.ReadConsistency("all"))
	require.NoError(t, err)
	require.False(t, got.GetFound(), "the deleted key stays deleted: %v", values(got))
	require.Empty(t, h.liveEverywhere("h", key))
}

// TestCoordinatorDisconnectSendsNothingLate: a coordinator loses its NATS
// connection while its apply waits at the minter. It gives up (the client
// hears nothing), the minter then handles the apply past its deadline, and
// the coordinator reconnects: nothing it published while disconnected is
// sent afterwards (no reconnect buffer), so the write is minted nowhere.
func TestCoordinatorDisconnectSendsNothingLate(t *testing.T) {
	for _, policy := range []string{"siblings", "last_write_wins"} {
		t.Run(policy, func(t *testing.T) { coordinatorDisconnectSendsNothingLate(t, policy) })
	}
}

func coordinatorDisconnectSendsNothingLate(t *testing.T, policy string) {
	h, inj := faultyTenant(t, "c", policy)
	ctx := ctxT(t)
	proxy, via := h.proxied()
	cut, err := h.dev.StartCoordinatorVia(ctx, via)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.dev.StopCoordinator(ctxT(t), cut)) }) // before the proxy closes
	require.NoError(t, h.dev.StopCoordinator(ctx, h.dev.Coordinators()[0]), "only the proxied coordinator serves")
	key := h.keyFirstAt("c", "node-1", 3)

	resume, held := make(chan struct{}), make(chan string, 1)
	inj.Set(faults.Rule{Match: ".node.node-1.apply", Hold: resume, Seen: held, Limit: 1})
	c := client.New(h.nc, client.WithTenant("c"), client.WithRetries(0), client.WithTimeout(2*time.Second))
	answered := make(chan error, 1)
	go func() {
		_, err := c.Put(context.Background(), key, []byte("v"), client.Consistency("quorum"), client.IdempotencyKey("cut-1"))
		answered <- err
	}()
	<-held      // node-1 got the apply and holds it
	proxy.Cut() // the coordinator's connection breaks; reconnects are refused
	requireCode(t, <-answered, pb.ErrorCode_DEADLINE_EXCEEDED)
	h.waitCounter(`coordinator_requests_total{operation="put",consistency="quorum"}`, 1) // it gave up

	close(resume)
	h.waitCounter(expired("node-1"), 1)
	proxy.Heal()
	require.Eventually(t, func() bool { return cut.Ready(ctx) == nil }, 20*time.Second, 20*time.Millisecond, "coordinator reconnects")
	_, err = c.Put(ctx, "after", []byte("x"), client.Consistency("all"))
	require.NoError(t, err, "the reconnected coordinator serves, and everything it still had to send has arrived")
	require.Empty(t, h.liveEverywhere("c", key), "the write the coordinator gave up on took effect nowhere")
	h.requireOneVersion("c", key)
}

// TestRetryAfterAnOverwriteFindsItsWrite: a keyed write fails its quorum
// (its forwards are lost) but is minted; a later write supersedes it; then
// the first write's retry arrives. Its sibling is gone, but its minter's
// origin record recognises it: nothing is minted, under either policy.
func TestRetryAfterAnOverwriteFindsItsWrite(t *testing.T) {
	for _, policy := range []string{"siblings", "last_write_wins"} {
		t.Run(policy, func(t *testing.T) {
			h, inj := faultyTenant(t, "o", policy)
			ctx := ctxT(t)
			c := client.New(h.nc, client.WithTenant("o"), client.WithRetries(0))
			key := h.keyFirstAt("o", "node-1", 3)

			inj.Set(faults.Rule{Match: ".node.node-2.merge", Drop: 1}, faults.Rule{Match: ".node.node-3.merge", Drop: 1})
			_, err := c.Put(ctx, key, []byte("first"), client.Consistency("all"), client.IdempotencyKey("first-1"))
			requireCode(t, err, pb.ErrorCode_QUORUM_NOT_REACHED)
			inj.Clear()

			got, err := c.Get(ctx, key, client.ReadConsistency("all"))
			require.NoError(t, err)
			require.Equal(t, []string{"first"}, values(got))
			_, err = c.Put(ctx, key, []byte("second"), client.Consistency("all"), client.WithContext(got.GetContext()))
			require.NoError(t, err)

			resp, err := c.Put(ctx, key, []byte("first"), client.Consistency("all"), client.IdempotencyKey("first-1"))
			require.NoError(t, err, "the retry finds its write, superseded")
			require.False(t, resp.GetDuplicate(), "its first attempt was answered as failed")
			got, err = c.Get(ctx, key, client.ReadConsistency("all"))
			require.NoError(t, err)
			require.Equal(t, []string{"second"}, values(got), "the retry minted nothing")
			h.requireOneVersion("o", key)
		})
	}
}
