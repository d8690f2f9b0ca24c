package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Each coordinator takes its share of a tenant's rate, with a burst of one
// second of it; a changed rate or share takes effect at the next request.
func TestTenantLimiterShares(t *testing.T) {
	share := 2
	l := newTenantLimiter(func() int { return share })
	ten := &pb.Tenant{TenantId: "t", WritesPerSecond: 10}
	now := time.Unix(1000, 0)
	admitted := 0
	for range 20 {
		if l.admit(ten, kindWrite, now) == nil {
			admitted++
		}
	}
	require.Equal(t, 5, admitted, "a burst of one second of half of 10/s")
	err := l.admit(ten, kindWrite, now)
	require.True(t, status.Is(err, pb.ErrorCode_RATE_LIMIT_EXCEEDED))
	require.Equal(t, 200*time.Millisecond, status.RetryAfterOf(err), "the next token of 5/s")
	require.NoError(t, l.admit(ten, kindWrite, now.Add(200*time.Millisecond)))
	require.NoError(t, l.admit(ten, kindRead, now), "reads are unlimited")

	share = 1
	admitted = 0
	for range 20 {
		if l.admit(ten, kindWrite, now) == nil {
			admitted++
		}
	}
	require.Equal(t, 10, admitted, "alone, the whole rate")
	ten.WritesPerSecond = 0
	for range 100 {
		require.NoError(t, l.admit(ten, kindWrite, now), "0 is no limit")
	}
}
