package bus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/internal/natstest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

func TestSubjects(t *testing.T) {
	s := bus.Subjects{}
	require.Equal(t, "pairdb.v1.kv.acme.put", s.KV("acme", bus.OpPut))
	require.Equal(t, "pairdb.v1.kv.*.get", s.KVAny(bus.OpGet))
	require.Equal(t, "pairdb.v1.node.node-1.apply", s.Node("node-1", bus.OpApply))
	require.Equal(t, "x.v1.admin.tenants.list", bus.Subjects{Prefix: "x"}.Admin("tenants", "list"))
	tenant, ok := s.TenantOf("pairdb.v1.kv.acme.put")
	require.True(t, ok)
	require.Equal(t, "acme", tenant)
	for _, bad := range []string{"pairdb.v1.kv.", "pairdb.v1.kv.acme", "other.v1.kv.acme.put", "pairdb.v1.kv..put"} {
		_, ok := s.TenantOf(bad)
		require.False(t, ok, bad)
	}
}

func TestErrorCodes(t *testing.T) {
	err := status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "tenant %q does not exist", "x")
	require.Equal(t, pb.ErrorCode_TENANT_NOT_FOUND, status.CodeOf(errors.Wrap(err, "outer")), "codes survive wrapping")
	wrapped := status.Wrap(pb.ErrorCode_UNAVAILABLE, nats.ErrNoResponders, "node down")
	require.True(t, errors.Is(wrapped, nats.ErrNoResponders), "the cause stays reachable")
	require.Equal(t, pb.ErrorCode_DEADLINE_EXCEEDED, status.CodeOf(context.DeadlineExceeded))
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(nats.ErrNoResponders))
	require.Equal(t, pb.ErrorCode_INTERNAL, status.CodeOf(errors.New("boom")))
	require.Nil(t, status.ToProto(nil))
	require.NoError(t, status.FromProto(nil))
	back := status.FromProto(status.ToProto(err))
	require.Equal(t, err.Error(), back.Error())
}

func TestCodecJSONUsesProtoNames(t *testing.T) {
	data, err := bus.Marshal(bus.JSON, &pb.PutRequest{Key: "k", IdempotencyKey: "i"})
	require.NoError(t, err)
	require.Contains(t, string(data), `"idempotency_key"`)
	var req pb.PutRequest
	require.NoError(t, bus.Unmarshal(bus.JSON, []byte(`{"key":"k","vector_clock":[{"actor":"a","counter":"2"}]}`), &req))
	require.Equal(t, uint64(2), req.GetVectorClock()[0].GetCounter())
	require.NoError(t, bus.Unmarshal(bus.JSON, nil, &req), "an empty JSON body is an empty message")
	err = bus.Unmarshal(bus.JSON, []byte(`{"nope":1}`), &req)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err), "unknown fields are refused")
	err = bus.Unmarshal(bus.Proto, []byte{0xff}, &req)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
}

func TestLimiterRefusesWhenFullAndDrains(t *testing.T) {
	l := bus.NewLimiter(1)
	release := make(chan struct{})
	require.True(t, l.Go(func() { <-release }))
	require.False(t, l.Go(func() {}), "no slot left")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.Drain(ctx), context.DeadlineExceeded, "drain waits for the running request")
	require.False(t, l.Go(func() {}), "a draining limiter takes no new work")
	close(release)
	require.NoError(t, l.Drain(context.Background()))
}

// Idle workers wait a second for more work, but not past Drain: when it
// returns, the limiter has no goroutine left.
func TestLimiterDrainEndsIdleWorkers(t *testing.T) {
	l := bus.NewLimiter(4)
	var ran sync.WaitGroup
	for range 4 {
		ran.Add(1)
		require.True(t, l.Go(ran.Done))
	}
	ran.Wait() // the workers are idle now, waiting for more
	require.Positive(t, l.Workers())
	require.NoError(t, l.Drain(context.Background()))
	require.Zero(t, l.Workers(), "idle workers outlived Drain")
}

func TestEndpointAnswersConcurrentlyWithTypedErrors(t *testing.T) {
	_, nc := natstest.Start(t)
	srv := &bus.Server{Conn: nc, Limiter: bus.NewLimiter(16), Timeout: 5 * time.Second, Log: zaptest.NewLogger(t)}
	var (
		mu       sync.Mutex
		observed []string
	)
	srv.Observe = func(name string, _ time.Time, code string) {
		mu.Lock()
		observed = append(observed, name+":"+code)
		mu.Unlock()
	}
	gate := make(chan struct{})
	svc, err := micro.AddService(nc, micro.Config{Name: "test", Version: "0.0.1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	h := bus.Endpoint(srv, "get", func() *pb.GetRequest { return &pb.GetRequest{} }, func() *pb.GetResponse { return &pb.GetResponse{} },
		func(ctx context.Context, _ string, req *pb.GetRequest) (*pb.GetResponse, error) {
			switch req.GetKey() {
			case "block":
				<-gate
			case "missing":
				return &pb.GetResponse{Key: "missing"}, status.Errorf(pb.ErrorCode_KEY_NOT_FOUND, "no such key")
			}
			return &pb.GetResponse{Key: req.GetKey(), Found: true}, nil
		})
	require.NoError(t, svc.AddEndpoint("get", h, micro.WithEndpointSubject("test.get")))
	require.NoError(t, nc.Flush())

	// A blocked request does not hold up the next one on the same endpoint.
	blocked := make(chan error, 1)
	go func() {
		blocked <- bus.Request(context.Background(), nc, "test.get", &pb.GetRequest{Key: "block"}, new(pb.GetResponse))
	}()
	resp := new(pb.GetResponse)
	require.NoError(t, bus.Request(context.Background(), nc, "test.get", &pb.GetRequest{Key: "k"}, resp))
	require.True(t, resp.GetFound())
	close(gate)
	require.NoError(t, <-blocked)

	resp = new(pb.GetResponse)
	err = bus.Request(context.Background(), nc, "test.get", &pb.GetRequest{Key: "missing"}, resp)
	require.Equal(t, pb.ErrorCode_KEY_NOT_FOUND, status.CodeOf(err))
	require.Equal(t, "missing", resp.GetKey(), "the body of an error reply is kept")

	err = bus.Request(context.Background(), nc, "test.none", &pb.GetRequest{}, new(pb.GetResponse))
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(err))
	require.True(t, errors.Is(err, nats.ErrNoResponders))

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(observed) == 3
	}, 5*time.Second, 5*time.Millisecond)
	require.Contains(t, observed, "get:KEY_NOT_FOUND")
}
