package tests

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// buildPairdb compiles the binary once per test.
func buildPairdb(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pairdb")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/pairdb").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// nodeProcess is a `pairdb storagenode` process.
type nodeProcess struct {
	t    *testing.T
	bin  string
	url  string
	id   string
	dir  string
	ops  string // ops address; "" picks a free port the test does not read
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *nodeProcess) start() {
	p.t.Helper()
	ops := p.ops
	if ops == "" {
		ops = "127.0.0.1:0"
	}
	p.cmd = exec.Command(p.bin, "storagenode", "--server", p.url, "--id", p.id, "--data", p.dir,
		"--ops-addr", ops, "--log-level", "warn")
	p.cmd.Env = append(os.Environ(), "PAIRDB_CONFIG=")
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, io.Discard
	require.NoError(p.t, p.cmd.Start())
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
}

// kill sends SIGKILL: no shutdown, no flush; Pebble recovers from its WAL.
func (p *nodeProcess) kill() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("storage node %s did not die", p.id)
	}
}

// processCluster is three `pairdb storagenode` processes on an in-process
// NATS server and an in-process coordinator, the ring bootstrapped.
type processCluster struct {
	nodes []*nodeProcess
	nc    *nats.Conn
	coord *cluster.Coordinator
	admin *client.Client
	ctx   context.Context
}

// startProcessCluster starts it with coordinator settings cc (its logger is
// the test's), ops ports the test can scrape when withOps, and tenants
// created (each "id" or "id:policy").
func startProcessCluster(t *testing.T, cc cluster.CoordinatorConfig, withOps bool, tenants ...string) *processCluster {
	t.Helper()
	bin := buildPairdb(t)
	srv := natstest.StartServer(t, t.TempDir())
	url := srv.ClientURL()
	pc := &processCluster{nodes: make([]*nodeProcess, 3)}
	for i := range pc.nodes {
		pc.nodes[i] = &nodeProcess{t: t, bin: bin, url: url, id: fmt.Sprintf("node-%d", i+1), dir: t.TempDir()}
		if withOps {
			pc.nodes[i].ops = freeAddr(t)
		}
		pc.nodes[i].start()
	}
	t.Cleanup(func() {
		for _, n := range pc.nodes {
			_ = n.cmd.Process.Signal(syscall.SIGCONT) // a paused one, too, stops
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-n.done:
			case <-time.After(15 * time.Second):
				_ = n.cmd.Process.Kill()
			}
		}
	})
	var err error
	// The coordinator's connection (the test's clients share it): storage
	// nodes ack forwarded writes only under the coordinators' inbox prefix.
	pc.nc, err = nats.Connect(url, nats.MaxReconnects(-1), nats.CustomInboxPrefix(bus.CoordinatorInbox))
	require.NoError(t, err)
	t.Cleanup(pc.nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	pc.ctx = ctx
	cc.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	pc.coord, err = cluster.StartCoordinator(ctx, pc.nc, cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.coord.Stop(context.Background()) })
	require.NoError(t, pc.coord.Ring.Bootstrap(ctx, []string{"node-1", "node-2", "node-3"}, membership.DefaultSettings()))
	pc.admin = client.New(pc.nc)
	for _, tn := range tenants {
		id, policy, _ := strings.Cut(tn, ":")
		require.Eventually(t, func() bool {
			_, err := pc.admin.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: id, ConflictPolicy: policy})
			return err == nil || client.IsCode(err, pb.ErrorCode_TENANT_EXISTS)
		}, 10*time.Second, 50*time.Millisecond)
	}
	return pc
}

// TestStorageNodeProcessesSurviveSIGKILL runs the storage nodes as real
// processes and SIGKILLs them, one at a time, then pauses one (SIGSTOP),
// under a QUORUM write load:
// every acknowledged write stays readable, and once the killed nodes are
// back (hints replayed) every replica holds it.
func TestStorageNodeProcessesSurviveSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	pc := startProcessCluster(t, cluster.CoordinatorConfig{}, false, "default")
	nodes, nc, coord, admin, ctx := pc.nodes, pc.nc, pc.coord, pc.admin, pc.ctx

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w := range 2 {
		c := client.New(nc, client.WithRetries(3), client.WithTimeout(3*time.Second))
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("p%d-%d", w, i)
				if _, err := c.Put(context.Background(), k, []byte(k), client.Consistency("quorum")); err == nil {
					mu.Lock()
					acked[k] = k
					mu.Unlock()
				}
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for _, n := range nodes {
		before := count()
		require.Eventually(t, func() bool { return count() >= before+50 }, 30*time.Second, 10*time.Millisecond)
		n.kill()
		before = count()
		require.Eventually(t, func() bool { return count() >= before+50 }, 30*time.Second, 10*time.Millisecond,
			"writes go on at QUORUM with %s killed", n.id)
		n.start()
	}
	// A paused process (SIGSTOP) holds its connections but answers nothing:
	// calls to it time out, heartbeats stop, and it is routed around.
	paused := nodes[0]
	require.NoError(t, paused.cmd.Process.Signal(syscall.SIGSTOP))
	before := count()
	require.Eventually(t, func() bool { return count() >= before+20 }, 60*time.Second, 10*time.Millisecond,
		"writes go on at QUORUM with %s paused", paused.id)
	require.NoError(t, paused.cmd.Process.Signal(syscall.SIGCONT))
	close(stop)
	wg.Wait()
	require.NotEmpty(t, acked)

	st := coord.Ring.State()
	reader := client.New(nc, client.WithTimeout(5*time.Second))
	for k, v := range acked {
		got, err := reader.Get(ctx, k, client.ReadConsistency("quorum"))
		require.NoError(t, err, k)
		require.Contains(t, siblingValues(got), v)
	}
	// Every replica ends up with every acknowledged write from hints alone:
	// no read asked all of them (reads ask R) and no anti-entropy ran yet.
	h := &harness{t: t, nc: nc}
	for k, v := range acked {
		cur, _ := st.ReplicaSets("default", keyspace.Hash("default", k))
		for _, n := range cur {
			require.Eventually(t, func() bool {
				o, found := h.readNode(n, "default", k)
				return found && slices.ContainsFunc(o.Live(), func(s dvv.Sibling) bool { return string(s.Value) == v })
			}, 30*time.Second, 20*time.Millisecond, "replica %s lacks acknowledged %s", n, k)
		}
	}
	// A version nobody acknowledged can still be on one replica alone: a
	// node killed after its own commit but before its forwards left the
	// process, the write minted again at the next replica. Anti-entropy
	// brings it to the others: after a round on every node the replicas
	// are equal.
	for _, n := range nodes {
		require.Equal(t, "done", runRepair(t, admin, n.id, "default").GetState(), "repair round on %s", n.id)
	}
	for k := range acked {
		cur, _ := st.ReplicaSets("default", keyspace.Hash("default", k))
		objs := make([]dvv.Object, len(cur))
		require.Eventually(t, func() bool {
			for i, n := range cur {
				objs[i], _ = h.readNode(n, "default", k)
				if !dvv.Equal(objs[0], objs[i]) {
					return false
				}
			}
			return true
		}, 30*time.Second, 20*time.Millisecond, "replicas of %s converge: %v on %v", k, objs, cur)
	}
	t.Logf("%d writes acknowledged across three SIGKILLs and a pause", len(acked))
}
