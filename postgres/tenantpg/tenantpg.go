// Package tenantpg is tenant.Store on PostgreSQL, through a pgx/v5 pool:
// the production metadata backend (jetstream/tenantkv is the zero-setup
// default). The table is created by postgres/migrate (0001_tenants.sql),
// whose CHECK constraints are tested to match tenant.Validate exactly.
//
// One row per tenant. Optimistic concurrency is the row's version column:
// an update is "UPDATE ... WHERE version = new-1", a single atomic statement,
// so of concurrent updates from one version exactly one matches a row.
//
// Availability: the pool connects lazily and replaces broken connections on
// its own, so a database outage makes calls fail with UNAVAILABLE (quickly,
// and never later than ctx) and the same Store recovers when the database
// returns; nothing needs restarting. Ping is the readiness probe.
package tenantpg

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pairdb/pairdb/postgres/migrate"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
)

const (
	// DefaultMaxConns is the pool size when Config.MaxConns is 0. Tenant
	// calls are admin operations plus cache misses; ten connections per
	// coordinator is plenty and keeps a fleet well under max_connections.
	DefaultMaxConns = 10
	// DefaultTimeout bounds a call whose ctx has no deadline (STYLE §6:
	// no call may wait forever).
	DefaultTimeout = 5 * time.Second
	// DefaultConnectTimeout bounds one connection attempt when the URL sets
	// no connect_timeout. Calls are bounded by their ctx anyway; this also
	// bounds the pool's background dials, which run under no caller's ctx.
	DefaultConnectTimeout = 5 * time.Second
)

// Config configures Open. The zero value is valid.
type Config struct {
	// MaxConns caps the pool; 0 means DefaultMaxConns.
	MaxConns int32
	// Migrate applies postgres/migrate at Open. Then Open needs the
	// database and fails with UNAVAILABLE when it is unreachable. Without
	// it Open does not connect at all, so a coordinator can start during a
	// database outage and turn ready (Ping) when the database comes back.
	Migrate bool
	// Logger receives the open line, migration progress and audit lines
	// for tenant changes; nil discards them.
	Logger *zap.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxConns < 0 {
		return c, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenantpg: MaxConns must not be negative, got %d", c.MaxConns)
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c, nil
}

// Store is a tenant.Store on PostgreSQL. It is safe for concurrent use, and
// any number of coordinators may share the database: all coordination is
// done by single SQL statements.
type Store struct {
	pool   *pgxpool.Pool
	log    *zap.Logger
	closed atomic.Bool
}

var _ tenant.Store = (*Store)(nil)

// Open builds the pool for url (a PostgreSQL URL or keyword/value string,
// parsed by pgxpool.ParseConfig) and, with cfg.Migrate, brings the schema
// up to date. The URL is never logged: it may carry a password.
func Open(ctx context.Context, url string, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgconn redacts the password in its parse errors.
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "tenantpg: parse database URL")
	}
	pcfg.MaxConns = cfg.MaxConns
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "tenantpg: create pool")
	}
	s := &Store{pool: pool, log: cfg.Logger}
	if cfg.Migrate {
		// Apply bounds itself (migrate.DefaultTimeout) when ctx has no deadline.
		applied, err := migrate.Apply(ctx, pool, cfg.Logger)
		if err != nil {
			pool.Close()
			if errors.Is(err, migrate.ErrSchemaTooNew) {
				return nil, status.Wrap(pb.ErrorCode_INTERNAL, err, "tenantpg: migrate")
			}
			return nil, classify(err, "tenantpg: migrate")
		}
		cfg.Logger.Info("tenant schema migrated", zap.Ints("applied", applied), zap.Int("version", migrate.Latest()))
	}
	cfg.Logger.Info("tenant store ready", zap.String("host", pcfg.ConnConfig.Host),
		zap.String("database", pcfg.ConnConfig.Database), zap.Int32("max_conns", cfg.MaxConns), zap.Bool("migrated", cfg.Migrate))
	return s, nil
}

// Close closes the pool, waiting for acquired connections to be released
// and for dials in progress to finish; during a network black hole that is
// up to the connect timeout (DefaultConnectTimeout unless the URL sets
// connect_timeout). Later calls fail with UNAVAILABLE. Safe to call more
// than once.
func (s *Store) Close() {
	s.closed.Store(true)
	s.pool.Close()
}

// Pool exposes the pool, for migrations and operator tooling that share the
// store's connections. The store owns it: do not Close it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers, for readiness: nil, or
// UNAVAILABLE with the cause.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, DefaultTimeout)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		_ = s.fail(err, "ping") // for the pool reset and the log line
		if s.closed.Load() {
			return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "ping: tenant store is closed")
		}
		// Whatever the cause, a failed ping means not ready.
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "ping: tenant database unreachable")
	}
	return nil
}

// columns is the select list scanTenant reads, in its order.
const columns = `tenant_id, replication_factor, default_consistency, conflict_policy,
	max_siblings, max_value_bytes, created_at, updated_at, version, reads_per_second, writes_per_second`

// Create implements tenant.Store.
func (s *Store) Create(ctx context.Context, t *pb.Tenant) error {
	r, err := toRow(t)
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultTimeout)
	defer cancel()
	_, err = s.pool.Exec(ctx, `INSERT INTO tenants (`+columns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		r.id, r.rf, r.consistency, r.policy, r.maxSiblings, r.maxValueBytes, r.createdAt, r.updatedAt, r.version, r.reads, r.writes)
	if isCode(err, sqlUniqueViolation) {
		return status.Wrap(pb.ErrorCode_TENANT_EXISTS, err, "tenant %q already exists", r.id)
	}
	if err != nil {
		return s.fail(err, "create tenant %q", r.id)
	}
	s.log.Info("tenant created", zap.String("tenant", r.id), zap.Int64("version", r.version))
	return nil
}

// Get implements tenant.Store.
func (s *Store) Get(ctx context.Context, id string) (*pb.Tenant, error) {
	if err := tenant.CheckID(id); err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultTimeout)
	defer cancel()
	t, err := scanTenant(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM tenants WHERE tenant_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "tenant %q does not exist", id)
	}
	if err != nil {
		return nil, s.fail(err, "read tenant %q", id)
	}
	return t, nil
}

// Update implements tenant.Store. created_at is not written: it is set once
// by Create, and tenant.ApplyUpdate carries it over unchanged, so leaving it
// out only stops a faulty caller from rewriting a tenant's history.
func (s *Store) Update(ctx context.Context, t *pb.Tenant) error {
	r, err := toRow(t)
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultTimeout)
	defer cancel()
	// One statement is the compare-and-swap: under READ COMMITTED a
	// concurrent updater that commits first makes PostgreSQL re-check the
	// WHERE clause against the new row version, which then no longer
	// matches, so exactly one of several updates from one version wins.
	tag, err := s.pool.Exec(ctx, `UPDATE tenants SET replication_factor = $2, default_consistency = $3,
		conflict_policy = $4, max_siblings = $5, max_value_bytes = $6, updated_at = $7, version = $8,
		reads_per_second = $10, writes_per_second = $11
		WHERE tenant_id = $1 AND version = $9`,
		r.id, r.rf, r.consistency, r.policy, r.maxSiblings, r.maxValueBytes, r.updatedAt, r.version, r.version-1, r.reads, r.writes)
	if err != nil {
		return s.fail(err, "update tenant %q", r.id)
	}
	if tag.RowsAffected() == 1 {
		s.log.Info("tenant updated", zap.String("tenant", r.id), zap.Int64("version", r.version))
		return nil
	}
	// No row matched: absent, or at another version. A second read tells
	// which; if the row changes again in between, the answer is still true
	// of a moment after the update failed.
	var stored int64
	err = s.pool.QueryRow(ctx, `SELECT version FROM tenants WHERE tenant_id = $1`, r.id).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "tenant %q does not exist", r.id)
	}
	if err != nil {
		return s.fail(err, "update tenant %q", r.id)
	}
	return status.Errorf(pb.ErrorCode_VERSION_CONFLICT,
		"tenant %q is at version %d; an update to version %d must be based on version %d; re-read it and retry",
		r.id, stored, r.version, r.version-1)
}

// List implements tenant.Store. Keyset paging on the primary key: each page
// is one index range scan, however deep into the list it is. One extra row
// is read to tell a full last page from a page with more after it, so the
// last page never hands out a token that leads to an empty page.
func (s *Store) List(ctx context.Context, pageSize int, pageToken string) ([]*pb.Tenant, string, error) {
	if err := tenant.CheckPageToken(pageToken); err != nil {
		return nil, "", err
	}
	size := tenant.PageSize(pageSize)
	ctx, cancel := withDefaultTimeout(ctx, DefaultTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM tenants WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2`,
		pageToken, size+1)
	if err != nil {
		return nil, "", s.fail(err, "list tenants")
	}
	page, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*pb.Tenant, error) { return scanTenant(row) })
	if err != nil {
		return nil, "", s.fail(err, "list tenants")
	}
	if len(page) <= size {
		return page, "", nil
	}
	page = page[:size]
	return page, page[size-1].GetTenantId(), nil
}

// Delete implements tenant.Store. A DELETE is atomic per row, so of
// concurrent deletes exactly one sees a row to remove.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := tenant.CheckID(id); err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultTimeout)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `DELETE FROM tenants WHERE tenant_id = $1`, id)
	if err != nil {
		return s.fail(err, "delete tenant %q", id)
	}
	if tag.RowsAffected() == 0 {
		return status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "tenant %q does not exist", id)
	}
	s.log.Info("tenant deleted", zap.String("tenant", id))
	return nil
}

// fail classifies err; after Close every failure is UNAVAILABLE, whatever
// error the closed pool produced.
//
// A broken connection (not a caller's deadline) resets the pool: the pooled
// connections share the network path and the server with the one that just
// broke, and pgxpool only pings a connection idle for over a second before
// handing it out, so without the reset the first calls after an outage would
// each discover one more dead connection. Re-dialling a few connections is
// cheap next to that.
func (s *Store) fail(err error, format string, args ...any) error {
	if s.closed.Load() {
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, format+": tenant store is closed", args...)
	}
	if unreachable(err) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		s.log.Warn("tenant database unreachable; dropping pooled connections", zap.Error(err))
		s.pool.Reset()
	}
	return classify(err, format, args...)
}

// row is a record in its column types. PostgreSQL has no unsigned
// integers; the conversions are checked in toRow and scanTenant.
type row struct {
	id, consistency, policy string
	rf, maxSiblings         int32
	reads, writes           int32
	maxValueBytes, version  int64
	createdAt, updatedAt    time.Time
}

// toRow validates t and converts it for writing.
func toRow(t *pb.Tenant) (row, error) {
	if err := tenant.Validate(t); err != nil {
		return row{}, err
	}
	// Validate bounds every integer far below these limits except the
	// version, which only has a lower bound.
	if t.GetVersion() > math.MaxInt64 {
		return row{}, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenant %q: version %d does not fit a bigint", t.GetTenantId(), t.GetVersion())
	}
	return row{
		id:            t.GetTenantId(),
		rf:            int32(t.GetReplicationFactor()),
		consistency:   t.GetDefaultConsistency(),
		policy:        t.GetConflictPolicy(),
		maxSiblings:   int32(t.GetMaxSiblings()),
		maxValueBytes: int64(t.GetMaxValueBytes()),
		createdAt:     t.GetCreatedAt().AsTime(),
		updatedAt:     t.GetUpdatedAt().AsTime(),
		version:       int64(t.GetVersion()),
		reads:         int32(t.GetReadsPerSecond()),
		writes:        int32(t.GetWritesPerSecond()),
	}, nil
}

// scanTenant reads one row of `columns` into a fresh record. Negative
// numbers cannot pass the table's CHECKs; if one appears anyway (a hand-made
// table), it is reported rather than wrapped around into a huge unsigned
// value.
func scanTenant(sc pgx.Row) (*pb.Tenant, error) {
	var r row
	if err := sc.Scan(&r.id, &r.rf, &r.consistency, &r.policy, &r.maxSiblings, &r.maxValueBytes,
		&r.createdAt, &r.updatedAt, &r.version, &r.reads, &r.writes); err != nil {
		return nil, err
	}
	if r.rf < 0 || r.maxSiblings < 0 || r.maxValueBytes < 0 || r.version < 0 || r.reads < 0 || r.writes < 0 {
		return nil, status.Errorf(pb.ErrorCode_INTERNAL, "stored tenant %q has a negative field", r.id)
	}
	return &pb.Tenant{
		TenantId:           r.id,
		ReplicationFactor:  uint32(r.rf),
		DefaultConsistency: r.consistency,
		ConflictPolicy:     r.policy,
		MaxSiblings:        uint32(r.maxSiblings),
		MaxValueBytes:      uint64(r.maxValueBytes),
		CreatedAt:          timestamppb.New(r.createdAt),
		UpdatedAt:          timestamppb.New(r.updatedAt),
		Version:            uint64(r.version),
		ReadsPerSecond:     uint32(r.reads),
		WritesPerSecond:    uint32(r.writes),
	}, nil
}

func isCode(err error, code string) bool {
	var pgErr interface{ SQLState() string }
	return errors.As(err, &pgErr) && pgErr.SQLState() == code
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
