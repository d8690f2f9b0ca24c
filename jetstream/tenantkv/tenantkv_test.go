package tenantkv_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/jetstream/tenantkv"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
	"github.com/pairdb/pairdb/tenant/tenanttest"
)

func TestConformance(t *testing.T) {
	// One server for the whole suite; each subtest gets its own (empty)
	// bucket.
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var n atomic.Int64
	tenanttest.Run(t, func(t *testing.T) tenant.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := tenantkv.Open(ctx, js, tenantkv.Config{
			Bucket: fmt.Sprintf("tenants_%d", n.Add(1)),
			Logger: zaptest.NewLogger(t),
		})
		require.NoError(t, err)
		return s
	})
}

func TestOpenIsIdempotentAndSharesState(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	a, err := tenantkv.Open(ctx, js, tenantkv.Config{Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	rec, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: "acme"}, time.Now())
	require.NoError(t, err)
	require.NoError(t, a.Create(ctx, rec))

	// A second process opening the same default bucket sees the record.
	b, err := tenantkv.Open(ctx, js, tenantkv.Config{})
	require.NoError(t, err)
	got, err := b.Get(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, uint64(1), got.GetVersion())

	kv, err := js.KeyValue(ctx, tenantkv.DefaultBucket)
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.History())
	require.Equal(t, jetstream.FileStorage, st.Config().Storage)
}

func TestInvalidConfig(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = tenantkv.Open(context.Background(), js, tenantkv.Config{Replicas: 6})
	require.Error(t, err)
}

func TestUnavailableWhenServerGone(t *testing.T) {
	s, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := tenantkv.Open(ctx, js, tenantkv.Config{})
	require.NoError(t, err)
	s.Shutdown()
	s.WaitForShutdown()

	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	_, err = store.Get(short, "acme")
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(err), "%v", err)
	_, _, err = store.List(short, 10, "")
	require.Equal(t, pb.ErrorCode_UNAVAILABLE, status.CodeOf(err), "%v", err)
}
