package coordinator

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// The shared pool bounds the items of every batch at once, and items the
// deadline reaches before they start are not started.
func TestRunBatchHoldsThePoolAndTheDeadline(t *testing.T) {
	pool := make(chan struct{}, 2)
	var running, most atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	release := make(chan struct{})
	go func() { <-ctx.Done(); close(release) }()
	out, errs := runBatch(ctx, pool, 10, func(ctx context.Context, i int) (*pb.GetResponse, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if i < 4 {
			return &pb.GetResponse{Key: "done"}, nil
		}
		<-release // items 4 and 5 hold the pool until the deadline passed
		return nil, status.Errorf(pb.ErrorCode_UNAVAILABLE, "item %d", i)
	}, func(int) *pb.GetResponse { return &pb.GetResponse{Key: "blank"} })
	require.Len(t, errs, 10)
	require.LessOrEqual(t, most.Load(), int32(2), "never more items at once than the pool holds")
	for i := range 4 {
		require.NoError(t, errs[i])
		require.Equal(t, "done", out[i].GetKey())
	}
	for i := 6; i < 10; i++ {
		require.True(t, status.Is(errs[i], pb.ErrorCode_DEADLINE_EXCEEDED), "item %d: %v", i, errs[i])
		require.Equal(t, "blank", out[i].GetKey())
	}
}
