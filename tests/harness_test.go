// Package tests holds PairDB's end-to-end tests: a whole cluster (embedded
// NATS with JetStream, real Pebble storage nodes, coordinators) in one
// process, driven through the Go client and plain NATS requests.
package tests

import (
	"context"
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
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

type harness struct {
	t   *testing.T
	dev *cluster.Dev
	nc  *nats.Conn
	c   *client.Client
	dir string
}

func startCluster(t *testing.T, nodes int) *harness {
	t.Helper()
	return startClusterIn(t, t.TempDir(), nodes)
}

func startClusterIn(t *testing.T, dir string, nodes int) *harness {
	t.Helper()
	return startClusterWith(t, cluster.DevConfig{DataDir: dir, Nodes: nodes})
}

// startClusterWith starts a dev cluster from cfg; DataDir defaults to a
// temporary directory and the logger to the test's.
func startClusterWith(t *testing.T, cfg cluster.DevConfig) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	d, err := cluster.StartDev(ctx, cfg)
	require.NoError(t, err)
	h := &harness{t: t, dev: d, dir: cfg.DataDir}
	t.Cleanup(func() { h.close() })
	h.nc, err = nats.Connect(d.ClientURL())
	require.NoError(t, err)
	h.c = client.New(h.nc, client.WithRetries(0))
	return h
}

func (h *harness) close() {
	if h.dev == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h.nc.Close()
	require.NoError(h.t, h.dev.Close(ctx))
	h.dev = nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (h *harness) stopNode(id string) {
	h.t.Helper()
	require.NoError(h.t, h.dev.StopNode(ctxT(h.t), id))
}

func (h *harness) startNode(id string) {
	h.t.Helper()
	require.NoError(h.t, h.dev.StartNode(id))
}

// readNode reads key straight from one storage node, bypassing
// coordinators, to check what that replica holds.
func (h *harness) readNode(node, tenant, key string) (dvv.Object, bool) {
	h.t.Helper()
	resp := new(pb.ReadResponse)
	// At the ring's epoch, when there is a coordinator to ask: the node
	// then waits until it has folded every tenant created before.
	var epoch uint64
	if h.dev != nil {
		if cs := h.dev.Coordinators(); len(cs) > 0 {
			epoch = cs[0].Ring.State().Epoch
		}
	}
	err := bus.Request(ctxT(h.t), h.nc, bus.Subjects{}.Node(node, bus.OpRead), &pb.ReadRequest{TenantId: tenant, Key: key, Epoch: epoch}, resp)
	if status.Is(err, pb.ErrorCode_STALE_EPOCH) {
		// The node is ahead of the coordinator: it knows every tenant the
		// coordinator does.
		resp = new(pb.ReadResponse)
		err = bus.Request(ctxT(h.t), h.nc, bus.Subjects{}.Node(node, bus.OpRead), &pb.ReadRequest{TenantId: tenant, Key: key}, resp)
	}
	require.NoError(h.t, err)
	return dvvpb.ObjectFromProto(resp.GetObject()), resp.GetFound()
}

// values returns the live sibling values of a get response as strings.
func values(resp *pb.GetResponse) []string {
	var out []string
	for _, s := range resp.GetSiblings() {
		out = append(out, string(s.GetValue()))
	}
	return out
}

func requireCode(t *testing.T, err error, code pb.ErrorCode) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code.String(), status.CodeOf(err).String(), "error: %v", err)
}

// ghostActor registers incarnation inc (of a node "ghost-<inc>" that never
// runs) in the ring log and waits until every part has folded it, so tests
// can hand storage nodes objects written by an actor the cluster knows.
// Storage nodes refuse clocks that name actors the log never registered.
func (h *harness) ghostActor(inc string) string {
	h.t.Helper()
	ring := h.dev.Coordinators()[0].Ring
	ctx := ctxT(h.t)
	seq, err := ring.Append(ctx, ring.State().Seq, &pb.RingEvent{Event: &pb.RingEvent_Registered{
		Registered: &pb.NodeRegistered{NodeId: "ghost-" + inc, Incarnation: inc},
	}})
	require.NoError(h.t, err)
	require.NoError(h.t, h.dev.WaitFolded(ctx, seq))
	return inc
}

// soon is a deadline for applies tests send straight to a storage node:
// well ahead, as a coordinator's is.
func soon() int64 { return time.Now().Add(5 * time.Second).UnixMilli() }
