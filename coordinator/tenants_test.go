package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/jetstream/tenantkv"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/tenant"
)

// slowStore is a real tenant store whose reads, once read, wait for the
// test: a fill of the cache that an invalidation overtakes.
type slowStore struct {
	tenant.Store
	read, release chan struct{}
}

func (s *slowStore) Get(ctx context.Context, id string) (*pb.Tenant, error) {
	t, err := s.Store.Get(ctx, id)
	if s.read != nil {
		s.read <- struct{}{}
		<-s.release
	}
	return t, err
}

// A cache fill that read the store before an invalidation arrived must not
// put what it read back: that record may be the one the invalidation was
// about, and it would be served for a whole TTL.
func TestTenantCacheFillDoesNotOutliveAnInvalidation(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := tenantkv.Open(ctx, js, tenantkv.Config{})
	require.NoError(t, err)
	old, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: "t", MaxSiblings: 5}, time.Now())
	require.NoError(t, err)
	require.NoError(t, kv.Create(ctx, old))

	store := &slowStore{Store: kv, read: make(chan struct{}), release: make(chan struct{})}
	c := newTenantCache(store, time.Hour, newServiceMetrics(metrics.NewSet()))
	filled := make(chan *pb.Tenant, 1)
	go func() {
		got, err := c.get(ctx, "t")
		require.NoError(t, err)
		filled <- got
	}()
	<-store.read // the fill has read max_siblings 5

	next, err := tenant.ApplyUpdate(old, &pb.UpdateTenantRequest{TenantId: "t", MaxSiblings: ptrU32(9)}, time.Now())
	require.NoError(t, err)
	require.NoError(t, kv.Update(ctx, next))
	c.invalidate("t") // the update's announcement overtakes the fill
	store.read = nil
	close(store.release)
	require.EqualValues(t, 5, (<-filled).GetMaxSiblings(), "the fill answers what it read")

	got, err := c.get(ctx, "t")
	require.NoError(t, err)
	require.EqualValues(t, 9, got.GetMaxSiblings(), "but did not cache it past the invalidation")
}

func ptrU32(v uint32) *uint32 { return &v }
