package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Service is a running coordinator.
type Service struct {
	cfg      Config
	nc       *nats.Conn
	log      *zap.Logger
	m        *serviceMetrics
	svc      *bus.Service
	limiter  *bus.Limiter
	tenants  *tenantCache
	liveness *liveness
	repairs  *repairer
	// acks receives the answers of the replicas a minting replica passes a
	// write on to (see applyFirst).
	acks *bus.Mux
	// presence counts the live coordinators, and limits holds this one's
	// share of each tenant's rate limits.
	presence *presence
	limits   *tenantLimiter
	// batchItems is the pool of batch items in flight, shared by every
	// batch (see runBatch and batchItemsInFlight).
	batchItems chan struct{}
	// background owns goroutines that outlive a request (replica calls that
	// finish after the quorum answered).
	background sync.WaitGroup
	stopOnce   sync.Once
	stopErr    error
	subs       []*nats.Subscription
}

// Start registers the coordinator's endpoints and starts its background
// work. Stop releases everything.
func Start(nc *nats.Conn, cfg Config) (*Service, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:     cfg,
		nc:      nc,
		log:     cfg.Logger,
		m:       newServiceMetrics(cfg.Metrics),
		limiter: bus.NewLimiter(cfg.MaxConcurrent),

		batchItems: make(chan struct{}, min(batchItemsInFlight, cfg.MaxConcurrent)),
	}
	s.tenants = newTenantCache(cfg.Tenants, cfg.TenantCacheTTL, s.m)
	s.liveness = newLiveness(cfg.HeartbeatTimeout, cfg.DownAfter, cfg.MaxClockSkew)
	s.repairs = newRepairer(s, cfg.RepairWorkers, cfg.RepairQueue)

	sub, err := nc.Subscribe(cfg.Subjects.Events(tenantEvents), func(m *nats.Msg) {
		s.tenants.invalidate(string(m.Data))
	})
	if err != nil {
		s.repairs.stop()
		return nil, errors.Wrap(err, "subscribe to tenant invalidations")
	}
	s.subs = append(s.subs, sub)
	sub, err = nc.Subscribe(cfg.Subjects.Heartbeat("*"), s.onHeartbeat)
	if err != nil {
		s.unsubscribe()
		s.repairs.stop()
		return nil, errors.Wrap(err, "subscribe to heartbeats")
	}
	s.subs = append(s.subs, sub)
	if s.acks, err = bus.NewMux(nc); err != nil {
		s.unsubscribe()
		s.repairs.stop()
		return nil, err
	}
	if s.presence, err = startPresence(nc, cfg.Subjects); err != nil {
		s.unsubscribe()
		_ = s.acks.Close()
		s.repairs.stop()
		return nil, err
	}
	s.limits = newTenantLimiter(s.presence.count)

	if err := s.addEndpoints(); err != nil {
		s.unsubscribe()
		s.presence.close()
		_ = s.acks.Close()
		s.repairs.stop()
		return nil, err
	}
	// A round trip makes the server register every subscription before
	// Start returns, so the caller can send requests at once.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return nil, errors.CombineErrors(errors.Wrap(err, "flush coordinator subscriptions"), s.Stop(ctx))
	}
	return s, nil
}

func (s *Service) addEndpoints() error {
	svc, err := bus.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     Version,
		Description: "PairDB coordinator: key-value and tenant admin API",
		QueueGroup:  QueueGroup,
	})
	if err != nil {
		return err
	}
	s.svc = svc
	sub := s.cfg.Subjects
	srv := &bus.Server{Conn: s.nc, Limiter: s.limiter, Timeout: s.cfg.RequestTimeout, Log: s.log, Middleware: s.cfg.Middleware}
	admin := func(group string) *bus.Group {
		return &bus.Group{Server: srv, Service: svc, Prefix: group, Subject: func(op string) string { return sub.Admin(group, op) }}
	}
	kv := &bus.Group{Server: srv, Service: svc, Subject: sub.KVAny}
	bus.Handle(kv, bus.OpPut, s.put)
	bus.Handle(kv, bus.OpGet, s.get)
	bus.Handle(kv, bus.OpDelete, s.delete)
	bus.Handle(kv, bus.OpGetMany, s.getMany)
	bus.Handle(kv, bus.OpPutMany, s.putMany)
	bus.Handle(kv, bus.OpDeleteMany, s.deleteMany)
	bus.Handle(kv, bus.OpList, s.list)
	tenants := admin("tenants")
	bus.Handle(tenants, "create", s.createTenant)
	bus.Handle(tenants, "get", s.getTenant)
	bus.Handle(tenants, "update", s.updateTenant)
	bus.Handle(tenants, "list", s.listTenants)
	bus.Handle(tenants, "delete", s.deleteTenant)
	nodes := admin("nodes")
	bus.Handle(nodes, "add", s.addNodes)
	bus.Handle(nodes, "remove", s.removeNode)
	bus.Handle(nodes, "list", s.listNodes)
	migrations := admin("migrations")
	bus.Handle(migrations, "get", s.getMigration)
	bus.Handle(migrations, "list", s.listMigrations)
	members := s.memberEndpoints(srv, svc)
	for _, g := range []*bus.Group{kv, tenants, nodes, migrations, members} {
		if err := g.Err(); err != nil {
			return errors.CombineErrors(err, svc.Stop(context.Background()))
		}
	}
	return nil
}

// Stop stops taking requests, waits for in-flight ones and background
// replica calls (bounded by ctx), then stops read repair. It is idempotent.
func (s *Service) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		// First, so the other coordinators take over this one's share of
		// the tenants' rates at once.
		s.presence.close()
		var errs error
		if s.svc != nil {
			errs = errors.CombineErrors(errs, s.svc.Stop(ctx))
		}
		s.unsubscribe()
		errs = errors.CombineErrors(errs, s.limiter.Drain(ctx))
		done := make(chan struct{})
		go func() { s.background.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			errs = errors.CombineErrors(errs, errors.Wrap(ctx.Err(), "waiting for replica calls"))
		}
		s.repairs.stop()
		// After the background work and read repair: they wait for
		// replies here.
		errs = errors.CombineErrors(errs, s.acks.Close())
		s.stopErr = errs
	})
	return s.stopErr
}

func (s *Service) unsubscribe() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.subs = nil
}

// Served is how many requests this coordinator's endpoints have received
// (from the micro service statistics).
func (s *Service) Served() int {
	n := 0
	for _, e := range s.svc.Stats().Endpoints {
		n += e.NumRequests
	}
	return n
}

// Pinger is implemented by metadata stores that can report whether they are
// reachable (readiness).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Ready reports why this coordinator cannot serve everything, or nil: the
// NATS connection, the ring, and the metadata store (admin calls need it;
// key-value traffic for cached tenants does not).
func (s *Service) Ready(ctx context.Context) error {
	if !s.nc.IsConnected() {
		return status.Errorf(pb.ErrorCode_UNAVAILABLE, "not connected to NATS (status %s)", s.nc.Status())
	}
	if s.cfg.Membership.State().Current().Size() == 0 {
		return status.Errorf(pb.ErrorCode_UNAVAILABLE, "the ring has no storage nodes")
	}
	if p, ok := s.cfg.Tenants.(Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "tenant metadata store")
		}
	}
	return nil
}
