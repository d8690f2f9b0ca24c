package hints_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/jetstream/hints"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func merge(key string) *pb.MergeRequest {
	return &pb.MergeRequest{
		TenantId: "default", Key: key, Epoch: 7,
		Object: dvvpb.ObjectToProto(dvv.Update(dvv.Object{}, nil, "a", []byte("v-"+key), false, 1, dvv.Siblings)),
	}
}

// fetchAll drains up to n hints, acking them, and returns their keys.
func fetchAll(t *testing.T, in *hints.Inbox, n int) []string {
	t.Helper()
	var keys []string
	deadline := time.Now().Add(10 * time.Second)
	for len(keys) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(ctxT(t), time.Second)
		hs, err := in.Fetch(ctx, n-len(keys))
		cancel()
		require.NoError(t, err)
		for _, h := range hs {
			req, err := h.Request()
			require.NoError(t, err)
			keys = append(keys, req.GetKey())
			require.NoError(t, h.Ack())
		}
	}
	return keys
}

func TestAddFetchAckAndPending(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := ctxT(t)
	cfg := hints.Config{Logger: zaptest.NewLogger(t)}
	q, err := hints.Open(ctx, js, cfg)
	require.NoError(t, err)
	in, err := hints.OpenInbox(ctx, js, cfg, "node-1")
	require.NoError(t, err)
	other, err := hints.OpenInbox(ctx, js, cfg, "node-2")
	require.NoError(t, err)

	for i := range 5 {
		require.NoError(t, q.Add(ctx, "node-1", merge(fmt.Sprint(i))))
	}
	require.NoError(t, q.Add(ctx, "node-2", merge("x")))
	// The consumer's count follows the stream's asynchronously (CI saw 1
	// of 5 right after the adds under -race).
	require.Eventually(t, func() bool { n, err := in.Pending(ctx); return err == nil && n == 5 },
		5*time.Second, 10*time.Millisecond, "node-1 has 5 hints pending")

	got := fetchAll(t, in, 5)
	require.Equal(t, []string{"0", "1", "2", "3", "4"}, got, "a node gets its own hints, in order")
	require.Eventually(t, func() bool { n, err := in.Pending(ctx); return err == nil && n == 0 }, 5*time.Second, 10*time.Millisecond)

	// node-2's hints are untouched by node-1's acks.
	require.Equal(t, []string{"x"}, fetchAll(t, other, 1))
	st, err := js.Stream(ctx, hints.DefaultStream)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.FileStorage, info.Config.Storage)
	require.Equal(t, jetstream.LimitsPolicy, info.Config.Retention)
	require.Equal(t, jetstream.DiscardOld, info.Config.Discard)
	require.Equal(t, hints.DefaultMaxAge, info.Config.MaxAge)
	require.Equal(t, hints.DefaultMaxPerNode, info.Config.MaxMsgsPerSubject)
}

// A node's inbox never creates the stream (a node's NATS user may not): it
// waits for a coordinator's, and gives up when its context ends.
func TestInboxWaitsForTheStream(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	_, err = hints.OpenInbox(short, js, hints.Config{}, "node-1")
	require.ErrorContains(t, err, "does not exist")
	_, err = js.Stream(ctxT(t), hints.DefaultStream)
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "the inbox created no stream")

	opened := make(chan error, 1)
	go func() {
		_, err := hints.OpenInbox(ctxT(t), js, hints.Config{}, "node-1")
		opened <- err
	}()
	_, err = hints.Open(ctxT(t), js, hints.Config{})
	require.NoError(t, err)
	select {
	case err := <-opened:
		require.NoError(t, err, "the inbox opens once a coordinator created the stream")
	case <-ctxT(t).Done():
		t.Fatal("the inbox kept waiting after the stream was created")
	}
}

func TestEmptyFetchReturnsAtDeadline(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = hints.Open(ctxT(t), js, hints.Config{})
	require.NoError(t, err)
	in, err := hints.OpenInbox(ctxT(t), js, hints.Config{}, "node-1")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	hs, err := in.Fetch(ctx, 10)
	require.NoError(t, err)
	require.Empty(t, hs)
	require.Less(t, time.Since(start), 3*time.Second)
}

func TestRetryRedeliversAndRejectDrops(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := ctxT(t)
	q, err := hints.Open(ctx, js, hints.Config{})
	require.NoError(t, err)
	in, err := hints.OpenInbox(ctx, js, hints.Config{}, "node-1")
	require.NoError(t, err)
	require.NoError(t, q.Add(ctx, "node-1", merge("a")))
	require.NoError(t, q.Add(ctx, "node-1", merge("b")))
	// A foreign message on the subject is unreadable.
	_, err = js.Publish(ctx, hints.Subject(bus.Subjects{}, "node-1"), []byte{0xff, 0xff})
	require.NoError(t, err)

	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	hs, err := in.Fetch(fctx, 3)
	cancel()
	require.NoError(t, err)
	require.Len(t, hs, 3)
	require.NoError(t, hs[0].Ack())
	require.NoError(t, hs[1].Retry(0))
	_, err = hs[2].Request()
	require.Error(t, err)
	require.NoError(t, hs[2].Reject("unreadable"))

	require.Equal(t, []string{"b"}, fetchAll(t, in, 1), "a retried hint comes back; an acked or rejected one does not")
	require.Eventually(t, func() bool { n, err := in.Pending(ctx); return err == nil && n == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestPerNodeCapDropsOldest(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := ctxT(t)
	cfg := hints.Config{MaxPerNode: 3}
	q, err := hints.Open(ctx, js, cfg)
	require.NoError(t, err)
	in, err := hints.OpenInbox(ctx, js, cfg, "node-1")
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, q.Add(ctx, "node-1", merge(fmt.Sprint(i))))
	}
	require.NoError(t, q.Add(ctx, "node-2", merge("other")))
	require.Equal(t, []string{"2", "3", "4"}, fetchAll(t, in, 3), "the newest hints are kept")
}

// Hints are file-backed, and so is the durable consumer: both survive a
// restart of the NATS server.
func TestHintsSurviveServerRestart(t *testing.T) {
	dir := t.TempDir()
	s := natstest.StartServer(t, dir)
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := ctxT(t)
	q, err := hints.Open(ctx, js, hints.Config{})
	require.NoError(t, err)
	in, err := hints.OpenInbox(ctx, js, hints.Config{}, "node-1")
	require.NoError(t, err)
	for i := range 4 {
		require.NoError(t, q.Add(ctx, "node-1", merge(fmt.Sprint(i))))
	}
	require.Equal(t, []string{"0"}, fetchAll(t, in, 1))
	require.Eventually(t, func() bool { n, err := in.Pending(ctx); return err == nil && n == 3 }, 5*time.Second, 10*time.Millisecond)
	nc.Close()
	s.Shutdown()
	s.WaitForShutdown()

	s = natstest.StartServer(t, dir)
	nc = natstest.Connect(t, s)
	js, err = jetstream.New(nc)
	require.NoError(t, err)
	in, err = hints.OpenInbox(ctx, js, hints.Config{}, "node-1")
	require.NoError(t, err)
	n, err := in.Pending(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	require.Equal(t, []string{"1", "2", "3"}, fetchAll(t, in, 3))
}

func TestConfigValidation(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = hints.Open(ctxT(t), js, hints.Config{MaxAge: -time.Second})
	require.Error(t, err)
	_, err = hints.Open(ctxT(t), js, hints.Config{Replicas: 9})
	require.Error(t, err)
	_, err = hints.OpenInbox(ctxT(t), js, hints.Config{}, "bad.node")
	require.Error(t, err)
	q, err := hints.Open(ctxT(t), js, hints.Config{})
	require.NoError(t, err)
	requireCode := func(err error, code pb.ErrorCode) {
		t.Helper()
		require.Error(t, err)
		require.Equal(t, code, status.CodeOf(err))
	}
	requireCode(q.Add(ctxT(t), "bad.node", merge("k")), pb.ErrorCode_INVALID_ARGUMENT)
}
