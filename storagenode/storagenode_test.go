package storagenode_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/internal/natstest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode"
)

var subjects = bus.Subjects{}

func testConfig(t testing.TB, id, dir string) storagenode.Config {
	cfg := storagenode.DefaultConfig(id, dir)
	cfg.CacheBytes = 8 << 20
	cfg.Logger = zaptest.NewLogger(t)
	cfg.Metrics = metrics.NewSet()
	return cfg
}

func startNode(t testing.TB, nc *nats.Conn, cfg storagenode.Config) *storagenode.Node {
	t.Helper()
	n, err := storagenode.Start(nc, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, n.Stop(context.Background())) })
	return n
}

func apply(t *testing.T, nc *nats.Conn, node string, req *pb.ApplyRequest) (*pb.ApplyResponse, error) {
	t.Helper()
	if req.DeadlineUnixMs == 0 {
		req.DeadlineUnixMs = soon()
	}
	resp := &pb.ApplyResponse{}
	err := bus.Request(context.Background(), nc, subjects.Node(node, bus.OpApply), req, resp)
	return resp, err
}

// soon is an apply deadline for tests: well ahead, as a coordinator's is.
func soon() int64 { return time.Now().Add(5 * time.Second).UnixMilli() }

func read(t *testing.T, nc *nats.Conn, node, tenant, key string) *pb.ReadResponse {
	t.Helper()
	resp := &pb.ReadResponse{}
	require.NoError(t, bus.Request(context.Background(), nc, subjects.Node(node, bus.OpRead),
		&pb.ReadRequest{TenantId: tenant, Key: key}, resp))
	return resp
}

func TestApplyThenRead(t *testing.T) {
	_, nc := natstest.Start(t)
	n := startNode(t, nc, testConfig(t, "n1", t.TempDir()))

	missing := read(t, nc, "n1", "acme", "k")
	require.False(t, missing.GetFound())
	require.Nil(t, missing.GetObject())

	resp, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("v1"), Policy: pb.ConflictPolicy_SIBLINGS})
	require.NoError(t, err)
	obj := dvvpb.ObjectFromProto(resp.GetObject())
	require.Len(t, obj.Siblings, 1)
	require.Equal(t, dvv.Dot{Actor: n.Incarnation(), Counter: 1}, obj.Siblings[0].Dot)
	require.Equal(t, []byte("v1"), obj.Siblings[0].Value)
	require.InDelta(t, time.Now().UnixMilli(), obj.Siblings[0].TimestampMs, float64(time.Minute.Milliseconds()))
	require.Zero(t, resp.GetEpoch())

	got := read(t, nc, "n1", "acme", "k")
	require.True(t, got.GetFound())
	require.True(t, proto.Equal(resp.GetObject(), got.GetObject()))

	// A delete with the read context leaves a tombstone, which this layer
	// still reports as found.
	_, err = apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Tombstone: true, Context: got.GetObject().GetClock()})
	require.NoError(t, err)
	deleted := read(t, nc, "n1", "acme", "k")
	require.True(t, deleted.GetFound())
	require.Len(t, deleted.GetObject().GetSiblings(), 1)
	require.True(t, deleted.GetObject().GetSiblings()[0].GetTombstone())
}

func TestMergeReplicatesToSecondNode(t *testing.T) {
	_, nc := natstest.Start(t)
	startNode(t, nc, testConfig(t, "n1", t.TempDir()))
	startNode(t, nc, testConfig(t, "n2", t.TempDir()))

	resp, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("v")})
	require.NoError(t, err)
	for range 2 { // a replayed merge is harmless
		require.NoError(t, bus.Request(context.Background(), nc, subjects.Node("n2", bus.OpMerge),
			&pb.MergeRequest{TenantId: "acme", Key: "k", Object: resp.GetObject()}, &pb.MergeResponse{}))
	}
	got := read(t, nc, "n2", "acme", "k")
	require.True(t, got.GetFound())
	require.True(t, dvv.Equal(dvvpb.ObjectFromProto(resp.GetObject()), dvvpb.ObjectFromProto(got.GetObject())))

	err = bus.Request(context.Background(), nc, subjects.Node("n2", bus.OpMerge),
		&pb.MergeRequest{TenantId: "acme", Key: "k"}, &pb.MergeResponse{})
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err), "a merge without an object is refused")
}

func TestConcurrentAppliesOverTheBus(t *testing.T) {
	_, nc := natstest.Start(t)
	startNode(t, nc, testConfig(t, "n1", t.TempDir()))
	const writers = 32
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "hot", Value: fmt.Appendf(nil, "w%d", i)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, read(t, nc, "n1", "acme", "hot").GetObject().GetSiblings(), writers)
}

func TestTooManySiblings(t *testing.T) {
	_, nc := natstest.Start(t)
	startNode(t, nc, testConfig(t, "n1", t.TempDir()))
	_, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("a"), MaxSiblings: 1})
	require.NoError(t, err)
	_, err = apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("b"), MaxSiblings: 1})
	require.Equal(t, pb.ErrorCode_TOO_MANY_SIBLINGS, status.CodeOf(err))
	require.ErrorContains(t, err, "context")
}

func TestJSONRequestGetsJSONReply(t *testing.T) {
	_, nc := natstest.Start(t)
	startNode(t, nc, testConfig(t, "n1", t.TempDir()))

	body, err := protojson.Marshal(&pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("json"), DeadlineUnixMs: soon()})
	require.NoError(t, err)
	msg := nats.NewMsg(subjects.Node("n1", bus.OpApply))
	msg.Header.Set(bus.HeaderContentType, bus.ContentTypeJSON)
	msg.Data = body
	reply, err := nc.RequestMsg(msg, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, bus.ContentTypeJSON, reply.Header.Get(bus.HeaderContentType))
	require.Empty(t, reply.Header.Get("Nats-Service-Error-Code"))

	var resp pb.ApplyResponse
	require.NoError(t, protojson.Unmarshal(reply.Data, &resp), "reply is JSON: %s", reply.Data)
	require.Len(t, resp.GetObject().GetSiblings(), 1)
	require.Equal(t, []byte("json"), resp.GetObject().GetSiblings()[0].GetValue())
	require.True(t, bytes.Contains(reply.Data, []byte(`"siblings"`)))
}

func TestInvalidTenantID(t *testing.T) {
	_, nc := natstest.Start(t)
	startNode(t, nc, testConfig(t, "n1", t.TempDir()))
	for _, tenant := range []string{"", "bad.tenant", "bad tenant", "x\x00"} {
		_, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: tenant, Key: "k", Value: []byte("v")})
		require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err), "tenant %q", tenant)
		require.ErrorContains(t, err, "tenant")
	}
	_, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "", Value: []byte("v")})
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	err = bus.Request(context.Background(), nc, subjects.Node("n1", bus.OpRead),
		&pb.ReadRequest{TenantId: "a.b", Key: "k"}, &pb.ReadResponse{})
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
}

func TestMalformedProtobufIsInvalidArgument(t *testing.T) {
	_, nc := natstest.Start(t)
	startNode(t, nc, testConfig(t, "n1", t.TempDir()))
	// 0x0a is field 1 (tenant_id), length-delimited, and the length runs
	// past the end of the body.
	reply, err := nc.Request(subjects.Node("n1", bus.OpApply), []byte{0x0a, 0x7f, 'x'}, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT.String(), reply.Header.Get("Nats-Service-Error-Code"))
	var resp pb.ApplyResponse
	require.NoError(t, proto.Unmarshal(reply.Data, &resp))
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, resp.GetError().GetCode())
	require.Contains(t, resp.GetError().GetMessage(), "malformed")
}

func TestHeartbeatArrives(t *testing.T) {
	_, nc := natstest.Start(t)
	beats := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(subjects.Heartbeat("n1"), beats)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())

	cfg := testConfig(t, "n1", t.TempDir())
	cfg.HeartbeatInterval = 20 * time.Millisecond
	n := startNode(t, nc, cfg)

	for i := range 2 { // the first at start, then on the ticker
		select {
		case msg := <-beats:
			var hb pb.Heartbeat
			require.NoError(t, proto.Unmarshal(msg.Data, &hb))
			require.Equal(t, "n1", hb.GetNodeId())
			require.Equal(t, n.Incarnation(), hb.GetIncarnation())
			require.InDelta(t, time.Now().UnixMilli(), hb.GetUnixMs(), float64(time.Minute.Milliseconds()))
			require.Positive(t, hb.GetDiskBytes())
		case <-time.After(5 * time.Second):
			t.Fatalf("heartbeat %d did not arrive", i)
		}
	}
}

func TestRestartKeepsDataAndIncarnation(t *testing.T) {
	_, nc := natstest.Start(t)
	dir := t.TempDir()
	n, err := storagenode.Start(nc, testConfig(t, "n1", dir))
	require.NoError(t, err)
	inc := n.Incarnation()
	resp, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("durable")})
	require.NoError(t, err)
	require.NoError(t, n.Stop(context.Background()))

	n2 := startNode(t, nc, testConfig(t, "n1", dir))
	require.Equal(t, inc, n2.Incarnation())
	got := read(t, nc, "n1", "acme", "k")
	require.True(t, got.GetFound())
	require.True(t, proto.Equal(resp.GetObject(), got.GetObject()))
}

func TestStopIsIdempotentAndStopsIntake(t *testing.T) {
	_, nc := natstest.Start(t)
	n, err := storagenode.Start(nc, testConfig(t, "n1", t.TempDir()))
	require.NoError(t, err)
	require.Equal(t, "n1", n.ID())
	require.NoError(t, n.Stop(context.Background()))
	require.NoError(t, n.Stop(context.Background()))

	_, err = apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("v")})
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(err))
	require.ErrorIs(t, err, nats.ErrNoResponders)
}

func TestMetricsCountRequestsAndErrors(t *testing.T) {
	_, nc := natstest.Start(t)
	cfg := testConfig(t, "n1", t.TempDir())
	startNode(t, nc, cfg)
	_, err := apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("v")})
	require.NoError(t, err)
	_, err = apply(t, nc, "n1", &pb.ApplyRequest{TenantId: "bad.tenant", Key: "k"})
	require.Error(t, err)

	var out bytes.Buffer
	cfg.Metrics.WritePrometheus(&out)
	text := out.String()
	require.Contains(t, text, `pairdb_node_requests_total{node="n1",op="apply"} 2`)
	require.Contains(t, text, `pairdb_node_request_errors_total{node="n1",op="apply",code="INVALID_ARGUMENT"} 1`)
	require.Contains(t, text, `pairdb_node_request_duration_seconds_count{node="n1",op="apply"} 2`)
}

func TestConfigValidate(t *testing.T) {
	good := storagenode.DefaultConfig("node-1", "/data")
	require.NoError(t, good.Validate())
	require.True(t, good.Sync, "the default config fsyncs")

	for name, mutate := range map[string]func(*storagenode.Config){
		"empty id":          func(c *storagenode.Config) { c.ID = "" },
		"id with dot":       func(c *storagenode.Config) { c.ID = "a.b" },
		"id with wildcard":  func(c *storagenode.Config) { c.ID = "*" },
		"no data dir":       func(c *storagenode.Config) { c.DataDir = "" },
		"negative limit":    func(c *storagenode.Config) { c.MaxConcurrent = -1 },
		"negative timeout":  func(c *storagenode.Config) { c.RequestTimeout = -time.Second },
		"negative interval": func(c *storagenode.Config) { c.HeartbeatInterval = -time.Second },
		"negative cache":    func(c *storagenode.Config) { c.CacheBytes = -1 },
	} {
		c := good
		mutate(&c)
		require.Error(t, c.Validate(), name)
	}

	_, nc := natstest.Start(t)
	_, err := storagenode.Start(nc, storagenode.Config{ID: "a.b", DataDir: t.TempDir()})
	require.Error(t, err)
}

// TestStopUnderLoad stops a node while writers are busy: every request is
// either acknowledged or refused as UNAVAILABLE, and every acknowledged
// write is there after a restart.
func TestHealingSettingsAreChecked(t *testing.T) {
	require.NoError(t, storagenode.DefaultConfig("n1", t.TempDir()).Validate())
	require.ErrorContains(t, storagenode.Config{ID: "n1", DataDir: "d", AntiEntropyRate: -1}.Validate(), "AntiEntropyRate")
}

func TestStopUnderLoad(t *testing.T) {
	_, nc := natstest.Start(t)
	dir := t.TempDir()
	n, err := storagenode.Start(nc, testConfig(t, "n1", dir))
	require.NoError(t, err)

	const writers = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		acked   []string
		started = make(chan struct{}, writers)
	)
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp := &pb.ApplyResponse{}
				err := bus.Request(ctx, nc, subjects.Node("n1", bus.OpApply),
					&pb.ApplyRequest{TenantId: "acme", Key: key, Value: []byte(key), DeadlineUnixMs: soon()}, resp)
				cancel()
				if i == 0 {
					started <- struct{}{} // the writer is running, whatever the outcome
				}
				if err != nil {
					assertUnavailable(t, err)
					return
				}
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
		})
	}
	for range writers {
		<-started
	}
	require.NoError(t, n.Stop(context.Background()))
	wg.Wait()

	startNode(t, nc, testConfig(t, "n1", dir))
	require.NotEmpty(t, acked)
	for _, key := range acked {
		require.True(t, read(t, nc, "n1", "acme", key).GetFound(), "acknowledged write %s was lost", key)
	}
}

func assertUnavailable(t *testing.T, err error) {
	t.Helper()
	if status.CodeOf(err) != pb.ErrorCode_UNAVAILABLE {
		t.Errorf("a request racing Stop must be refused as UNAVAILABLE, got %v", err)
	}
}
