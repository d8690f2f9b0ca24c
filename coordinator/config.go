// Package coordinator is PairDB's stateless request router: a NATS micro
// service in one queue group that serves put/get/delete and the tenant admin
// API, routes keys on the ring, gathers quorums and repairs stale replicas.
// Run any number of them; they share nothing but NATS.
package coordinator

import (
	"context"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/causal"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/tenant"
)

// QueueGroup is the NATS queue group every coordinator joins, so each request
// is served by exactly one of them.
const QueueGroup = "pairdb-coordinators"

// ServiceName is the micro service name `nats micro ls` shows.
const ServiceName = "pairdb"

// Version is the micro service version.
const Version = "0.1.0"

// Idempotency is what the write path needs from the idempotency store.
// Implementations must be safe for concurrent use and honour ctx.
type Idempotency interface {
	// Begin claims (tenant, key) for a request whose payload hashes to hash,
	// proposing minter (a storage node id and its incarnation) to mint it.
	// It returns a claim to execute, or a claim whose Done reports the
	// stored response of an earlier identical request; a different payload
	// under the same key is IDEMPOTENCY_KEY_CONFLICT.
	Begin(ctx context.Context, tenant, key string, hash []byte, minter, minterIncarnation string) (IdempotencyClaim, error)
	// PurgeTenant removes every record of tenant (it was deleted: a tenant
	// created again under its id must not find them).
	PurgeTenant(ctx context.Context, tenant string) error
}

// IdempotencyClaim is one request's hold on an idempotency key.
type IdempotencyClaim interface {
	// Done returns the stored response when an earlier request finished.
	Done() ([]byte, bool)
	// Complete stores the response of a successful write.
	Complete(ctx context.Context, response []byte) error
	// Abort releases the claim of a failed write so a retry can run.
	Abort(ctx context.Context) error
	// Retry reports that an earlier attempt failed or was abandoned and may
	// have been applied in part.
	Retry() bool
	// TakenOver reports that the earlier attempt's record was never
	// completed, so that attempt may also have been answered.
	TakenOver() bool
	// Minter names the one replica allowed to mint the write: the proposed
	// one, or, for a retry, the one the earlier attempt named.
	Minter() (node, incarnation string)
	// Reassign names another minter; call it only after the named one
	// certainly refused, and before asking the new one.
	Reassign(ctx context.Context, node, incarnation string) error
}

// Membership is what the coordinator needs of the ring log. Implementations
// are safe for concurrent use; waits honour ctx.
type Membership interface {
	// State is the latest fold (immutable).
	State() *membership.State
	// WaitForEpoch blocks until the fold reaches epoch.
	WaitForEpoch(ctx context.Context, epoch uint64) error
	// WaitFor blocks until the fold reaches log sequence seq.
	WaitFor(ctx context.Context, seq uint64) error
	// CatchUp blocks until the fold holds every event the log holds now:
	// an admin decides on the log as it is, not on a fold a moment behind
	// (a node whose registration another coordinator appended is known).
	CatchUp(ctx context.Context) error
	// Append adds an event if the log is still at expectedSeq
	// (VERSION_CONFLICT otherwise).
	Append(ctx context.Context, expectedSeq uint64, ev *pb.RingEvent) (uint64, error)
	// Progress returns the last progress report of each node of migration id.
	Progress(ctx context.Context, id string, nodes []string) map[string]*pb.MigrationProgress
	// PublishProgress records a node's progress report (nodes send theirs
	// to the coordinators, see members.go).
	PublishProgress(ctx context.Context, p *pb.MigrationProgress) error
}

// HintQueue stores hints: the merges a replica missed, for that node to
// replay when it is back (jetstream/hints). Add may block up to ctx's
// deadline; calls may overlap.
type HintQueue interface {
	// Add durably appends m to node's hints.
	Add(ctx context.Context, node string, m *pb.MergeRequest) error
}

// Config configures a coordinator. Zero durations and sizes take defaults.
type Config struct {
	// Cluster are the settings this coordinator records in the ring log
	// when it bootstraps the ring (the first nodes.add). Zero fields take
	// membership.DefaultSettings.
	Cluster  membership.Settings
	Subjects bus.Subjects
	// Membership is the folded ring log: placement, epochs, changes.
	Membership Membership
	// Tenants is the metadata store (JetStream KV or PostgreSQL).
	Tenants tenant.Store
	// Idempotency dedupes writes that carry an idempotency key.
	Idempotency Idempotency
	// RequestTimeout bounds a whole client request (default 5s).
	RequestTimeout time.Duration
	// ReplicaTimeout bounds one call to one storage node (default 2s).
	ReplicaTimeout time.Duration
	// MaxConcurrent bounds in-flight client requests (default 4096).
	MaxConcurrent int
	// TenantCacheTTL is the backstop for a lost invalidation (default 30s).
	TenantCacheTTL time.Duration
	// HeartbeatTimeout marks a node suspect when it has not been heard from
	// for this long (default 3s; nodes beat every second).
	HeartbeatTimeout time.Duration
	// DownAfter marks a node down when it has not been heard from for this
	// long (default 3 × HeartbeatTimeout). "No responders" marks it down
	// at once.
	DownAfter time.Duration
	// Hints stores the merges replicas miss (hinted handoff); nil disables
	// it, and then a down node is still called for every write.
	Hints HintQueue
	// ReadRepairChance is the share of reads sent to all N replicas instead
	// of R (default 0.1). The other reads ask R replicas and hedge to the
	// rest after ReadHedgeAfter: about +15% gets on the 2-core machine
	// against asking all N every time (1, as Dynamo does). Only replicas
	// asked are read-repaired; convergence rests on hints and anti-entropy,
	// which is what the convergence tests check.
	ReadRepairChance float64
	// ReadHedgeAfter is how long a read waits for its R replicas before it
	// asks the others too (default 20ms).
	ReadHedgeAfter time.Duration
	// RepairWorkers and RepairQueue bound read repair (default 4 and 1024).
	RepairWorkers int
	RepairQueue   int
	Logger        *zap.Logger
	Metrics       *metrics.Set
	// Contexts seals and opens the causal contexts clients pass back
	// (the key is the cluster's, from jetstream/secrets). Required.
	Contexts *causal.Sealer
	// MaxClockSkew bounds how far a storage node's clock may be from this
	// coordinator's (default 250ms). Apply deadlines are set this much
	// before the coordinator stops waiting, so a replica whose clock lags
	// by up to the bound still mints nothing after the coordinator gave up;
	// a node whose heartbeats show more skew mints nothing for this
	// coordinator. It must be below half the replica timeout.
	MaxClockSkew time.Duration
	// Middleware, when set, wraps every endpoint's handler (fault
	// injection in tests: internal/faults).
	Middleware bus.Middleware
}

// DefaultMaxClockSkew is Config.MaxClockSkew's default: NTP keeps clocks
// within milliseconds; this leaves room for a badly synced host.
const DefaultMaxClockSkew = 250 * time.Millisecond

// Defaults of Config's zero fields, written once: config/ (the
// command-line settings) and cluster/ take theirs from here.
const (
	DefaultRequestTimeout   = 5 * time.Second
	DefaultReplicaTimeout   = 2 * time.Second
	DefaultMaxConcurrent    = 4096
	DefaultTenantCacheTTL   = 30 * time.Second
	DefaultHeartbeatTimeout = 3 * time.Second
	// DefaultDownAfter is three missed heartbeat timeouts.
	DefaultDownAfter        = 3 * DefaultHeartbeatTimeout
	DefaultReadRepairChance = 0.1
	DefaultReadHedgeAfter   = 20 * time.Millisecond
	DefaultRepairWorkers    = 4
	DefaultRepairQueue      = 1024
)

func (c *Config) setDefaults() error {
	if c.Membership == nil {
		return errors.New("coordinator: Config.Membership is required")
	}
	if c.Tenants == nil {
		return errors.New("coordinator: Config.Tenants is required")
	}
	if c.Contexts == nil {
		return errors.New("coordinator: Config.Contexts is required (the cluster's context-sealing key)")
	}
	c.Cluster = c.Cluster.WithDefaults()
	if err := c.Cluster.Validate(); err != nil {
		return errors.Wrap(err, "coordinator: Config.Cluster")
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ReplicaTimeout <= 0 {
		c.ReplicaTimeout = DefaultReplicaTimeout
	}
	if c.ReplicaTimeout > c.RequestTimeout {
		c.ReplicaTimeout = c.RequestTimeout
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.MaxClockSkew < 0 || 2*c.MaxClockSkew >= c.ReplicaTimeout {
		return errors.Newf("coordinator: MaxClockSkew (%s) must be positive and below half the replica timeout (%s)",
			c.MaxClockSkew, c.ReplicaTimeout)
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.TenantCacheTTL <= 0 {
		c.TenantCacheTTL = DefaultTenantCacheTTL
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 3 * c.HeartbeatTimeout
	}
	if c.DownAfter < c.HeartbeatTimeout {
		return errors.Newf("coordinator: DownAfter (%s) must not be shorter than HeartbeatTimeout (%s)", c.DownAfter, c.HeartbeatTimeout)
	}
	if c.ReadRepairChance == 0 {
		c.ReadRepairChance = DefaultReadRepairChance
	}
	if c.ReadRepairChance < 0 || c.ReadRepairChance > 1 {
		return errors.Newf("coordinator: ReadRepairChance %v is not between 0 and 1", c.ReadRepairChance)
	}
	if c.ReadHedgeAfter <= 0 {
		c.ReadHedgeAfter = DefaultReadHedgeAfter
	}
	if c.RepairWorkers <= 0 {
		c.RepairWorkers = DefaultRepairWorkers
	}
	if c.RepairQueue <= 0 {
		c.RepairQueue = DefaultRepairQueue
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	return nil
}
