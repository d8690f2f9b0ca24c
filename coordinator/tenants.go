package coordinator

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
)

// tenantEvents is the events subject kind on which a coordinator that
// changed a tenant publishes its id; every coordinator drops its cached copy.
const tenantEvents = "tenants"

const (
	// staleRefreshTimeout bounds a refresh when an expired copy could be
	// served instead.
	staleRefreshTimeout = time.Second
	// staleRetryAfter is how long an expired copy is served again after the
	// metadata store failed to answer.
	staleRetryAfter = 5 * time.Second
)

// tenantCache keeps tenant records for the data path. Entries are dropped
// on an invalidation message and expire after ttl as a backstop for a lost
// one. Records are never mutated in place: an update replaces the pointer.
type tenantCache struct {
	store tenant.Store
	ttl   time.Duration
	m     *serviceMetrics
	mu    sync.Mutex
	items map[string]cachedTenant
	// gen counts invalidations, so a fill that read the store before an
	// invalidation arrived does not put the record it read back (it may be
	// the one the invalidation was about).
	gen uint64
}

type cachedTenant struct {
	t       *pb.Tenant
	expires time.Time
}

func newTenantCache(store tenant.Store, ttl time.Duration, m *serviceMetrics) *tenantCache {
	return &tenantCache{store: store, ttl: ttl, m: m, items: map[string]cachedTenant{}}
}

func (c *tenantCache) get(ctx context.Context, id string) (*pb.Tenant, error) {
	if err := keyspace.ValidateTenantID(id); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad tenant in subject")
	}
	now := time.Now()
	c.mu.Lock()
	it, ok := c.items[id]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Before(it.expires) {
		c.m.tenantHits.Inc()
		return it.t, nil
	}
	c.m.tenantMisses.Inc()
	lookup := ctx
	if ok {
		// With a copy in hand, do not let a slow metadata store eat the
		// request's whole deadline.
		var cancel context.CancelFunc
		lookup, cancel = context.WithTimeout(ctx, staleRefreshTimeout)
		defer cancel()
	}
	t, err := c.store.Get(lookup, id)
	if err != nil {
		if ok && status.CodeOf(err) != pb.ErrorCode_TENANT_NOT_FOUND {
			// The metadata store is unreachable: keep serving the copy we
			// have (key-value traffic must not depend on it) and ask again
			// only after a pause, so an outage is not hammered per request.
			c.mu.Lock()
			if cur, still := c.items[id]; still && cur.t == it.t && c.gen == gen {
				c.items[id] = cachedTenant{t: it.t, expires: now.Add(min(c.ttl, staleRetryAfter))}
			}
			c.mu.Unlock()
			c.m.tenantStale.Inc()
			return it.t, nil
		}
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.items[id] = cachedTenant{t: t, expires: now.Add(c.ttl)}
	}
	c.mu.Unlock()
	return t, nil
}

// invalidate drops id, and keeps any fill already under way (of any
// tenant: one counter is enough, invalidations are rare) from caching what
// it read.
func (c *tenantCache) invalidate(id string) {
	c.mu.Lock()
	delete(c.items, id)
	c.gen++
	c.mu.Unlock()
}

// announce tells every coordinator (this one included) to drop id.
func (s *Service) announce(id string) {
	s.tenants.invalidate(id)
	if err := s.nc.Publish(s.cfg.Subjects.Events(tenantEvents), []byte(id)); err != nil {
		s.log.Warn("tenant invalidation not published; other coordinators see the change within the cache TTL",
			zap.String("tenant", id), zap.Error(err))
	}
}

// checkRF refuses a replication factor out of bounds or more than the ring
// can place, in the same words for create and update.
func (s *Service) checkRF(rf uint32) error {
	if err := tenant.CheckReplicationFactor(rf); err != nil {
		return err
	}
	if n := len(s.cfg.Membership.State().Normal()); int(rf) > n {
		return status.Errorf(pb.ErrorCode_INVALID_REPLICATION_FACTOR,
			"replication factor %d is more than the %d NORMAL storage nodes in the ring", rf, n)
	}
	return nil
}

func (s *Service) createTenant(ctx context.Context, _ string, req *pb.CreateTenantRequest) (*pb.TenantResponse, error) {
	if rf := req.GetReplicationFactor(); rf != 0 { // 0: the default, checked below
		if err := s.checkRF(rf); err != nil {
			return nil, err
		}
	}
	t, err := tenant.FromCreate(req, time.Now())
	if err != nil {
		return nil, err
	}
	if err := s.checkRF(t.GetReplicationFactor()); err != nil {
		return nil, err
	}
	// The ring log first: storage nodes must take the tenant's data as soon
	// as a coordinator serves it. A record that then fails to be created
	// leaves a tenant the log knows and no coordinator serves.
	if err := s.RecordTenant(ctx, t, false); err != nil {
		return nil, err
	}
	if err := s.cfg.Tenants.Create(ctx, t); err != nil {
		return nil, err
	}
	s.announce(t.GetTenantId())
	return &pb.TenantResponse{Tenant: t}, nil
}

func (s *Service) getTenant(ctx context.Context, _ string, req *pb.GetTenantRequest) (*pb.TenantResponse, error) {
	if err := keyspace.ValidateTenantID(req.GetTenantId()); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad tenant_id")
	}
	t, err := s.cfg.Tenants.Get(ctx, req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return &pb.TenantResponse{Tenant: t}, nil
}

// updateTenant changes a tenant's settings. A new replication factor is a
// data migration: it starts a change in the ring log (the tenant's data is
// copied to its new replicas before they serve reads), and the response
// carries its migration_id.
func (s *Service) updateTenant(ctx context.Context, _ string, req *pb.UpdateTenantRequest) (*pb.TenantResponse, error) {
	if err := keyspace.ValidateTenantID(req.GetTenantId()); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad tenant_id")
	}
	if req.ReplicationFactor != nil {
		if err := s.checkRF(req.GetReplicationFactor()); err != nil {
			return nil, err
		}
	}
	// Read-modify-write with optimistic concurrency; without an expected
	// version from the caller, retry a few times on a concurrent update.
	for attempt := 0; ; attempt++ {
		cur, err := s.cfg.Tenants.Get(ctx, req.GetTenantId())
		if err != nil {
			return nil, err
		}
		if v := req.GetExpectedVersion(); v != 0 && v != cur.GetVersion() {
			return nil, status.Errorf(pb.ErrorCode_VERSION_CONFLICT,
				"tenant %q is at version %d, not %d; read it again and retry", cur.GetTenantId(), cur.GetVersion(), v)
		}
		next, err := tenant.ApplyUpdate(cur, req, time.Now())
		if err != nil {
			return nil, err
		}
		if _, err := s.knownToRing(ctx, cur); err != nil {
			return nil, err
		}
		oldRF, _ := s.cfg.Membership.State().TenantRF(cur.GetTenantId())
		migration := ""
		if req.ReplicationFactor != nil && req.GetReplicationFactor() != oldRF {
			// The change goes first: once it is in the log, writes reach the
			// new replicas; the stored factor follows.
			if migration, err = s.changeRF(ctx, cur, req.GetReplicationFactor()); err != nil {
				return nil, err
			}
		}
		err = s.cfg.Tenants.Update(ctx, next)
		if err == nil {
			s.announce(next.GetTenantId())
			if err := s.RecordTenant(ctx, next, false); err != nil {
				return nil, status.Wrap(status.CodeOf(err), err,
					"tenant %q is updated, but the ring log does not carry its new conflict policy yet; update it again", next.GetTenantId())
			}
			return &pb.TenantResponse{Tenant: next, OldReplicationFactor: oldRF, MigrationId: migration}, nil
		}
		if migration != "" {
			// The migration runs and its outcome overrides the stored factor;
			// report the other fields' failure.
			return nil, status.Wrap(status.CodeOf(err), err, "migration %s started, but the tenant record was not updated", migration)
		}
		if !status.Is(err, pb.ErrorCode_VERSION_CONFLICT) || req.GetExpectedVersion() != 0 || attempt >= 4 {
			return nil, err
		}
	}
}

func (s *Service) listTenants(ctx context.Context, _ string, req *pb.ListTenantsRequest) (*pb.ListTenantsResponse, error) {
	ts, next, err := s.cfg.Tenants.List(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &pb.ListTenantsResponse{Tenants: ts, NextPageToken: next}, nil
}

// RecordTenant makes the ring log say that tenant t exists, with its
// conflict policy, or is deleted, and waits until this coordinator has
// folded it. Storage nodes take data only for tenants the log knows, and
// merge it under the policy the log says. Recording what the log already
// says does nothing.
func (s *Service) RecordTenant(ctx context.Context, t *pb.Tenant, deleted bool) error {
	id, policy := t.GetTenantId(), policyOf(t)
	for attempt := 0; ; attempt++ {
		st := s.cfg.Membership.State()
		if cur, ok := st.Tenants[id]; ok && cur.Deleted == deleted && (deleted || cur.Policy == policy) {
			return nil
		}
		seq, err := s.cfg.Membership.Append(ctx, st.Seq, &pb.RingEvent{UnixMs: time.Now().UnixMilli(),
			Event: &pb.RingEvent_Tenant{Tenant: &pb.TenantChanged{TenantId: id, ReplicationFactor: t.GetReplicationFactor(),
				ConflictPolicy: policy, Deleted: deleted}}})
		if err == nil {
			return s.cfg.Membership.WaitFor(ctx, seq)
		}
		if !status.Is(err, pb.ErrorCode_VERSION_CONFLICT) || attempt >= maxRecordAttempts {
			return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "record tenant %q in the ring log", id)
		}
		if err := s.cfg.Membership.WaitFor(ctx, st.Seq+1); err != nil {
			return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "record tenant %q in the ring log", id)
		}
	}
}

// maxRecordAttempts bounds the appends one RecordTenant loses to others.
const maxRecordAttempts = 10

// knownToRing returns tenant t's incarnation in the ring log, recording the
// tenant first if the log has never heard of it (a tenant created before
// tenants were recorded, or whose recording failed). A tenant the log says
// is deleted is TENANT_NOT_FOUND: the record in hand is stale (a cache), or
// belongs to a create still under way, and only a create brings a tenant
// back.
func (s *Service) knownToRing(ctx context.Context, t *pb.Tenant) (uint64, error) {
	id := t.GetTenantId()
	if rec, ok := s.cfg.Membership.State().Tenants[id]; ok {
		if rec.Deleted {
			s.tenants.invalidate(id)
			return 0, status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "tenant %q was deleted", id)
		}
		return rec.Seq, nil
	}
	if err := s.RecordTenant(ctx, t, false); err != nil {
		return 0, err
	}
	return s.cfg.Membership.State().Tenants[id].Seq, nil
}
