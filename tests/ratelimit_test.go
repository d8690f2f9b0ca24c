package tests

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// hammer runs clients goroutines doing op until d has passed and counts
// what was admitted, what was throttled and anything else.
func hammer(t *testing.T, clients int, d time.Duration, op func(ctx context.Context, i int) error) (ok, throttled, other int64) {
	t.Helper()
	var okN, thrN, otherN atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := op(ctx, c*1_000_000+i)
				cancel()
				switch {
				case err == nil:
					okN.Add(1)
				case status.Is(err, pb.ErrorCode_RATE_LIMIT_EXCEEDED):
					assert.Positive(t, status.RetryAfterOf(err), "a throttled request says when to retry")
					thrN.Add(1)
				default:
					otherN.Add(1)
					t.Logf("unexpected error: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	return okN.Load(), thrN.Load(), otherN.Load()
}

// A tenant's rate holds for the tenant as a whole with two coordinators
// sharing it, under a load far over it, while another tenant keeps working
// unthrottled beside it.
func TestRateLimitsHoldAcrossCoordinatorsAndSpareNeighbours(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.dev.StartCoordinator(ctx)
	require.NoError(t, err)
	for _, c := range h.dev.Coordinators() {
		require.Eventually(t, func() bool { return c.LiveCoordinators() == 2 }, 10*time.Second, 10*time.Millisecond,
			"each coordinator counts both")
	}
	const writes, reads = 40, 60
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "noisy", WritesPerSecond: writes, ReadsPerSecond: reads})
	require.NoError(t, err)
	noisy := client.New(h.nc, client.WithTenant("noisy"), client.WithRetries(0))
	neighbour := client.New(h.nc, client.WithTenant("default"), client.WithRetries(0))

	var quiet atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the neighbour writes throughout, unlimited
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := neighbour.Put(ctxT(t), fmt.Sprintf("n-%d", i), []byte("v"))
			if !assert.NoError(t, err, "the neighbour has no limit") {
				return
			}
			quiet.Add(1)
		}
	}()

	const d = 3 * time.Second
	ok, throttled, other := hammer(t, 6, d, func(ctx context.Context, i int) error {
		_, err := noisy.Put(ctx, fmt.Sprintf("k-%d", i), []byte("v"))
		return err
	})
	require.Zero(t, other)
	require.Positive(t, throttled, "the load is far over the limit")
	// The rate over the window, plus each coordinator's burst (one second
	// of its share), within a presence interval's error.
	max := int64(writes*d.Seconds()) + writes + writes/2
	min := int64(0.75 * writes * d.Seconds())
	require.True(t, ok >= min && ok <= max, "admitted %d writes in %s at %d/s: want %d to %d", ok, d, writes, min, max)

	ok, throttled, other = hammer(t, 6, d, func(ctx context.Context, i int) error {
		_, err := noisy.Get(ctx, "k-1")
		return err
	})
	require.Zero(t, other)
	require.Positive(t, throttled)
	max = int64(reads*d.Seconds()) + reads + reads/2
	min = int64(0.75 * reads * d.Seconds())
	require.True(t, ok >= min && ok <= max, "admitted %d reads in %s at %d/s: want %d to %d", ok, d, reads, min, max)

	close(stop)
	<-done
	require.Positive(t, quiet.Load(), "the neighbour kept writing")
}

// A throttled write writes nothing, says when to retry (in the body and a
// header), and a raised limit takes effect at once.
func TestThrottledWriteWritesNothing(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "slow", WritesPerSecond: 1})
	require.NoError(t, err)
	slow := client.New(h.nc, client.WithTenant("slow"), client.WithRetries(0))
	_, err = slow.Put(ctx, "first", []byte("1"))
	require.NoError(t, err, "the burst admits one")

	msg := nats.NewMsg(bus.Subjects{}.KV("slow", bus.OpPut))
	msg.Header.Set("Content-Type", "application/json")
	msg.Data = []byte(`{"key":"second","value":"Mg=="}`)
	reply, err := h.nc.RequestMsg(msg, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "RATE_LIMIT_EXCEEDED", reply.Header.Get("Nats-Service-Error-Code"))
	require.NotEmpty(t, reply.Header.Get(bus.HeaderRetryAfterMs))
	require.Contains(t, string(reply.Data), `"retry_after_ms"`)

	got, err := slow.Get(ctx, "second")
	require.NoError(t, err)
	require.False(t, got.GetFound(), "nothing of a throttled write is stored")

	_, err = h.c.UpdateTenant(ctx, &pb.UpdateTenantRequest{TenantId: "slow", WritesPerSecond: new(uint32)})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := slow.Put(ctx, "third", []byte("3"))
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "0 lifts the limit")
	for i := range 20 {
		_, err := slow.Put(ctx, fmt.Sprintf("more-%d", i), []byte("v"))
		require.NoError(t, err)
	}
}
