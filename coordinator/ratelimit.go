package coordinator

import (
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Per-tenant rate limits (Tenant.reads_per_second, writes_per_second).
//
// Every coordinator enforces its share of a tenant's rate: the rate divided
// by the live coordinators it sees (presence beats on events.coordinators,
// see presence.go), with a burst of one second of that share. So the
// tenant as a whole gets its rate, within the error of coordinators that
// see different counts for a presence interval or two, and of a load the
// clients spread unevenly (the coordinators' queue group spreads it
// evenly). A request over the limit is refused at once with
// RATE_LIMIT_EXCEEDED and the time until it would be admitted; nothing of
// it is done. Limits hold for NATS and HTTP clients alike, since both reach
// the same coordinators.

// requestKind is what a request spends: a read or a write.
type requestKind int

const (
	kindRead requestKind = iota
	kindWrite
)

func (k requestKind) String() string { return [...]string{"reads", "writes"}[k] }

// tenantLimiter holds each limited tenant's buckets on this coordinator.
type tenantLimiter struct {
	mu      sync.Mutex
	buckets map[string]*tenantBuckets
	// share is the live coordinators this one sees (at least 1).
	share func() int
}

// tenantBuckets are one tenant's two buckets, remade when its rates or the
// share change.
type tenantBuckets struct {
	rates [2]uint32
	share int
	lim   [2]*rate.Limiter
}

func newTenantLimiter(share func() int) *tenantLimiter {
	return &tenantLimiter{buckets: map[string]*tenantBuckets{}, share: share}
}

// admit spends one request of kind for tenant t, or refuses it with
// RATE_LIMIT_EXCEEDED and how long until it would be admitted.
func (l *tenantLimiter) admit(t *pb.Tenant, kind requestKind, now time.Time) error {
	rates := [2]uint32{limitOf(t, kindRead), limitOf(t, kindWrite)}
	if rates[kind] == 0 {
		return nil
	}
	lim := l.bucket(t.GetTenantId(), rates, kind)
	r := lim.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	if wait == 0 {
		return nil
	}
	r.CancelAt(now)
	return &status.Error{Code: pb.ErrorCode_RATE_LIMIT_EXCEEDED, RetryAfter: wait, Message: fmt.Sprintf(
		"tenant %q is over its %d %s per second; retry after %s", t.GetTenantId(), rates[kind], kind, wait.Round(time.Millisecond))}
}

// bucket returns tenant's limiter of kind at the current rates and share.
func (l *tenantLimiter) bucket(tenant string, rates [2]uint32, kind requestKind) *rate.Limiter {
	share := max(1, l.share())
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[tenant]
	if b == nil || b.rates != rates || b.share != share {
		b = &tenantBuckets{rates: rates, share: share}
		for k, r := range rates {
			per := float64(r) / float64(share)
			b.lim[k] = rate.NewLimiter(rate.Limit(per), int(math.Max(1, math.Ceil(per))))
		}
		l.buckets[tenant] = b
	}
	return b.lim[kind]
}

// admit spends one request of kind for t on this coordinator's share of the
// tenant's rate, and counts it. Only tenants with a limit of that kind get
// series of their own: the metrics keep tenant ids out of their labels
// otherwise (see serviceMetrics), and a limit is something an operator
// set, so these stay as few as the limits.
func (s *Service) admit(t *pb.Tenant, kind requestKind) error {
	if limitOf(t, kind) == 0 {
		return nil
	}
	l := labels{t.GetTenantId(), kind.String()}
	s.m.tenantRequests.with(l).Inc()
	err := s.limits.admit(t, kind, time.Now())
	if err != nil {
		s.m.tenantThrottled.with(l).Inc()
	}
	return err
}

// limitOf is t's rate limit of kind (0: none).
func limitOf(t *pb.Tenant, kind requestKind) uint32 {
	if kind == kindRead {
		return t.GetReadsPerSecond()
	}
	return t.GetWritesPerSecond()
}
