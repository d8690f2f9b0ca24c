// Package tenantkv stores tenant records in a JetStream KV bucket: the
// zero-setup tenant.Store used when no PostgreSQL is configured.
//
// Layout: one key per tenant, the key is the tenant id (tenant ids are
// [A-Za-z0-9_-]{1,64}, all valid KV key characters, and never contain '.',
// so no id can address a subtree), the value is the proto-encoded pb.Tenant.
// Optimistic concurrency rides on the KV revision: every conditional write is
// a compare-and-swap on the revision the decision was based on, executed by
// the stream leader, so it is atomic across all coordinators.
package tenantkv

import (
	"context"
	"slices"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/jetstream/jsbucket"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
)

// DefaultBucket is the bucket name when Config.Bucket is empty.
const DefaultBucket = "pairdb_tenants"

// Config configures the store. The zero value is valid for an embedded,
// single-server NATS.
type Config struct {
	// Bucket names the KV bucket; "" means DefaultBucket.
	Bucket string
	// Replicas is the bucket's replication; 0 means 1 (embedded). Use 3 on
	// a NATS cluster (DESIGN §3). JetStream allows at most 5.
	Replicas int
	// Logger receives audit lines for tenant changes; nil discards them.
	Logger *zap.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return c, errors.Newf("tenantkv: replicas must be between 1 and 5, got %d", c.Replicas)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c, nil
}

// Store is a tenant.Store on a JetStream KV bucket. It holds no state of its
// own besides the bucket handle, so it is safe for concurrent use and any
// number of processes may share the bucket.
type Store struct {
	kv  jetstream.KeyValue
	log *zap.Logger
}

var _ tenant.Store = (*Store)(nil)

// Open creates the bucket, or updates it to cfg, and returns the store.
// History is 1: the store needs only the latest record, and old versions of
// a tenant would just be unused disk. File storage, because a tenant that
// vanishes on a server restart takes all its data's placement with it.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	kv, err := jsbucket.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "PairDB tenant records (key: tenant id, value: pairdb.v1.Tenant)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "open tenant store")
	}
	cfg.Logger.Info("tenant store ready", zap.String("bucket", cfg.Bucket), zap.Int("replicas", cfg.Replicas))
	return &Store{kv: kv, log: cfg.Logger}, nil
}

// Create implements tenant.Store.
func (s *Store) Create(ctx context.Context, t *pb.Tenant) error {
	if err := tenant.Validate(t); err != nil {
		return err
	}
	data, err := encode(t)
	if err != nil {
		return err
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	// kv.Create also succeeds over a delete marker, so a deleted id can be
	// created again.
	rev, err := s.kv.Create(ctx, t.GetTenantId(), data)
	switch {
	case jsbucket.IsConflict(err):
		return status.Errorf(pb.ErrorCode_TENANT_EXISTS, "tenant %q already exists", t.GetTenantId())
	case err != nil:
		return unavailable(err, "create tenant %q", t.GetTenantId())
	}
	s.log.Info("tenant created", zap.String("tenant", t.GetTenantId()), zap.Uint64("revision", rev))
	return nil
}

// Get implements tenant.Store.
func (s *Store) Get(ctx context.Context, id string) (*pb.Tenant, error) {
	if err := tenant.CheckID(id); err != nil {
		return nil, err
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	t, _, err := s.get(ctx, id)
	return t, err
}

// get reads the record and the revision it was read at. A deleted or
// purged key reads as TENANT_NOT_FOUND (nats.go maps delete markers to
// ErrKeyNotFound).
func (s *Store) get(ctx context.Context, id string) (*pb.Tenant, uint64, error) {
	e, err := s.kv.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "tenant %q does not exist", id)
	case err != nil:
		return nil, 0, unavailable(err, "read tenant %q", id)
	}
	t := &pb.Tenant{}
	if err := proto.Unmarshal(e.Value(), t); err != nil {
		s.log.Error("undecodable tenant record", zap.String("tenant", id), zap.Uint64("revision", e.Revision()), zap.Error(err))
		return nil, 0, status.Wrap(pb.ErrorCode_INTERNAL, err, "decode tenant %q at revision %d", id, e.Revision())
	}
	if t.GetTenantId() != id {
		return nil, 0, status.Errorf(pb.ErrorCode_INTERNAL, "tenant record under key %q names tenant %q", id, t.GetTenantId())
	}
	return t, e.Revision(), nil
}

// Update implements tenant.Store. The version check is done here, and the
// write is conditional on the KV revision that check was made against, so
// a concurrent writer between the two turns into VERSION_CONFLICT rather
// than a lost update.
func (s *Store) Update(ctx context.Context, t *pb.Tenant) error {
	if err := tenant.Validate(t); err != nil {
		return err
	}
	data, err := encode(t)
	if err != nil {
		return err
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	id := t.GetTenantId()
	stored, rev, err := s.get(ctx, id)
	if err != nil {
		return err
	}
	if stored.GetVersion() != t.GetVersion()-1 {
		return versionConflict(id, stored.GetVersion(), t.GetVersion())
	}
	newRev, err := s.kv.Update(ctx, id, data, rev)
	if jsbucket.IsConflict(err) {
		// Someone wrote (or deleted) since our read. Re-read so a delete is
		// reported as such and an update as the conflict it is.
		cur, _, gerr := s.get(ctx, id)
		if gerr != nil {
			return gerr
		}
		return versionConflict(id, cur.GetVersion(), t.GetVersion())
	}
	if err != nil {
		return unavailable(err, "update tenant %q", id)
	}
	s.log.Info("tenant updated", zap.String("tenant", id), zap.Uint64("version", t.GetVersion()), zap.Uint64("revision", newRev))
	return nil
}

// Delete implements tenant.Store. The purge is conditional on the revision
// just read, so of concurrent deletes exactly one succeeds and the others
// re-read and report TENANT_NOT_FOUND. A purge (not a plain delete marker)
// also drops the record's older revisions from the stream.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := tenant.CheckID(id); err != nil {
		return err
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	for {
		_, rev, err := s.get(ctx, id)
		if err != nil {
			return err
		}
		err = s.kv.Purge(ctx, id, jetstream.LastRevision(rev))
		if err == nil {
			s.log.Info("tenant deleted", zap.String("tenant", id), zap.Uint64("revision", rev))
			return nil
		}
		if !jsbucket.IsConflict(err) {
			return unavailable(err, "delete tenant %q", id)
		}
		// The record changed under us (a concurrent update or delete);
		// decide again on a fresh read. Each retry means another writer
		// made progress, and ctx bounds the loop.
		if err := ctx.Err(); err != nil {
			return unavailable(err, "delete tenant %q", id)
		}
	}
}

// List implements tenant.Store. It lists the bucket's keys (delete markers
// are skipped by the lister), sorts them, and reads the page's records one by
// one; a key deleted between the listing and its read is skipped. Listing
// all keys per page is linear in the number of tenants, which is fine for an
// admin call over thousands of tenants; the PostgreSQL store is the answer
// beyond that.
func (s *Store) List(ctx context.Context, pageSize int, pageToken string) ([]*pb.Tenant, string, error) {
	if err := tenant.CheckPageToken(pageToken); err != nil {
		return nil, "", err
	}
	size := tenant.PageSize(pageSize)
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()

	keys, err := s.keysAfter(ctx, pageToken)
	if err != nil {
		return nil, "", err
	}
	page := make([]*pb.Tenant, 0, min(size, len(keys)))
	i := 0
	for ; i < len(keys) && len(page) < size; i++ {
		t, _, err := s.get(ctx, keys[i])
		if status.Is(err, pb.ErrorCode_TENANT_NOT_FOUND) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		page = append(page, t)
	}
	next := ""
	if i < len(keys) && len(page) > 0 {
		next = page[len(page)-1].GetTenantId()
	}
	return page, next, nil
}

// keysAfter returns the live keys greater than after, sorted and without
// duplicates (the lister may repeat a key that is written during the
// listing).
func (s *Store) keysAfter(ctx context.Context, after string) ([]string, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, unavailable(err, "list tenants")
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	// The lister closes the channel when the listing is complete or ctx
	// ends; only ctx tells the two apart.
	for k := range lister.Keys() {
		if k > after {
			keys = append(keys, k)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, unavailable(err, "list tenants")
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

func encode(t *pb.Tenant) ([]byte, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_INTERNAL, err, "encode tenant %q", t.GetTenantId())
	}
	return data, nil
}

func versionConflict(id string, stored, proposed uint64) error {
	return status.Errorf(pb.ErrorCode_VERSION_CONFLICT,
		"tenant %q is at version %d; an update to version %d must be based on version %d; re-read it and retry",
		id, stored, proposed, proposed-1)
}

// unavailable classifies a failure to talk to NATS (or a deadline that ran
// out while doing so). The cause stays attached for errors.Is.
func unavailable(err error, format string, args ...any) error {
	return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, format, args...)
}

// Ping reports whether the bucket answers (readiness).
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	if _, err := s.kv.Status(ctx); err != nil {
		return unavailable(err, "tenants bucket status")
	}
	return nil
}
