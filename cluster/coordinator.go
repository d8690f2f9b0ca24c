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
	RequestTimeout time.Duration
	ReplicaTimeout time.Duration
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

// StartCoordinator opens the coordinator's stores on JetStream and starts
// the service.
func StartCoordinator(ctx context.Context, nc *nats.Conn, cfg CoordinatorConfig) (*coordinator.Service, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("a coordinator needs the storage node ids (--nodes)")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.StreamReplicas <= 0 {
		cfg.StreamReplicas = 1
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, errors.Wrap(err, "open JetStream")
	}
	tenants, err := tenantkv.Open(ctx, js, tenantkv.Config{Replicas: cfg.StreamReplicas})
	if err != nil {
		return nil, errors.Wrap(err, "open the tenants bucket")
	}
	idem, err := idempotency.Open(ctx, js, idempotency.Config{
		TTL: cfg.IdempotencyTTL, Replicas: cfg.StreamReplicas, Logger: cfg.Logger.Named("idempotency"),
	})
	if err != nil {
		return nil, errors.Wrap(err, "open the idempotency bucket")
	}
	return coordinator.Start(nc, coordinator.Config{
		Subjects:       cfg.Subjects,
		Ring:           StaticRing(cfg.Nodes, cfg.VirtualNodes),
		Tenants:        tenants,
		Idempotency:    idempotencyAdapter{idem},
		RequestTimeout: cfg.RequestTimeout,
		ReplicaTimeout: cfg.ReplicaTimeout,
		Logger:         cfg.Logger,
		Metrics:        cfg.Metrics,
	})
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
