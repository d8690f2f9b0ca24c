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
	"github.com/pairdb/pairdb/causal"
	"github.com/pairdb/pairdb/coordinator"
	"github.com/pairdb/pairdb/jetstream/hints"
	"github.com/pairdb/pairdb/jetstream/idempotency"
	"github.com/pairdb/pairdb/jetstream/secrets"
	"github.com/pairdb/pairdb/jetstream/tenantkv"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/postgres/tenantpg"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode"
	"github.com/pairdb/pairdb/storagenode/heal"
	"github.com/pairdb/pairdb/tenant"
)

// CoordinatorConfig is what a coordinator process needs beyond NATS.
type CoordinatorConfig struct {
	// Cluster are the settings this coordinator records in the ring log
	// when it bootstraps the ring (zero fields: the defaults). Once the
	// ring is bootstrapped they must agree with the log's, or the
	// coordinator does not start: every part reads them from the log.
	Cluster  membership.Settings
	Subjects bus.Subjects
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
	// HeartbeatTimeout and DownAfter tune failure detection (0: the
	// coordinator's defaults, 3s and 3 × HeartbeatTimeout).
	HeartbeatTimeout time.Duration
	DownAfter        time.Duration
	// Hints limits the hints stream (max age, per-node cap, byte cap);
	// Subjects, Replicas and Logger default to the coordinator's. Every
	// coordinator must use the same limits.
	Hints hints.Config
	// NoHints turns hinted handoff off: missed writes wait for read repair
	// and anti-entropy.
	NoHints bool
	// ReadRepairChance is the share of reads that ask all N replicas (0:
	// coordinator.DefaultReadRepairChance); the others ask R.
	ReadRepairChance float64
	// MaxClockSkew bounds how far storage nodes' clocks may be from the
	// coordinator's (0: coordinator.DefaultMaxClockSkew).
	MaxClockSkew time.Duration
	// Middleware wraps every endpoint's handler (tests: internal/faults).
	Middleware bus.Middleware
	Logger     *zap.Logger
	Metrics    *metrics.Set
}

// Coordinator is a running coordinator with the stores it opened.
type Coordinator struct {
	*coordinator.Service
	Ring       *Ring
	closeStore func()
}

// Stop stops the service, then closes its stores.
func (c *Coordinator) Stop(ctx context.Context) error {
	err := c.Service.Stop(ctx)
	c.Ring.Close()
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
func StartCoordinator(ctx context.Context, nc *nats.Conn, cfg CoordinatorConfig) (_ *Coordinator, err error) {
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
	var ring *Ring
	defer func() {
		if err != nil {
			if ring != nil {
				ring.Close()
			}
			closeStore()
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, errors.Wrap(err, "open JetStream")
	}
	idem, err := openIdempotency(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	if ring, err = OpenRing(ctx, nc, RingConfig{
		Subjects: cfg.Subjects, StreamReplicas: cfg.StreamReplicas, Logger: cfg.Logger.Named("ring"),
	}); err != nil {
		return nil, err
	}
	settings := cfg.Cluster.WithDefaults()
	if err := settings.Validate(); err != nil {
		return nil, errors.Wrap(err, "coordinator settings")
	}
	if err := ring.State().CheckSettings("coordinator", settings); err != nil {
		return nil, err
	}
	// The hints stream keeps hints as long as the cluster says.
	cfg.Hints.MaxAge = settings.HintMaxAge
	sealer, hq, err := openSealerAndHints(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	svc, err := coordinator.Start(nc, coordinator.Config{
		Cluster:          settings,
		Subjects:         cfg.Subjects,
		Membership:       ring,
		Tenants:          tenants,
		Idempotency:      idempotencyAdapter{idem},
		RequestTimeout:   cfg.RequestTimeout,
		ReplicaTimeout:   cfg.ReplicaTimeout,
		TenantCacheTTL:   cfg.TenantCacheTTL,
		HeartbeatTimeout: cfg.HeartbeatTimeout,
		DownAfter:        cfg.DownAfter,
		Hints:            hq,
		ReadRepairChance: cfg.ReadRepairChance,
		Contexts:         sealer,
		MaxClockSkew:     cfg.MaxClockSkew,
		Middleware:       cfg.Middleware,
		Logger:           cfg.Logger,
		Metrics:          cfg.Metrics,
	})
	if err != nil {
		return nil, err
	}
	return &Coordinator{Service: svc, Ring: ring, closeStore: closeStore}, nil
}

// openIdempotency opens the idempotency bucket. A claim is presumed
// abandoned once no request could still be running under it: a few
// request deadlines.
func openIdempotency(ctx context.Context, js jetstream.JetStream, cfg CoordinatorConfig) (*idempotency.Store, error) {
	reqTimeout := cfg.RequestTimeout
	if reqTimeout <= 0 {
		reqTimeout = coordinator.DefaultRequestTimeout
	}
	idem, err := idempotency.Open(ctx, js, idempotency.Config{
		TTL: cfg.IdempotencyTTL, Replicas: cfg.StreamReplicas, PendingTimeout: 3 * reqTimeout,
		Logger: cfg.Logger.Named("idempotency"),
	})
	return idem, errors.Wrap(err, "open the idempotency bucket")
}

// openSealerAndHints loads the context-sealing key and opens the hints
// stream. The stream exists even with hints off (then the queue is nil):
// storage nodes wait for it at start, and only coordinators may create it.
func openSealerAndHints(ctx context.Context, js jetstream.JetStream, cfg CoordinatorConfig) (*causal.Sealer, coordinator.HintQueue, error) {
	key, err := secrets.ContextKey(ctx, js, cfg.StreamReplicas)
	if err != nil {
		return nil, nil, errors.Wrap(err, "load the context-sealing key")
	}
	sealer, err := causal.NewSealer(key, secrets.ContextKeyID)
	if err != nil {
		return nil, nil, err
	}
	q, err := hints.Open(ctx, js, hintsConfig(cfg.Hints, cfg.Subjects, cfg.StreamReplicas, cfg.Logger))
	if err != nil {
		return nil, nil, errors.Wrap(err, "open the hints stream")
	}
	if cfg.NoHints {
		return sealer, nil, nil
	}
	return sealer, q, nil
}

// EnsureTenant creates tenant id with replication factor rf unless it
// already exists.
func EnsureTenant(ctx context.Context, store tenant.Store, id string, rf uint32) error {
	t, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: id, ReplicationFactor: rf}, time.Now())
	if err != nil {
		return err
	}
	if err := store.Create(ctx, t); err != nil && !status.Is(err, pb.ErrorCode_TENANT_EXISTS) {
		return errors.Wrapf(err, "create tenant %q", id)
	}
	return nil
}

// hintsConfig fills the wiring defaults of a hints stream config.
func hintsConfig(c hints.Config, subjects bus.Subjects, replicas int, log *zap.Logger) hints.Config {
	if c.Subjects == (bus.Subjects{}) {
		c.Subjects = subjects
	}
	if c.Replicas == 0 {
		c.Replicas = replicas
	}
	if c.Logger == nil {
		c.Logger = log.Named("hints")
	}
	return c
}

// StartStorageNode follows the ring log on nc and starts a storage node
// that replays its hints (unless cfg.Hints is already set). It creates no
// stream: it waits (until ctx ends) for a coordinator to have created the
// ring log and the hints stream.
func StartStorageNode(ctx context.Context, nc *nats.Conn, cfg storagenode.Config, streamReplicas int) (*StorageNode, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Hints == nil {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, errors.Wrap(err, "open JetStream")
		}
		in, err := hints.OpenInbox(ctx, js, hintsConfig(hints.Config{}, cfg.Subjects, streamReplicas, cfg.Logger), cfg.ID)
		if err != nil {
			return nil, errors.Wrapf(err, "open the hint inbox of storage node %s", cfg.ID)
		}
		cfg.Hints = hintInbox{in}
	}
	ring, err := OpenNodeRing(ctx, nc, RingConfig{
		Subjects: cfg.Subjects, StreamReplicas: streamReplicas, Logger: cfg.Logger.Named("ring"),
	})
	if err != nil {
		return nil, err
	}
	cfg.Membership = ring
	n, err := storagenode.Start(nc, cfg)
	if err != nil {
		ring.Close()
		return nil, err
	}
	return &StorageNode{Node: n, ring: ring}, nil
}

// StorageNode is a running storage node with its ring follower.
type StorageNode struct {
	*storagenode.Node
	ring *NodeRing
}

// RingState is the node's own fold of the ring log.
func (n *StorageNode) RingState() *membership.State { return n.ring.State() }

// Stop stops the node, then its ring follower.
func (n *StorageNode) Stop(ctx context.Context) error {
	err := n.Node.Stop(ctx)
	n.ring.Close()
	return err
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

func (a idempotencyAdapter) Begin(ctx context.Context, tenant, key string, hash []byte, minter, minterInc string) (coordinator.IdempotencyClaim, error) {
	c, err := a.s.Begin(ctx, tenant, key, hash, minter, minterInc)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (a idempotencyAdapter) PurgeTenant(ctx context.Context, tenant string) error {
	return a.s.PurgeTenant(ctx, tenant)
}

// hintInbox narrows a node's JetStream hint consumer to the node's
// interface.
type hintInbox struct{ in *hints.Inbox }

func (a hintInbox) Fetch(ctx context.Context, max int) ([]heal.Hint, error) {
	hs, err := a.in.Fetch(ctx, max)
	if err != nil {
		return nil, err
	}
	out := make([]heal.Hint, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out, nil
}
