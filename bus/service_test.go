package bus_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/internal/natstest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// monitor asks the micro monitoring subject of verb for service name, as
// `nats micro` does, and decodes the JSON answer into out.
func monitor(t *testing.T, nc *nats.Conn, verb micro.Verb, name string, out any) {
	t.Helper()
	subject, err := micro.ControlSubject(verb, name, "")
	require.NoError(t, err)
	msg, err := nc.Request(subject, nil, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(msg.Data, out))
}

// TestServiceStatsCountAnswers: `nats micro stats` shows every request with
// its processing time up to the reply (sent after the handler returned,
// from a limiter goroutine) and counts the ones answered with an error.
func TestServiceStatsCountAnswers(t *testing.T) {
	_, nc := natstest.Start(t)
	const work = 30 * time.Millisecond
	srv := &bus.Server{Conn: nc, Limiter: bus.NewLimiter(4), Timeout: 5 * time.Second, Log: zaptest.NewLogger(t)}
	svc, err := bus.AddService(nc, micro.Config{Name: "stats-test", Version: "1.0.0", Description: "test service"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, svc.Stop(context.Background())) })
	h := bus.Endpoint(srv, "get", func() *pb.GetRequest { return &pb.GetRequest{} }, func() *pb.GetResponse { return &pb.GetResponse{} },
		func(ctx context.Context, _ string, req *pb.GetRequest) (*pb.GetResponse, error) {
			if req.GetKey() == "missing" {
				return nil, status.Errorf(pb.ErrorCode_KEY_NOT_FOUND, "no such key")
			}
			// Simulated work that the statistics must see.
			timer := time.NewTimer(work)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			return &pb.GetResponse{Key: req.GetKey(), Found: true}, nil
		})
	require.NoError(t, svc.AddEndpoint("get", "stats.get", h))
	require.NoError(t, nc.Flush())

	require.NoError(t, bus.Request(context.Background(), nc, "stats.get", &pb.GetRequest{Key: "k"}, new(pb.GetResponse)))
	err = bus.Request(context.Background(), nc, "stats.get", &pb.GetRequest{Key: "missing"}, new(pb.GetResponse))
	require.Equal(t, pb.ErrorCode_KEY_NOT_FOUND, status.CodeOf(err))

	var stats micro.Stats
	monitor(t, nc, micro.StatsVerb, "stats-test", &stats)
	require.Equal(t, micro.StatsResponseType, stats.Type)
	require.Len(t, stats.Endpoints, 1)
	ep := stats.Endpoints[0]
	require.Equal(t, "get", ep.Name)
	require.Equal(t, "stats.get", ep.Subject)
	require.Equal(t, 2, ep.NumRequests)
	require.Equal(t, 1, ep.NumErrors, "the KEY_NOT_FOUND answer is an error")
	require.Equal(t, "KEY_NOT_FOUND: no such key", ep.LastError)
	require.GreaterOrEqual(t, ep.ProcessingTime, work, "the time until the reply, not until the handler returned")
	require.Equal(t, 2, svc.Stats().Endpoints[0].NumRequests)

	var info micro.Info
	monitor(t, nc, micro.InfoVerb, "stats-test", &info)
	require.Equal(t, micro.InfoResponseType, info.Type)
	require.Equal(t, "test service", info.Description)
	require.Equal(t, []micro.EndpointInfo{{Name: "get", Subject: "stats.get", QueueGroup: micro.DefaultQueueGroup}}, info.Endpoints)

	var ping micro.Ping
	monitor(t, nc, micro.PingVerb, "", &ping)
	require.Equal(t, micro.PingResponseType, ping.Type)
	require.Equal(t, "stats-test", ping.Name)
	require.Equal(t, info.ID, ping.ID)
}

// TestServiceRequestAnsweredDirectly: a plain micro handler that answers
// through the request is counted too, once.
func TestServiceRequestAnsweredDirectly(t *testing.T) {
	_, nc := natstest.Start(t)
	svc, err := bus.AddService(nc, micro.Config{Name: "direct", Version: "1.0.0"})
	require.NoError(t, err)
	require.NoError(t, svc.AddEndpoint("echo", "direct.echo", micro.HandlerFunc(func(r micro.Request) {
		if string(r.Data()) == "fail" {
			_ = r.Error("400", "bad input", nil)
			_ = r.Respond([]byte("a second answer is not counted"))
			return
		}
		_ = r.Respond(r.Data())
	})))
	require.NoError(t, nc.Flush())
	msg, err := nc.Request("direct.echo", []byte("hi"), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "hi", string(msg.Data))
	msg, err = nc.Request("direct.echo", []byte("fail"), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "400", msg.Header.Get(micro.ErrorCodeHeader))

	st := svc.Stats().Endpoints[0]
	require.Equal(t, 2, st.NumRequests)
	require.Equal(t, 1, st.NumErrors)
	require.Equal(t, "400: bad input", st.LastError)

	require.NoError(t, svc.Stop(context.Background()))
	require.NoError(t, svc.Stop(context.Background()), "Stop twice")
	_, err = nc.Request("direct.echo", []byte("hi"), 5*time.Second)
	require.ErrorIs(t, err, nats.ErrNoResponders, "stopped: nothing serves the subject")
	subject, err := micro.ControlSubject(micro.PingVerb, "direct", "")
	require.NoError(t, err)
	_, err = nc.Request(subject, nil, 5*time.Second)
	require.ErrorIs(t, err, nats.ErrNoResponders, "stopped: the monitoring subjects are gone")
}

// TestDecodeErrorsSayWhatToDo: the two usual mistakes with `nats req` get
// a hint, and a request that cannot be encoded is the caller's error.
func TestDecodeErrorsSayWhatToDo(t *testing.T) {
	err := bus.Unmarshal(bus.JSON, []byte(`{"key":"k","value":"hello"}`), new(pb.PutRequest))
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	require.Contains(t, err.Error(), "base64")

	err = bus.Unmarshal(bus.Proto, []byte(` {"key":"k"}`), new(pb.GetRequest))
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	require.Contains(t, err.Error(), "Content-Type: application/json")

	err = bus.Unmarshal(bus.Proto, []byte{0x0a, 0x05, 'k'}, new(pb.GetRequest))
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	require.NotContains(t, err.Error(), "Content-Type", "no JSON hint for a body that is not JSON")

	_, nc := natstest.Start(t)
	err = bus.Request(context.Background(), nc, "nobody.listens", &pb.GetRequest{Key: "\xff"}, new(pb.GetResponse))
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
	require.Contains(t, err.Error(), "valid UTF-8")
}
