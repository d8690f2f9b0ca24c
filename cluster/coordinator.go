// Package cluster wires PairDB's parts together: a coordinator with its
// JetStream-backed stores, and the all-in-one development cluster behind
// `pairdb dev` and the end-to-end tests. It is the only place (with cmd)
// that picks concrete implementations.
package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/coordinator"
	"github.com/pairdb/pairdb/coordinator/ring"
	"github.com/pairdb/pairdb/jetstream/idempotency"
	"github.com/pairdb/pairdb/jetstream/tenantkv"
	"github.com/pairdb/pairdb/postgres/tenantpg"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/tenant"
)

// CoordinatorConfig is what a coordinator process needs beyond NATS.
type CoordinatorConfig struct {
	// Nodes is the static membership until the ring log lands.
	Nodes        []string
	VirtualNodes int
	Subjects     bus.Subjects
	// StreamReplicas is the JetStream replica count of the control-plane
	// buckets: 1 on a single server, 3 on a cluster.
	StreamReplicas int
	IdempotencyTTL time.Duration
	// PostgresURL keeps tenants in PostgreSQL (migrations are applied at
	// start); empty keeps them in the JetStream bucket.
	PostgresURL    string
	RequestTimeout time.Duration
	ReplicaTimeout time.Duration
	TenantCacheTTL time.Duration
	Logger         *zap.Logger
	Metrics        *metrics.Set
}

// StaticRing builds a ring of NORMAL nodes at epoch 1.
func StaticRing(nodes []string, vnodes int) *ring.Holder {
	members := make([]ring.Member, 0, len(nodes))
	for _, id := range nodes {
		members = append(members, ring.Member{ID: id, State: ring.Normal})
	}
	return ring.NewHolder(ring.New(1, vnodes, members))
}

// Coordinator is a running coordinator with the stores it opened.
type Coordinator struct {
	*coordinator.Service
	closeStore func()
}

// Stop stops the service, then closes its stores.
func (c *Coordinator) Stop(ctx context.Context) error {
	err := c.Service.Stop(ctx)
	c.closeStore()
	return err
}

// OpenTenantStore opens the configured metadata store: PostgreSQL when a URL
// is set (applying migrations), else the JetStream bucket. close releases it.
func OpenTenantStore(ctx context.Context, nc *nats.Conn, cfg CoordinatorConfig) (store tenant.Store, close func(), err error) {
	if cfg.PostgresURL != "" {
		pg, err := tenantpg.Open(ctx, cfg.PostgresURL, tenantpg.Config{Migrate: true, Logger: cfg.Logger.Named("postgres")})
		if err != nil {
			return nil, nil, errors.Wrap(err, "open the tenant database")
		}
		return pg, pg.Close, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, errors.Wrap(err, "open JetStream")
	}
	kv, err := tenantkv.Open(ctx, js, tenantkv.Config{Replicas: cfg.StreamReplicas, Logger: cfg.Logger.Named("tenants")})
	if err != nil {
		return nil, nil, errors.Wrap(err, "open the tenants bucket")
	}
	return kv, func() {}, nil
}

// StartCoordinator opens the coordinator's stores and starts the service.
func StartCoordinator(ctx context.Context, nc *nats.Conn, cfg CoordinatorConfig) (*Coordinator, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("a coordinator needs the storage node ids (--nodes)")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.StreamReplicas <= 0 {
		cfg.StreamReplicas = 1
	}
	tenants, closeStore, err := OpenTenantStore(ctx, nc, cfg)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		closeStore()
		return nil, errors.Wrap(err, "open JetStream")
	}
	idem, err := idempotency.Open(ctx, js, idempotency.Config{
		TTL: cfg.IdempotencyTTL, Replicas: cfg.StreamReplicas, Logger: cfg.Logger.Named("idempotency"),
	})
	if err != nil {
		closeStore()
		return nil, errors.Wrap(err, "open the idempotency bucket")
	}
	svc, err := coordinator.Start(nc, coordinator.Config{
		Subjects:       cfg.Subjects,
		Ring:           StaticRing(cfg.Nodes, cfg.VirtualNodes),
		Tenants:        tenants,
		Idempotency:    idempotencyAdapter{idem},
		RequestTimeout: cfg.RequestTimeout,
		ReplicaTimeout: cfg.ReplicaTimeout,
		TenantCacheTTL: cfg.TenantCacheTTL,
		Logger:         cfg.Logger,
		Metrics:        cfg.Metrics,
	})
	if err != nil {
		closeStore()
		return nil, err
	}
	return &Coordinator{Service: svc, closeStore: closeStore}, nil
}

// EnsureTenant creates tenant id with replication factor rf unless it
// already exists.
func EnsureTenant(ctx context.Context, store tenant.Store, id string, rf uint32) error {
	t, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: id, ReplicationFactor: rf}, time.Now())
	if err != nil {
		return err
	}
	if err := store.Create(ctx, t); err != nil && !bus.Is(err, pb.ErrorCode_TENANT_EXISTS) {
		return errors.Wrapf(err, "create tenant %q", id)
	}
	return nil
}

// NodeIDs names n storage nodes node-1 … node-n.
func NodeIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%d", i+1)
	}
	return ids
}

// idempotencyAdapter narrows the JetStream store to the coordinator's
// interface.
type idempotencyAdapter struct{ s *idempotency.Store }

func (a idempotencyAdapter) Begin(ctx context.Context, tenant, key string, hash []byte) (coordinator.IdempotencyClaim, error) {
	c, err := a.s.Begin(ctx, tenant, key, hash)
	if err != nil {
		return nil, err
	}
	return c, nil
}
