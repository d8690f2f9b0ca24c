package faults_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/internal/faults"
	"github.com/pairdb/pairdb/internal/natstest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// TestMiddlewareFaults serves an endpoint through the injector's
// middleware and checks each fault as the sender and the handler see it.
func TestMiddlewareFaults(t *testing.T) {
	_, nc := natstest.Start(t)
	inj := faults.New(1)
	var handled atomic.Int32
	srv := &bus.Server{Conn: nc, Limiter: bus.NewLimiter(8), Timeout: 5 * time.Second, Log: zaptest.NewLogger(t), Middleware: inj.Middleware}
	svc, err := bus.AddService(nc, micro.Config{Name: "faults-test", Version: "1.0.0"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, svc.Stop(context.Background())) })
	h := bus.Endpoint(srv, "get", func() *pb.GetRequest { return &pb.GetRequest{} }, func() *pb.GetResponse { return &pb.GetResponse{} },
		func(context.Context, string, *pb.GetRequest) (*pb.GetResponse, error) {
			handled.Add(1)
			return &pb.GetResponse{Found: true}, nil
		})
	require.NoError(t, svc.AddEndpoint("get", "f.get", h))
	require.NoError(t, nc.Flush())
	call := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return bus.Request(ctx, nc, "f.get", &pb.GetRequest{Key: "k"}, new(pb.GetResponse))
	}

	require.NoError(t, call(time.Second))
	require.EqualValues(t, 1, handled.Load())

	// Dropped: never handled, no answer.
	remove := inj.Add(faults.Rule{Drop: 1})
	require.Equal(t, pb.ErrorCode_DEADLINE_EXCEEDED, status.CodeOf(call(100*time.Millisecond)))
	require.EqualValues(t, 1, handled.Load())
	remove()

	// Duplicated: handled twice, answered once.
	remove = inj.Add(faults.Rule{Duplicate: 1, Limit: 1})
	require.NoError(t, call(time.Second))
	require.EqualValues(t, 3, handled.Load())
	remove()

	// Reply lost: handled, but the sender hears nothing.
	remove = inj.Add(faults.Rule{LoseReply: 1, Limit: 1})
	require.Equal(t, pb.ErrorCode_DEADLINE_EXCEEDED, status.CodeOf(call(200*time.Millisecond)))
	require.Eventually(t, func() bool { return handled.Load() == 4 }, 5*time.Second, time.Millisecond)
	remove()

	// Held: handled only once released, then answered.
	release, seen := make(chan struct{}), make(chan string, 1)
	remove = inj.Add(faults.Rule{Hold: release, Seen: seen, Limit: 1})
	done := make(chan error, 1)
	go func() { done <- call(5 * time.Second) }()
	require.Equal(t, "f.get", <-seen)
	require.EqualValues(t, 4, handled.Load(), "a held request is not handled")
	close(release)
	require.NoError(t, <-done)
	require.EqualValues(t, 5, handled.Load())
	remove()
	require.Equal(t, faults.Stats{Dropped: 1, Duplicated: 1, RepliesLost: 1, Held: 1}, inj.Stats())
}
