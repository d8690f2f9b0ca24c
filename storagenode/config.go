package storagenode

import (
	"context"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/storagenode/engine"
	"github.com/pairdb/pairdb/storagenode/heal"
)

// Defaults applied by Start to zero-valued Config fields.
const (
	// DefaultMaxConcurrent bounds requests in flight. It must be well above
	// one: concurrent writes are what lets Pebble share one fsync among many
	// commits. Past it, requests are refused with UNAVAILABLE, not queued.
	DefaultMaxConcurrent = 256
	// DefaultRequestTimeout bounds one request's handler.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultHeartbeatInterval is how often the node announces itself;
	// coordinators mark a node suspect after a few missed beats.
	DefaultHeartbeatInterval = time.Second
	// DefaultCleanupGrace is how long a node keeps ranges it lost after the
	// cutover that took them away, so requests routed on the old ring still
	// find the data while every coordinator catches up.
	DefaultCleanupGrace = 10 * time.Minute
	// DefaultReconcileInterval is how often the membership driver rechecks
	// its work (transfers, re-add requests, cleanup) besides waking on every
	// ring log event.
	DefaultReconcileInterval = time.Second
	// DefaultTransferPageSize is how many keys one scan page of a range
	// transfer carries (pages are also bounded by the NATS payload limit).
	DefaultTransferPageSize = 256
	// DefaultEpochWait bounds how long a request that carries a newer epoch
	// than the node's waits for the node to fold it.
	DefaultEpochWait = 2 * time.Second
	// DefaultHintRate paces hint replay (hints per second), so a node back
	// from a long outage catches up without starving client traffic.
	DefaultHintRate = 2000
	// DefaultWALMinSyncInterval: see engine.DefaultWALMinSyncInterval.
	DefaultWALMinSyncInterval = engine.DefaultWALMinSyncInterval
	// DefaultOriginTTL is how long origin records are kept: as long as
	// the coordinators keep idempotency records by default, since a retry
	// is recognised only while both exist.
	DefaultOriginTTL = 24 * time.Hour
	// DefaultReplyPrefix is the coordinators' inbox prefix
	// (bus.CoordinatorInbox): acks of forwarded writes go there and nowhere
	// else, so an apply cannot make the node answer into another part's
	// inbox, nor anywhere a sender chose.
	DefaultReplyPrefix = bus.CoordinatorInbox + "."
	// DefaultHintBatch is how many hints one fetch takes (and one commit
	// per tenant in it holds); never more than a second's worth.
	DefaultHintBatch = 256
	// DefaultAntiEntropyInterval is how often a node compares the arcs it
	// replicates with their other replicas (heal.AntiEntropy).
	DefaultAntiEntropyInterval = 10 * time.Minute
	// DefaultAntiEntropyRate paces anti-entropy in keys per second.
	DefaultAntiEntropyRate = 20000
)

// Config configures a storage node. Zero-valued optional fields take the
// defaults above; see DefaultConfig for a production starting point.
type Config struct {
	// ID names the node in subjects (<prefix>.v1.node.<ID>.<op>), so it
	// follows the tenant id rule [A-Za-z0-9_-]{1,64}. Required.
	ID string
	// DataDir holds Pebble and the incarnation id. Required.
	DataDir string
	// Sync fsyncs every write before it is acknowledged. DESIGN.md §7
	// requires it; false exists for benchmarks only, because a crash can
	// then lose acknowledged writes. Note the zero value is false: start
	// from DefaultConfig.
	Sync bool
	// Subjects names the subjects served and published.
	Subjects bus.Subjects
	// MaxConcurrent bounds requests in flight (default 256).
	MaxConcurrent int
	// RequestTimeout bounds one request (default 5s).
	RequestTimeout time.Duration
	// HeartbeatInterval is the heartbeat period (default 1s).
	HeartbeatInterval time.Duration
	// CacheBytes sizes Pebble's block cache (default 64 MiB).
	CacheBytes int64
	// WALMinSyncInterval spaces WAL fsyncs so concurrent writes share them
	// (0: sync at once; DefaultConfig sets DefaultWALMinSyncInterval). See
	// engine.Options.
	WALMinSyncInterval time.Duration
	// Logger receives the node's logs; nil discards them.
	Logger *zap.Logger
	// Metrics receives the node's metrics; nil uses a private set nobody
	// exports.
	Metrics *metrics.Set

	// Membership is the ring log as this node follows it. nil is static
	// mode: no registration, no epoch checks (responses carry epoch 0), no
	// transfers and no cleanup.
	Membership Membership
	// CleanupGrace is how long after a cutover the node deletes the ranges
	// it no longer replicates (default 10m).
	CleanupGrace time.Duration
	// ReconcileInterval is the membership driver's recheck period
	// (default 1s).
	ReconcileInterval time.Duration
	// TransferPageSize is the number of keys per transfer page (default 256).
	TransferPageSize int
	// EpochWait bounds the wait for a newer epoch a request carries
	// (default 2s).
	EpochWait time.Duration

	// Hints is this node's hinted-handoff inbox; nil disables replay.
	Hints heal.HintInbox
	// HintRate is the replay pace in hints per second (default 2000).
	HintRate float64
	// HintBatch is the number of hints fetched and committed together
	// (default 256, capped at HintRate).
	HintBatch int

	// AntiEntropyInterval is how often the node compares the arcs it
	// replicates with their other replicas and repairs what differs
	// (default 10m; see heal/antientropy.go).
	AntiEntropyInterval time.Duration
	// AntiEntropyRate paces anti-entropy in keys per second: keys digested
	// locally or remotely, pulled and pushed (default 20000).
	AntiEntropyRate int

	// OriginTTL is how long the node keeps origin records, its memory of
	// the writes with an idempotency key it minted or received (default
	// 24h). It must be at least the coordinators' idempotency TTL: a retry
	// within that TTL whose write was overwritten is recognised only
	// through these records.
	OriginTTL time.Duration
	// ReplyPrefix is the prefix every reply subject of a forwarded write
	// must have: the coordinators' inbox prefix and a dot (default
	// "_INBOX_coordinator."), so an apply cannot make the node publish on a
	// subject of the sender's choosing.
	ReplyPrefix string

	// transferHook, set by tests only, runs before every transfer page
	// this node pulls.
	transferHook func(ctx context.Context, pages int)
	// Middleware, when set, wraps every endpoint's handler (fault
	// injection in tests: internal/faults).
	Middleware bus.Middleware
}

// DefaultConfig returns a Config for node id storing in dataDir, with every
// default spelled out and Sync on.
func DefaultConfig(id, dataDir string) Config {
	return Config{
		ID:                 id,
		DataDir:            dataDir,
		Sync:               true,
		MaxConcurrent:      DefaultMaxConcurrent,
		RequestTimeout:     DefaultRequestTimeout,
		HeartbeatInterval:  DefaultHeartbeatInterval,
		CacheBytes:         engine.DefaultCacheBytes,
		WALMinSyncInterval: DefaultWALMinSyncInterval,
		CleanupGrace:       DefaultCleanupGrace,
		ReconcileInterval:  DefaultReconcileInterval,
		TransferPageSize:   DefaultTransferPageSize,
		EpochWait:          DefaultEpochWait,
		HintRate:           DefaultHintRate,
		HintBatch:          DefaultHintBatch,

		AntiEntropyInterval: DefaultAntiEntropyInterval,
		AntiEntropyRate:     DefaultAntiEntropyRate,
		OriginTTL:           DefaultOriginTTL,
		ReplyPrefix:         DefaultReplyPrefix,
	}
}

// Validate reports the first setting that cannot work. Zero values of the
// optional fields are valid (they mean "default").
func (c Config) Validate() error {
	if err := keyspace.ValidateTenantID(c.ID); err != nil {
		return errors.Wrap(err, "storage node: node id is a subject token and follows the tenant id rule")
	}
	switch {
	case c.DataDir == "":
		return errors.New("storage node: DataDir must be set")
	case c.MaxConcurrent < 0:
		return errors.Newf("storage node: MaxConcurrent must not be negative, got %d", c.MaxConcurrent)
	case c.RequestTimeout < 0:
		return errors.Newf("storage node: RequestTimeout must not be negative, got %s", c.RequestTimeout)
	case c.HeartbeatInterval < 0:
		return errors.Newf("storage node: HeartbeatInterval must not be negative, got %s", c.HeartbeatInterval)
	case c.CacheBytes < 0:
		return errors.Newf("storage node: CacheBytes must not be negative, got %d", c.CacheBytes)
	case c.CleanupGrace < 0:
		return errors.Newf("storage node: CleanupGrace must not be negative, got %s", c.CleanupGrace)
	case c.ReconcileInterval < 0:
		return errors.Newf("storage node: ReconcileInterval must not be negative, got %s", c.ReconcileInterval)
	case c.TransferPageSize < 0:
		return errors.Newf("storage node: TransferPageSize must not be negative, got %d", c.TransferPageSize)
	case c.EpochWait < 0:
		return errors.Newf("storage node: EpochWait must not be negative, got %s", c.EpochWait)
	case c.HintRate < 0:
		return errors.Newf("storage node: HintRate must not be negative, got %g", c.HintRate)
	case c.HintBatch < 0:
		return errors.Newf("storage node: HintBatch must not be negative, got %d", c.HintBatch)
	case c.OriginTTL < 0:
		return errors.Newf("storage node: OriginTTL must not be negative, got %s", c.OriginTTL)
	case c.ReplyPrefix != "" && !strings.HasSuffix(c.ReplyPrefix, "."):
		return errors.Newf("storage node: ReplyPrefix must end with a dot, got %q", c.ReplyPrefix)
	}
	return c.validateHealing()
}

// withDefaults validates c and fills its zero-valued optional fields.
func (c Config) withDefaults() (Config, error) {
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = engine.DefaultCacheBytes
	}
	if c.CleanupGrace == 0 {
		c.CleanupGrace = DefaultCleanupGrace
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.TransferPageSize == 0 {
		c.TransferPageSize = DefaultTransferPageSize
	}
	if c.EpochWait == 0 {
		c.EpochWait = DefaultEpochWait
	}
	if c.HintRate == 0 {
		c.HintRate = DefaultHintRate
	}
	if c.HintBatch == 0 {
		c.HintBatch = DefaultHintBatch
	}
	if c.OriginTTL == 0 {
		c.OriginTTL = DefaultOriginTTL
	}
	if c.ReplyPrefix == "" {
		c.ReplyPrefix = DefaultReplyPrefix
	}
	c = c.withHealingDefaults()
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	return c, nil
}

// validateHealing checks the anti-entropy and tombstone settings.
func (c Config) validateHealing() error {
	switch {
	case c.AntiEntropyInterval < 0:
		return errors.Newf("storage node: AntiEntropyInterval must not be negative, got %s", c.AntiEntropyInterval)
	case c.AntiEntropyRate < 0:
		return errors.Newf("storage node: AntiEntropyRate must not be negative, got %d", c.AntiEntropyRate)
	}
	return nil
}

// withHealingDefaults fills the zero anti-entropy and tombstone settings.
func (c Config) withHealingDefaults() Config {
	if c.AntiEntropyInterval == 0 {
		c.AntiEntropyInterval = DefaultAntiEntropyInterval
	}
	if c.AntiEntropyRate == 0 {
		c.AntiEntropyRate = DefaultAntiEntropyRate
	}
	return c
}
