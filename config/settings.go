package config

import (
	"net"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zapcore"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/coordinator"
	"github.com/pairdb/pairdb/jetstream/hints"
	"github.com/pairdb/pairdb/jetstream/idempotency"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ops"
	"github.com/pairdb/pairdb/storagenode"
)

// Defaults shared by several commands.
const (
	// DefaultShutdownTimeout bounds a clean shutdown. It stays below the
	// Kubernetes manifests' terminationGracePeriodSeconds (30s and 60s), so
	// the process finishes before it is killed.
	DefaultShutdownTimeout = 15 * time.Second
	// DefaultDevOpsAddr keeps the dev cluster's operations server local and
	// apart from a coordinator's or storage node's on the same machine.
	DefaultDevOpsAddr = "127.0.0.1:9090"
	// MaxStreamReplicas is JetStream's own limit.
	MaxStreamReplicas = 5
)

// Log formats.
const (
	LogConsole = "console"
	LogJSON    = "json"
)

// Global holds the settings every command shares: where NATS is, the
// subject prefix, the client commands' tenant and deadline, and logging.
type Global struct {
	Server    string        `yaml:"server" short:"s" env:"PAIRDB_SERVER,NATS_URL" usage:"NATS server URL(s), comma-separated"`
	Prefix    string        `yaml:"prefix" usage:"first token of every PairDB subject"`
	Tenant    string        `yaml:"tenant" short:"t" usage:"tenant of the key-value commands"`
	Timeout   time.Duration `yaml:"timeout" usage:"deadline of one client command's request"`
	LogLevel  string        `yaml:"log_level" usage:"log level: debug, info, warn or error"`
	LogFormat string        `yaml:"log_format" usage:"log format: console or json (one object a line)"`
	// InboxPrefix is empty by default: each command then takes its role's
	// prefix (RoleInbox), the one its NATS user may subscribe to.
	InboxPrefix string `yaml:"inbox_prefix" usage:"prefix of this connection's reply subjects, which only its NATS user may read (deploy/nats); empty: the role's, _INBOX_coordinator for coordinators, _INBOX_node_<id> for storage nodes, _INBOX_operator for tenant, node, migration and repair, _INBOX for the key-value commands and bench (dev ignores it)"`
}

// DefaultGlobal returns the global defaults.
func DefaultGlobal() Global {
	return Global{
		Server:    nats.DefaultURL,
		Prefix:    bus.DefaultPrefix,
		Tenant:    "default",
		Timeout:   coordinator.DefaultRequestTimeout,
		LogLevel:  "info",
		LogFormat: LogConsole,
	}
}

// Validate reports the first unusable global setting.
func (g Global) Validate() error {
	if strings.TrimSpace(g.Server) == "" {
		return errors.New("server must name a NATS server URL")
	}
	if err := validateToken("prefix", g.Prefix); err != nil {
		return err
	}
	if err := keyspace.ValidateTenantID(g.Tenant); err != nil {
		return errors.Wrap(err, "tenant")
	}
	if g.Timeout <= 0 {
		return errors.Newf("timeout must be positive, got %s", g.Timeout)
	}
	if _, err := zapcore.ParseLevel(g.LogLevel); err != nil || g.LogLevel == "" {
		return errors.Newf("log_level must be debug, info, warn or error, got %q", g.LogLevel)
	}
	if g.LogFormat != LogConsole && g.LogFormat != LogJSON {
		return errors.Newf("log_format must be console or json, got %q", g.LogFormat)
	}
	if g.InboxPrefix != "" {
		return validateInbox("inbox_prefix", g.InboxPrefix)
	}
	return nil
}

// validateInbox checks an inbox prefix as nats.CustomInboxPrefix takes it:
// a literal subject (its replies are prefix.<id>), no wildcards.
func validateInbox(name, prefix string) error {
	if prefix == "" || strings.ContainsAny(prefix, "*> \t\r\n") || strings.HasPrefix(prefix, ".") ||
		strings.HasSuffix(prefix, ".") || strings.Contains(prefix, "..") {
		return errors.Newf("%s must be a NATS subject without wildcards, such as %s, got %q", name, bus.CoordinatorInbox, prefix)
	}
	return nil
}

// Process holds what every long-running command has: the operations HTTP
// server and the shutdown deadline.
type Process struct {
	OpsAddr         string        `yaml:"ops_addr" usage:"listen address of /metrics, /healthz and /readyz (host:port; port 0 picks one)"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" usage:"deadline of a clean shutdown after SIGTERM or SIGINT"`
}

func (p Process) validate(section string) error {
	if _, _, err := net.SplitHostPort(p.OpsAddr); err != nil {
		return errors.Newf("%s.ops_addr must be host:port, got %q", section, p.OpsAddr)
	}
	if p.ShutdownTimeout <= 0 {
		return errors.Newf("%s.shutdown_timeout must be positive, got %s", section, p.ShutdownTimeout)
	}
	return nil
}

// Dev configures `pairdb dev`: an embedded NATS server, a coordinator and
// storage nodes in one process.
type Dev struct {
	Listen      string `yaml:"listen" usage:"address of the embedded NATS server"`
	Data        string `yaml:"data" usage:"data directory: JetStream and one directory per storage node"`
	Nodes       int    `yaml:"nodes" usage:"number of storage nodes"`
	NoSync      bool   `yaml:"no_sync" usage:"skip fsync on storage nodes (benchmarks only: a crash can lose acknowledged writes)"`
	PostgresURL string `yaml:"postgres_url" usage:"keep tenants in this PostgreSQL database instead of JetStream"`
	Process     `yaml:",inline"`
}

// DefaultDev returns the dev cluster's defaults.
func DefaultDev() Dev {
	return Dev{
		Process: Process{OpsAddr: DefaultDevOpsAddr, ShutdownTimeout: DefaultShutdownTimeout},
		Listen:  "127.0.0.1:4222",
		Data:    "./pairdb-data",
		Nodes:   3,
	}
}

// Validate reports the first unusable dev setting.
func (d Dev) Validate() error {
	if err := d.validate(SectionDev); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(d.Listen); err != nil {
		return errors.Newf("dev.listen must be host:port, got %q", d.Listen)
	}
	if d.Data == "" {
		return errors.New("dev.data must name a directory")
	}
	if d.Nodes < 1 || d.Nodes > 64 {
		return errors.Newf("dev.nodes must be between 1 and 64, got %d", d.Nodes)
	}
	return nil
}

// Coordinator configures `pairdb coordinator`.
type Coordinator struct {
	VirtualNodes     int           `yaml:"virtual_nodes" usage:"ring points per storage node: the cluster's, recorded in the ring log when this coordinator bootstraps it; a coordinator set otherwise than the log does not start"`
	StreamReplicas   int           `yaml:"stream_replicas" usage:"JetStream replicas of the control-plane streams and buckets (3 on a NATS cluster)"`
	IdempotencyTTL   time.Duration `yaml:"idempotency_ttl" usage:"how long idempotency records are kept"`
	PostgresURL      string        `yaml:"postgres_url" usage:"keep tenants in this PostgreSQL database (migrated at start); empty: the JetStream bucket"`
	RequestTimeout   time.Duration `yaml:"request_timeout" usage:"deadline of one client request inside the coordinator"`
	ReplicaTimeout   time.Duration `yaml:"replica_timeout" usage:"deadline of one call to one storage node (at most request_timeout)"`
	TenantCacheTTL   time.Duration `yaml:"tenant_cache_ttl" usage:"how long a cached tenant record is used without an invalidation"`
	ReadRepairChance float64       `yaml:"read_repair_chance" usage:"share of reads that ask all N replicas (and repair them); the others ask R and hedge after 20ms"`
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout" usage:"a storage node not heard from for this long is suspect (tried last)"`
	DownAfter        time.Duration `yaml:"down_after" usage:"a storage node not heard from for this long is down: skipped, its writes hinted at once"`
	NoHints          bool          `yaml:"no_hints" usage:"turn hinted handoff off (missed writes then wait for read repair and anti-entropy)"`
	HintMaxAge       time.Duration `yaml:"hint_max_age" usage:"how long an undelivered hint is kept: the cluster's, recorded in the ring log when this coordinator bootstraps it; a coordinator set otherwise than the log does not start"`
	TombstoneGrace   time.Duration `yaml:"tombstone_grace" usage:"a tombstone is purged only this long after its delete, and once every replica holds it (at least hint_max_age): the cluster's, recorded in the ring log like hint_max_age"`
	HintsPerNode     int           `yaml:"hints_per_node" usage:"most hints kept for one storage node; the oldest are dropped past it"`
	MaxClockSkew     time.Duration `yaml:"max_clock_skew" usage:"most a storage node's clock may differ from this coordinator's: apply deadlines leave this much room, and a node past it mints nothing for this coordinator"`
	Process          `yaml:",inline"`
}

// DefaultCoordinator returns the coordinator's defaults: those its parts
// define (coordinator, membership, the JetStream stores), not written again.
func DefaultCoordinator() Coordinator {
	return Coordinator{
		Process:          Process{OpsAddr: ops.DefaultAddr, ShutdownTimeout: DefaultShutdownTimeout},
		VirtualNodes:     membership.DefaultSettings().VNodes,
		StreamReplicas:   1,
		IdempotencyTTL:   idempotency.DefaultTTL,
		RequestTimeout:   coordinator.DefaultRequestTimeout,
		ReplicaTimeout:   coordinator.DefaultReplicaTimeout,
		TenantCacheTTL:   coordinator.DefaultTenantCacheTTL,
		ReadRepairChance: coordinator.DefaultReadRepairChance,
		HeartbeatTimeout: coordinator.DefaultHeartbeatTimeout,
		DownAfter:        coordinator.DefaultDownAfter,
		HintMaxAge:       membership.DefaultHintMaxAge,
		TombstoneGrace:   membership.DefaultTombstoneGrace,
		HintsPerNode:     int(hints.DefaultMaxPerNode),
		MaxClockSkew:     coordinator.DefaultMaxClockSkew,
	}
}

// Validate reports the first unusable coordinator setting.
func (c Coordinator) Validate() error {
	if err := c.validate(SectionCoordinator); err != nil {
		return err
	}
	switch {
	case c.VirtualNodes < 1 || c.VirtualNodes > membership.MaxVNodes:
		return errors.Newf("coordinator.virtual_nodes must be between 1 and %d, got %d", membership.MaxVNodes, c.VirtualNodes)
	case c.StreamReplicas < 1 || c.StreamReplicas > MaxStreamReplicas:
		return errors.Newf("coordinator.stream_replicas must be between 1 and %d, got %d", MaxStreamReplicas, c.StreamReplicas)
	case c.IdempotencyTTL <= 0:
		return errors.Newf("coordinator.idempotency_ttl must be positive, got %s", c.IdempotencyTTL)
	case c.RequestTimeout <= 0:
		return errors.Newf("coordinator.request_timeout must be positive, got %s", c.RequestTimeout)
	case c.ReplicaTimeout <= 0:
		return errors.Newf("coordinator.replica_timeout must be positive, got %s", c.ReplicaTimeout)
	case c.ReplicaTimeout > c.RequestTimeout:
		return errors.Newf("coordinator.replica_timeout (%s) must not exceed coordinator.request_timeout (%s)", c.ReplicaTimeout, c.RequestTimeout)
	case c.HeartbeatTimeout <= 0:
		return errors.Newf("coordinator.heartbeat_timeout must be positive, got %s", c.HeartbeatTimeout)
	case c.DownAfter < c.HeartbeatTimeout:
		return errors.Newf("coordinator.down_after (%s) must be at least coordinator.heartbeat_timeout (%s)", c.DownAfter, c.HeartbeatTimeout)
	case c.HintMaxAge <= 0:
		return errors.Newf("coordinator.hint_max_age must be positive, got %s", c.HintMaxAge)
	case c.TombstoneGrace < c.HintMaxAge:
		return errors.Newf("coordinator.tombstone_grace (%s) must be at least coordinator.hint_max_age (%s): a hint could otherwise resurrect a purged key", c.TombstoneGrace, c.HintMaxAge)
	case c.HintsPerNode < 1:
		return errors.Newf("coordinator.hints_per_node must be positive, got %d", c.HintsPerNode)
	case c.ReadRepairChance <= 0 || c.ReadRepairChance > 1:
		return errors.Newf("coordinator.read_repair_chance must be above 0 and at most 1, got %v", c.ReadRepairChance)
	case c.TenantCacheTTL <= 0:
		return errors.Newf("coordinator.tenant_cache_ttl must be positive, got %s", c.TenantCacheTTL)
	case c.MaxClockSkew <= 0 || 2*c.MaxClockSkew >= c.ReplicaTimeout:
		return errors.Newf("coordinator.max_clock_skew must be positive and below half of coordinator.replica_timeout (%s), got %s",
			c.ReplicaTimeout, c.MaxClockSkew)
	}
	return nil
}

// StorageNode configures `pairdb storagenode`.
type StorageNode struct {
	ID                  string        `yaml:"id" env:"PAIRDB_NODE_ID" usage:"storage node id, stable across restarts ([A-Za-z0-9_-]{1,64}); required"`
	Data                string        `yaml:"data" usage:"data directory (Pebble); required"`
	NoSync              bool          `yaml:"no_sync" usage:"skip fsync (benchmarks only: a crash can lose acknowledged writes)"`
	CleanupGrace        time.Duration `yaml:"cleanup_grace" usage:"how long ranges this node no longer replicates are kept after a change"`
	StreamReplicas      int           `yaml:"stream_replicas" usage:"JetStream replicas of the node's hint consumer (3 on a NATS cluster); the streams are the coordinators'"`
	CacheBytes          Bytes         `yaml:"cache_bytes" usage:"Pebble block cache size (e.g. 256MiB)"`
	WALMinSyncInterval  time.Duration `yaml:"wal_min_sync_interval" usage:"least time between two fsyncs of the write-ahead log, so concurrent writes share one (0: sync at once)"`
	HintRate            int           `yaml:"hint_rate" usage:"hints replayed per second when the node comes back (pacing, so a long outage is no storm)"`
	AntiEntropyInterval time.Duration `yaml:"anti_entropy_interval" usage:"how often the node compares its ranges' digests with the other replicas"`
	AntiEntropyRate     int           `yaml:"anti_entropy_rate" usage:"keys per second anti-entropy may read and repair"`
	OriginTTL           time.Duration `yaml:"origin_ttl" usage:"how long the node remembers the keyed writes it minted or received (at least the coordinators' idempotency_ttl: a retry is recognised only while both last)"`
	CoordinatorInbox    string        `yaml:"coordinator_inbox_prefix" usage:"the coordinators' inbox_prefix: the node sends the acks of forwarded writes only to replies under it"`
	Process             `yaml:",inline"`
}

// DefaultStorageNode returns the storage node's defaults: those of
// storagenode.DefaultConfig, not written again.
func DefaultStorageNode() StorageNode {
	d := storagenode.DefaultConfig("", "")
	return StorageNode{
		Process:             Process{OpsAddr: ops.DefaultAddr, ShutdownTimeout: DefaultShutdownTimeout},
		CleanupGrace:        d.CleanupGrace,
		StreamReplicas:      1,
		CacheBytes:          Bytes(d.CacheBytes),
		WALMinSyncInterval:  d.WALMinSyncInterval,
		HintRate:            int(d.HintRate),
		AntiEntropyInterval: d.AntiEntropyInterval,
		AntiEntropyRate:     d.AntiEntropyRate,
		OriginTTL:           d.OriginTTL,
		CoordinatorInbox:    bus.CoordinatorInbox,
	}
}

// Validate reports the first unusable storage node setting.
func (s StorageNode) Validate() error {
	if err := s.validate(SectionStorageNode); err != nil {
		return err
	}
	if s.ID == "" {
		return errors.New("storagenode.id is required (--id or PAIRDB_NODE_ID)")
	}
	if err := keyspace.ValidateTenantID(s.ID); err != nil {
		return errors.Wrap(err, "storagenode.id is a subject token and follows the tenant id rule")
	}
	switch {
	case s.Data == "":
		return errors.New("storagenode.data is required (--data or PAIRDB_DATA)")
	case s.CleanupGrace <= 0:
		return errors.Newf("storagenode.cleanup_grace must be positive, got %s", s.CleanupGrace)
	case s.WALMinSyncInterval < 0 || s.WALMinSyncInterval > time.Second:
		return errors.Newf("storagenode.wal_min_sync_interval must be between 0 and 1s, got %s", s.WALMinSyncInterval)
	case s.StreamReplicas < 1 || s.StreamReplicas > MaxStreamReplicas:
		return errors.Newf("storagenode.stream_replicas must be between 1 and %d, got %d", MaxStreamReplicas, s.StreamReplicas)
	case s.HintRate <= 0:
		return errors.Newf("storagenode.hint_rate must be positive, got %d", s.HintRate)
	case s.AntiEntropyInterval <= 0:
		return errors.Newf("storagenode.anti_entropy_interval must be positive, got %s", s.AntiEntropyInterval)
	case s.AntiEntropyRate <= 0:
		return errors.Newf("storagenode.anti_entropy_rate must be positive, got %d", s.AntiEntropyRate)
	case s.CacheBytes < 1<<20:
		return errors.Newf("storagenode.cache_bytes must be at least 1MiB, got %s", s.CacheBytes)
	case s.OriginTTL <= 0:
		return errors.Newf("storagenode.origin_ttl must be positive, got %s", s.OriginTTL)
	}
	return validateInbox("storagenode.coordinator_inbox_prefix", s.CoordinatorInbox)
}

// validateToken checks a NATS subject token.
func validateToken(name, tok string) error {
	if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
		return errors.Newf("%s must be one NATS subject token (no '.', '*', '>' or spaces), got %q", name, tok)
	}
	return nil
}
