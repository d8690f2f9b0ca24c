package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

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

	if err := s.addEndpoints(); err != nil {
		s.unsubscribe()
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
	eps := []endpoint{
		{"put", sub.KVAny(bus.OpPut), bus.Endpoint(srv, "put", newMsg[*pb.PutRequest], newMsg[*pb.PutResponse], s.put)},
		{"get", sub.KVAny(bus.OpGet), bus.Endpoint(srv, "get", newMsg[*pb.GetRequest], newMsg[*pb.GetResponse], s.get)},
		{"delete", sub.KVAny(bus.OpDelete), bus.Endpoint(srv, "delete", newMsg[*pb.DeleteRequest], newMsg[*pb.DeleteResponse], s.delete)},
		{"tenants-create", sub.Admin("tenants", "create"), bus.Endpoint(srv, "tenants-create", newMsg[*pb.CreateTenantRequest], newMsg[*pb.TenantResponse], s.createTenant)},
		{"tenants-get", sub.Admin("tenants", "get"), bus.Endpoint(srv, "tenants-get", newMsg[*pb.GetTenantRequest], newMsg[*pb.TenantResponse], s.getTenant)},
		{"tenants-update", sub.Admin("tenants", "update"), bus.Endpoint(srv, "tenants-update", newMsg[*pb.UpdateTenantRequest], newMsg[*pb.TenantResponse], s.updateTenant)},
		{"tenants-list", sub.Admin("tenants", "list"), bus.Endpoint(srv, "tenants-list", newMsg[*pb.ListTenantsRequest], newMsg[*pb.ListTenantsResponse], s.listTenants)},
		{"tenants-delete", sub.Admin("tenants", "delete"), bus.Endpoint(srv, "tenants-delete", newMsg[*pb.DeleteTenantRequest], newMsg[*pb.TenantResponse], s.deleteTenant)},
		{"nodes-add", sub.Admin("nodes", "add"), bus.Endpoint(srv, "nodes-add", newMsg[*pb.AddNodesRequest], newMsg[*pb.NodeChangeResponse], s.addNodes)},
		{"nodes-remove", sub.Admin("nodes", "remove"), bus.Endpoint(srv, "nodes-remove", newMsg[*pb.RemoveNodeRequest], newMsg[*pb.NodeChangeResponse], s.removeNode)},
		{"nodes-list", sub.Admin("nodes", "list"), bus.Endpoint(srv, "nodes-list", newMsg[*pb.ListNodesRequest], newMsg[*pb.ListNodesResponse], s.listNodes)},
		{"migrations-get", sub.Admin("migrations", "get"), bus.Endpoint(srv, "migrations-get", newMsg[*pb.GetMigrationRequest], newMsg[*pb.MigrationResponse], s.getMigration)},
		{"migrations-list", sub.Admin("migrations", "list"), bus.Endpoint(srv, "migrations-list", newMsg[*pb.ListMigrationsRequest], newMsg[*pb.ListMigrationsResponse], s.listMigrations)},
	}
	eps = append(eps, s.memberEndpoints(srv)...)
	for _, e := range eps {
		if err := svc.AddEndpoint(e.name, e.subject, e.h); err != nil {
			return errors.CombineErrors(errors.Wrapf(err, "on %s", e.subject), svc.Stop(context.Background()))
		}
	}
	return nil
}

// endpoint is one micro endpoint of the coordinator service.
type endpoint struct {
	name, subject string
	h             micro.Handler
}

// newMsg allocates a fresh message of type M (M is a pointer to a
// generated struct).
func newMsg[M proto.Message]() M {
	var m M
	return m.ProtoReflect().Type().New().Interface().(M)
}

// Stop stops taking requests, waits for in-flight ones and background
// replica calls (bounded by ctx), then stops read repair. It is idempotent.
func (s *Service) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
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
