package tests

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/bus/embedded"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/jetstream/idempotency"
	"github.com/pairdb/pairdb/jetstream/ringlog"
	"github.com/pairdb/pairdb/jetstream/tenantkv"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode"
)

// natsCluster is three in-process nats-servers routed into one JetStream
// cluster, each with its own store directory, fsyncing every write.
type natsCluster struct {
	t       *testing.T
	mu      sync.Mutex
	servers []*server.Server
	opts    []*server.Options
}

const natsClusterWait = 30 * time.Second

// startNATSCluster starts s1…s3. Cluster (route) ports are reserved up
// front because every server must list every route at start; client ports
// are picked by each server and kept for its restarts.
func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	const n = 3
	clusterPorts := freePorts(t, n)
	routes := make([]*url.URL, n)
	for i, p := range clusterPorts {
		routes[i] = &url.URL{Scheme: "nats-route", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))}
	}
	c := &natsCluster{t: t, servers: make([]*server.Server, n), opts: make([]*server.Options, n)}
	for i := range n {
		c.opts[i] = &server.Options{
			ServerName: fmt.Sprintf("s%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			SyncAlways: true,
			MaxPayload: embedded.DefaultMaxPayload,
			Cluster: server.ClusterOpts{
				Name: "pairdb-test",
				Host: "127.0.0.1",
				Port: clusterPorts[i],
			},
			Routes: routes,
			NoSigs: true,
			NoLog:  true,
		}
	}
	for i := range n {
		c.servers[i] = c.newServer(c.opts[i])
	}
	for i := range n {
		require.True(t, c.servers[i].ReadyForConnections(natsClusterWait), "s%d not ready", i+1)
		// A restart must come back on the same client port.
		c.opts[i].Port = c.servers[i].Addr().(*net.TCPAddr).Port
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	c.waitJetStream()
	return c
}

func (c *natsCluster) newServer(opts *server.Options) *server.Server {
	c.t.Helper()
	s, err := server.NewServer(opts.Clone())
	require.NoError(c.t, err)
	s.Start()
	return s
}

// freePorts reserves n distinct TCP ports on 127.0.0.1 and releases them.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	lns := make([]net.Listener, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns[i] = ln
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range lns {
		require.NoError(t, ln.Close())
	}
	return ports
}

// waitJetStream waits until a meta leader sees all three peers and every
// server is current with it.
func (c *natsCluster) waitJetStream() {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		leaders := 0
		for _, s := range c.servers {
			if !s.Running() || !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() {
				leaders++
				if len(s.JetStreamClusterPeers()) != len(c.servers) {
					return false
				}
			}
		}
		return leaders == 1
	}, natsClusterWait, 20*time.Millisecond, "JetStream meta group did not form over all servers")
}

// shutdown stops server i; start brings it back with the same name, store
// directory, client and cluster ports.
func (c *natsCluster) shutdown(i int) {
	c.mu.Lock()
	s := c.servers[i]
	c.mu.Unlock()
	s.Shutdown()
	s.WaitForShutdown()
}

func (c *natsCluster) start(i int) {
	c.t.Helper()
	s := c.newServer(c.opts[i])
	require.True(c.t, s.ReadyForConnections(natsClusterWait), "s%d not ready after restart", i+1)
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
}

// connect opens a connection that prefers server first but lists all three,
// and reconnects forever.
func (c *natsCluster) connect(name string, first int, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	urls := make([]string, 0, len(c.opts))
	for k := range c.opts {
		i := (first + k) % len(c.opts)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), append([]nats.Option{nats.Name(name),
		nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	require.NoError(c.t, err)
	require.Equal(c.t, c.opts[first].ServerName, nc.ConnectedServerName(), "%s attached to the wrong server", name)
	c.t.Cleanup(nc.Close)
	return nc
}

// ackedWrite is a put the cluster acknowledged.
type ackedWrite struct {
	key, value, idemKey string
	resp                []byte // the PutResponse, marshalled
}

// writeLoad runs writers that put unique keys at QUORUM until stopped.
type writeLoad struct {
	mu    sync.Mutex
	acked []ackedWrite
	fails atomic.Int64
	stop  chan struct{}
	done  sync.WaitGroup
}

func (l *writeLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func startWriteLoad(t *testing.T, c *client.Client, writers int) *writeLoad {
	l := &writeLoad{stop: make(chan struct{})}
	for w := range writers {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("load-%d-%d", w, i)
				value := "v-" + key
				idem := client.NewIdempotencyKey()
				// A failed write may still be applied somewhere: retry it
				// with the same idempotency key, as a real client would.
				var resp *pb.PutResponse
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					resp, err = c.Put(ctx, key, []byte(value), client.Consistency("quorum"), client.IdempotencyKey(idem))
					cancel()
					if err == nil {
						break
					}
					l.fails.Add(1)
					t.Logf("put %s (attempt %d): %v", key, attempt+1, err)
				}
				if err != nil {
					continue // never acknowledged: nothing to check
				}
				raw, err := proto.Marshal(resp)
				if err != nil {
					panic(err)
				}
				l.mu.Lock()
				l.acked = append(l.acked, ackedWrite{key: key, value: value, idemKey: idem, resp: raw})
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// waitAcks waits until the load has n acknowledged writes in all.
func (l *writeLoad) waitAcks(t *testing.T, n int, what string) {
	t.Helper()
	require.Eventually(t, func() bool { return l.count() >= n }, natsClusterWait, 10*time.Millisecond,
		"%s: fewer than %d acknowledged writes (have %d, %d failed)", what, n, l.count(), l.fails.Load())
}

// TestNATSClusterRestartUnderLoad runs PairDB across a three-server NATS
// cluster (control-plane buckets with three replicas), restarts one server
// while writes flow, and checks no acknowledged write and no idempotency
// record was lost.
func TestNATSClusterRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster restart test runs for several seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	begin := time.Now()
	nc := startNATSCluster(t)
	const restarted = 0 // s1: one storage node and one coordinator live there

	// Two coordinators, on s1 and s2, so one keeps serving while the other's
	// server restarts. They start first: they create the control plane's
	// streams, which storage nodes wait for.
	var coords []*cluster.Coordinator
	for i := range 2 {
		conn := nc.connect(fmt.Sprintf("pairdb-coordinator-%d", i+1), i, nats.CustomInboxPrefix(bus.CoordinatorInbox))
		coord, err := cluster.StartCoordinator(ctx, conn, cluster.CoordinatorConfig{
			StreamReplicas: 3,
			Logger:         log.Named(fmt.Sprintf("coordinator-%d", i+1)), Metrics: metrics.NewSet(),
		})
		require.NoError(t, err)
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			require.NoError(t, coord.Stop(sctx))
		})
		coords = append(coords, coord)
	}
	// Storage node i on server i, following a three-replica ring log the
	// coordinators created.
	nodes := cluster.NodeIDs(3)
	for i, id := range nodes {
		conn := nc.connect("pairdb-storagenode-"+id, i)
		n, err := cluster.StartStorageNode(ctx, conn, storagenode.Config{
			ID: id, DataDir: filepath.Join(t.TempDir(), id), Sync: true,
			Logger: log.Named(id), Metrics: metrics.NewSet(),
		}, 3)
		require.NoError(t, err)
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			require.NoError(t, n.Stop(sctx))
		})
	}

	// The registered nodes become the first ring; every coordinator sees it.
	require.NoError(t, coords[0].Ring.Bootstrap(ctx, nodes, membership.DefaultSettings()))
	for _, c := range coords {
		require.NoError(t, c.Ring.WaitFor(ctx, coords[0].Ring.State().Seq))
	}

	// Tenant "default" in a three-replica bucket.
	setup := nc.connect("pairdb-setup", 1)
	js, err := jetstream.New(setup)
	require.NoError(t, err)
	// JetStream answers 503 while its meta group settles: retry that.
	require.NoError(t, retryUnavailable(ctx, func() error {
		store, err := tenantkv.Open(ctx, js, tenantkv.Config{Replicas: 3, Logger: log.Named("tenants")})
		if err != nil {
			return err
		}
		return cluster.EnsureTenant(ctx, store, "default", 3)
	}))
	t.Logf("cluster up after %s", time.Since(begin))
	requireStreamReplicas(ctx, t, js, 3)

	// The load's connection is on s3; it survives the restart untouched,
	// while the parts on s1 reconnect.
	kv := client.New(nc.connect("pairdb-load", 2), client.WithTenant("default"))

	// An idempotency record written before the restart.
	before, err := kv.Put(ctx, "idem", []byte("first"), client.Consistency("quorum"), client.IdempotencyKey("idem-before-restart"))
	require.NoError(t, err)
	require.False(t, before.GetDuplicate())

	load := startWriteLoad(t, kv, 3)
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(load.stop)
			load.done.Wait()
		}
	}
	t.Cleanup(stopLoad)

	load.waitAcks(t, 50, "before the restart")
	nc.shutdown(restarted)
	t.Logf("s1 down after %s", time.Since(begin))
	down := load.count()
	load.waitAcks(t, down+50, "while s1 is down")
	nc.start(restarted)
	nc.waitJetStream()
	t.Logf("s1 back after %s", time.Since(begin))
	up := load.count()
	load.waitAcks(t, up+50, "after the restart")
	t.Logf("50 writes after the restart by %s", time.Since(begin))

	// Writes through the restarted server itself.
	viaRestarted := client.New(nc.connect("pairdb-after-restart", restarted), client.WithTenant("default"))
	for i := range 10 {
		_, err := viaRestarted.Put(ctx, fmt.Sprintf("via-s1-%d", i), []byte("x"), client.Consistency("quorum"))
		require.NoError(t, err)
	}
	stopLoad()

	load.mu.Lock()
	acked := load.acked
	load.mu.Unlock()
	t.Logf("%d writes acknowledged, %d attempts failed around the restart", len(acked), load.fails.Load())
	require.Greater(t, len(acked), 150)

	// Every acknowledged write is readable at QUORUM, through s1 again, and
	// was applied once: each key was written by one put (with the client's
	// own retries under one idempotency key), so a second sibling means the
	// write was applied twice.
	var duplicated []string
	for _, w := range acked {
		got, err := viaRestarted.Get(ctx, w.key, client.ReadConsistency("quorum"))
		require.NoError(t, err, "get %s", w.key)
		require.True(t, got.GetFound(), "acknowledged write %s lost", w.key)
		vals := values(got)
		require.Contains(t, vals, w.value, "acknowledged write %s lost", w.key)
		if len(vals) > 1 {
			duplicated = append(duplicated, fmt.Sprintf("%s (%d siblings)", w.key, len(vals)))
		}
	}
	require.Empty(t, duplicated, "writes applied more than once (an idempotency record did not hold across the restart)")

	// Idempotency records survived: the pre-restart put and a sample of the
	// load's puts are answered as duplicates with their original clocks.
	again, err := viaRestarted.Put(ctx, "idem", []byte("first"), client.Consistency("quorum"), client.IdempotencyKey("idem-before-restart"))
	require.NoError(t, err)
	require.True(t, again.GetDuplicate(), "idempotency record lost in the restart")
	requireSameClock(t, before.GetVectorClock(), again.GetVectorClock())
	for i := 0; i < len(acked); i += max(1, len(acked)/20) {
		w := acked[i]
		resp, err := viaRestarted.Put(ctx, w.key, []byte(w.value), client.Consistency("quorum"), client.IdempotencyKey(w.idemKey))
		require.NoError(t, err, "retry of %s", w.key)
		require.True(t, resp.GetDuplicate(), "retry of %s applied twice", w.key)
		first := new(pb.PutResponse)
		require.NoError(t, proto.Unmarshal(w.resp, first))
		requireSameClock(t, first.GetVectorClock(), resp.GetVectorClock())
	}
}

func requireSameClock(t *testing.T, want, got []*pb.ClockEntry) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.True(t, proto.Equal(want[i], got[i]), "clock entry %d: want %v, got %v", i, want[i], got[i])
	}
}

// requireStreamReplicas checks the control-plane buckets and streams are
// replicated on every server of the cluster.
func requireStreamReplicas(ctx context.Context, t *testing.T, js jetstream.JetStream, replicas int) {
	t.Helper()
	for _, bucket := range []string{"KV_" + tenantkv.DefaultBucket, "KV_" + idempotency.DefaultBucket, ringlog.DefaultStream, ringlog.MigrationsStream} {
		st, err := js.Stream(ctx, bucket)
		require.NoError(t, err, "bucket %s", bucket)
		info, err := st.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, replicas, info.Config.Replicas, "bucket %s", bucket)
		require.NotNil(t, info.Cluster, "bucket %s", bucket)
		require.Len(t, info.Cluster.Replicas, replicas-1, "bucket %s: followers besides the leader", bucket)
	}
}

// retryUnavailable runs f until it succeeds, fails with something other
// than JetStream's 503 "temporarily unavailable", or ctx is done.
func retryUnavailable(ctx context.Context, f func() error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || !strings.Contains(err.Error(), "temporarily unavailable") {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return errors.Wrap(err, "JetStream still unavailable")
		}
	}
}
