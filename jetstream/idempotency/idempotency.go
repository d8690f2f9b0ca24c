// Package idempotency makes retried writes apply once. Records live in a
// JetStream KV bucket with a TTL, one per (tenant, idempotency key).
//
// Protocol (DESIGN §6):
//
//  1. Begin claims the key by creating a PENDING record with the request hash
//     and the storage node chosen to mint the write (create-if-absent, atomic
//     at the stream leader, so of any number of concurrent coordinators
//     exactly one claims it). The minter changes only through Reassign,
//     after a replica certainly refused to mint, so every later attempt of
//     the write (a retry, a takeover) knows the one replica where it may
//     have landed.
//  2. The claimer executes the write and then Completes the claim (the record
//     becomes DONE with the encoded response) or Aborts it when the write
//     failed (the record is removed, so the client's retry runs again).
//  3. A duplicate with the same hash that finds DONE gets the stored response;
//     one that finds PENDING waits for DONE or removal. A duplicate with a
//     different hash is IDEMPOTENCY_KEY_CONFLICT.
//  4. A PENDING record older than Config.PendingTimeout is presumed abandoned
//     by a crashed coordinator and is taken over (compare-and-swap on its
//     revision, so only one waiter takes it over).
//
// Scope: records are per (tenant, idempotency key), not per (tenant, data
// key, idempotency key). The request hash covers the data key, so reusing an
// idempotency key for a write to another key is IDEMPOTENCY_KEY_CONFLICT
// rather than a silent second record: an idempotency key names one logical
// request, as in most HTTP idempotency schemes. Tenants never share records:
// the tenant is part of the KV key, so two tenants may use the same
// idempotency key independently.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/jetstream/jsbucket"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

const (
	// DefaultBucket is the bucket name when Config.Bucket is empty.
	DefaultBucket = "pairdb_idempotency"
	// DefaultTTL is how long a record is kept after its last change; a
	// retry later than this runs again.
	DefaultTTL = 24 * time.Hour
	// DefaultPendingTimeout is how old a PENDING record must be before it
	// is presumed abandoned. It must exceed the longest write a
	// coordinator can be executing (its request deadline), or a slow but
	// alive coordinator's write could be executed a second time.
	DefaultPendingTimeout = 30 * time.Second
	// MaxKeyBytes bounds a client's idempotency key. The key is hashed
	// into the record's name, so the bound is about refusing abuse, not
	// about storage.
	MaxKeyBytes = 256
	// keyHashHexChars is how much of the SHA-256 of the idempotency key
	// names the record: 160 bits, so a collision between two keys of one
	// tenant is not a practical concern.
	keyHashHexChars = 40
)

// ErrClaimLost marks a Complete or Abort whose claim is no longer the
// current record: another coordinator took the PENDING record over (this
// one ran past PendingTimeout) or it expired. The write itself may well have
// succeeded; the caller should log this and still answer its client.
var ErrClaimLost = errors.New("idempotency claim lost")

// Config configures the store; the zero value gives the documented
// defaults for an embedded, single-server NATS.
type Config struct {
	// Bucket names the KV bucket; "" means DefaultBucket.
	Bucket string
	// TTL is the bucket's MaxAge; 0 means DefaultTTL.
	TTL time.Duration
	// Replicas is the bucket's replication; 0 means 1. Use 3 on a cluster.
	Replicas int
	// PendingTimeout; 0 means DefaultPendingTimeout. Age is measured from
	// the record's server-side timestamp, so every coordinator judges it
	// against one clock (the server's), up to its own clock skew, which
	// the default dwarfs.
	PendingTimeout time.Duration
	// Logger receives takeovers, lost claims and corrupt records; nil
	// discards them.
	Logger *zap.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.PendingTimeout == 0 {
		c.PendingTimeout = DefaultPendingTimeout
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	switch {
	case c.TTL < 0 || c.PendingTimeout < 0:
		return c, errors.Newf("idempotency: TTL (%s) and pending timeout (%s) must be positive", c.TTL, c.PendingTimeout)
	case c.PendingTimeout >= c.TTL:
		// A PENDING record would expire before it could be presumed
		// abandoned, which hides crashes behind silent re-execution.
		return c, errors.Newf("idempotency: pending timeout (%s) must be shorter than the TTL (%s)", c.PendingTimeout, c.TTL)
	case c.Replicas < 1 || c.Replicas > 5:
		return c, errors.Newf("idempotency: replicas must be between 1 and 5, got %d", c.Replicas)
	}
	return c, nil
}

// Store is the idempotency store. It keeps no per-request state, so it is
// safe for concurrent use; all coordination happens in the bucket.
type Store struct {
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	cfg Config
	log *zap.Logger
}

// Open creates the bucket, or updates it to cfg, and returns the store.
// History 1 (only the current state matters) and file storage (a record
// lost in a server restart would let a retry apply twice).
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	kv, err := jsbucket.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "PairDB idempotency records (key: tenant.sha256(idempotency key), value: pairdb.v1.IdempotencyRecord)",
		History:     1,
		TTL:         cfg.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "open idempotency store")
	}
	cfg.Logger.Info("idempotency store ready", zap.String("bucket", cfg.Bucket),
		zap.Duration("ttl", cfg.TTL), zap.Duration("pending_timeout", cfg.PendingTimeout), zap.Int("replicas", cfg.Replicas))
	return &Store{js: js, kv: kv, cfg: cfg, log: cfg.Logger}, nil
}

// Claim is the outcome of Begin: either a claim to execute the write
// (Done reports false; call Complete or Abort exactly once, Reassign any
// number of times before) or the stored response of an earlier execution
// (Done reports true; nothing to do). A Claim is used by one request at a
// time.
type Claim struct {
	s         *Store
	key       string // KV key
	rev       uint64 // revision of our PENDING record
	hash      []byte
	done      bool
	response  []byte
	retry     bool
	taken     bool
	minter    string
	minterInc string
}

// Minter names the storage node (and its incarnation) allowed to mint
// this write: the one proposed to Begin for a fresh claim, or the one an
// earlier attempt named.
func (c *Claim) Minter() (node, incarnation string) { return c.minter, c.minterInc }

// Retry reports whether an earlier attempt of this request failed or was
// abandoned, so it may have been applied in part: the executor must look
// for that attempt's effect before writing again.
func (c *Claim) Retry() bool { return c.retry }

// TakenOver reports whether this claim replaced a PENDING record that was
// never completed: its attempt may have been applied and even answered
// (the record is written after the answer), so an effect found is a
// duplicate to the client, not a failed attempt finished.
func (c *Claim) TakenOver() bool { return c.taken }

// Done returns the stored response and true when the request was already
// executed; the caller answers with it (duplicate=true) and writes nothing.
func (c *Claim) Done() ([]byte, bool) { return c.response, c.done }

// Begin claims (tenant, idemKey) for a request with the given hash (from
// RequestHash), proposing minter (a storage node id and incarnation) to
// mint it. It returns an executable claim, the stored response of a
// completed duplicate, IDEMPOTENCY_KEY_CONFLICT when the key was used with a
// different payload, or UNAVAILABLE when ctx ends while another coordinator
// is still executing the same request or NATS cannot be reached. A claim
// that continues an earlier attempt (Retry) keeps that attempt's minter.
func (s *Store) Begin(ctx context.Context, tenant, idemKey string, hash []byte, minter, minterInc string) (*Claim, error) {
	if err := keyspace.ValidateTenantID(tenant); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant")
	}
	if idemKey == "" || len(idemKey) > MaxKeyBytes {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"idempotency key must be 1 to %d bytes, got %d", MaxKeyBytes, len(idemKey))
	}
	if len(hash) != sha256.Size {
		return nil, status.Errorf(pb.ErrorCode_INTERNAL, "request hash must be %d bytes, got %d", sha256.Size, len(hash))
	}
	key := recordKey(tenant, idemKey)
	// The claim keeps the hash for Complete; a private copy so a caller
	// reusing its buffer cannot change what gets recorded.
	b := &beginning{s: s, key: key, hash: bytes.Clone(hash), minter: minter, minterInc: minterInc,
		log: s.log.With(zap.String("tenant", tenant), zap.String("record", key))}

	// Each pass either decides, or observes that the record changed (or
	// may be abandoned) and reads again. Every pass that loops means some
	// other party made progress or time passed, and ctx bounds the total.
	// A fresh key is the common case (clients mint one per request): try
	// to claim it before reading, which saves a round trip; a conflict
	// means someone holds it, and the loop reads what they wrote.
	if c, err := b.create(ctx); c != nil || err != nil {
		return c, err
	}
	waited := false
	for {
		if err := ctx.Err(); err != nil {
			if waited {
				return nil, inProgress(err)
			}
			return nil, unavailable(err, "begin idempotent request")
		}
		c, rev, abandonAt, err := b.step(ctx)
		switch {
		case c != nil || err != nil:
			return c, err
		case abandonAt.IsZero():
			continue // the record changed under us: read it again
		}
		waited = true
		if err := s.waitForChange(ctx, key, rev, abandonAt); err != nil {
			return nil, err
		}
	}
}

// beginning is one Begin's state.
type beginning struct {
	s                 *Store
	key               string
	hash              []byte
	minter, minterInc string
	log               *zap.Logger
}

// create claims a record that does not exist; nil and no error when
// another party holds one.
func (b *beginning) create(ctx context.Context) (*Claim, error) {
	rec, err := pending(b.hash, b.minter, b.minterInc)
	if err != nil {
		return nil, err
	}
	rev, err := b.s.kv.Create(ctx, b.key, rec)
	switch {
	case jsbucket.IsConflict(err):
		return nil, nil
	case err != nil:
		return nil, unavailable(err, "claim idempotency record")
	}
	return &Claim{s: b.s, key: b.key, rev: rev, hash: b.hash, minter: b.minter, minterInc: b.minterInc}, nil
}

// step reads the record and decides: a claim (or the recorded answer), an
// error, or nothing yet, with the revision to wait past and when the
// record counts as abandoned (zero: read again at once).
func (b *beginning) step(ctx context.Context) (c *Claim, rev uint64, abandonAt time.Time, err error) {
	e, err := b.s.kv.Get(ctx, b.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		c, err := b.create(ctx) // nil, nil: another coordinator claimed it first
		return c, 0, time.Time{}, err
	}
	if err != nil {
		return nil, 0, time.Time{}, unavailable(err, "read idempotency record")
	}
	rec := &pb.IdempotencyRecord{}
	if err := proto.Unmarshal(e.Value(), rec); err != nil {
		b.log.Error("undecodable idempotency record", zap.Uint64("revision", e.Revision()), zap.Error(err))
		return nil, 0, time.Time{}, status.Wrap(pb.ErrorCode_INTERNAL, err, "decode idempotency record %q", b.key)
	}
	if !bytes.Equal(rec.GetRequestHash(), b.hash) {
		return nil, 0, time.Time{}, status.Errorf(pb.ErrorCode_IDEMPOTENCY_KEY_CONFLICT,
			"idempotency key was already used with a different payload (operation, key, value or context); use a fresh key for a different request")
	}
	switch rec.GetState() {
	case pb.IdempotencyRecord_DONE:
		return &Claim{s: b.s, key: b.key, done: true, response: rec.GetResponse()}, 0, time.Time{}, nil
	case pb.IdempotencyRecord_RETRY:
		// A failed attempt released the record: take it at once, keeping
		// the minter that attempt named.
		c, err := b.takeOver(ctx, e, rec, false)
		return c, 0, time.Time{}, err
	case pb.IdempotencyRecord_PENDING:
	default:
		return nil, 0, time.Time{}, status.Errorf(pb.ErrorCode_INTERNAL, "idempotency record %q has state %v", b.key, rec.GetState())
	}
	abandonAt = e.Created().Add(b.s.cfg.PendingTimeout)
	if time.Now().Before(abandonAt) {
		return nil, e.Revision(), abandonAt, nil
	}
	c, err = b.takeOver(ctx, e, rec, true)
	if c != nil {
		b.log.Warn("took over an abandoned pending idempotency record; the coordinator that claimed it crashed or could not save its outcome",
			zap.Time("claimed_at", e.Created()), zap.Duration("pending_timeout", b.s.cfg.PendingTimeout))
	}
	return c, 0, time.Time{}, err
}

// takeOver claims a record another attempt left (RETRY, or PENDING past
// its timeout: abandoned), keeping the minter it names; nil and no error
// when it changed meanwhile (completed, aborted or taken over).
func (b *beginning) takeOver(ctx context.Context, e jetstream.KeyValueEntry, rec *pb.IdempotencyRecord, abandoned bool) (*Claim, error) {
	again, err := pending(b.hash, rec.GetMinter(), rec.GetMinterIncarnation())
	if err != nil {
		return nil, err
	}
	rev, err := b.s.kv.Update(ctx, b.key, again, e.Revision())
	switch {
	case jsbucket.IsConflict(err):
		return nil, nil
	case err != nil && abandoned:
		return nil, unavailable(err, "take over abandoned idempotency record")
	case err != nil:
		return nil, unavailable(err, "claim idempotency record for a retry")
	}
	return &Claim{s: b.s, key: b.key, rev: rev, hash: b.hash, retry: true, taken: abandoned,
		minter: rec.GetMinter(), minterInc: rec.GetMinterIncarnation()}, nil
}

// waitForChange blocks until the record moves past revision rev (completed,
// aborted, taken over), until abandonAt (then the caller re-reads and may
// take it over), or until ctx ends. A watch rather than polling: waiters
// wake on the change itself, and the watch delivers the current state
// first, so a change between the caller's read and the watch's start is not
// missed.
func (s *Store) waitForChange(ctx context.Context, key string, rev uint64, abandonAt time.Time) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.Watch(wctx, key)
	if err != nil {
		if ctx.Err() != nil {
			return inProgress(ctx.Err())
		}
		return unavailable(err, "watch idempotency record")
	}
	defer func() { _ = w.Stop() }()
	timer := time.NewTimer(time.Until(abandonAt))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return inProgress(ctx.Err())
		case <-timer.C:
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return unavailable(errors.New("watch closed"), "watch idempotency record")
			}
			// nil marks the end of the initial values; an entry at our
			// revision is the state we already know.
			if e != nil && e.Revision() != rev {
				return nil
			}
		}
	}
}

// Complete records the response of the executed write (state DONE), so
// duplicates get it. It fails with ErrClaimLost when the record is no longer
// ours; UNAVAILABLE when NATS cannot be reached (the record then stays
// PENDING until taken over after PendingTimeout).
func (c *Claim) Complete(ctx context.Context, response []byte) error {
	_, err := c.update(ctx, "complete", &pb.IdempotencyRecord{State: pb.IdempotencyRecord_DONE, Response: response},
		c.minter, c.minterInc, func(err error) {
			c.s.log.Warn("idempotency claim lost before completion; a duplicate may have executed the write again",
				zap.String("record", c.key), zap.Uint64("revision", c.rev), zap.Error(err))
		})
	return err
}

// Abort releases our PENDING record after a failed write: the record turns
// RETRY (keeping the request hash, so the key still refuses a different
// payload, and the minter, where the write may have landed) and the next
// attempt claims it at once, with Retry() true, because the failed attempt
// may have been applied in part. It acts only if
// the record is still ours (same revision), failing with ErrClaimLost
// otherwise. If Abort itself fails the record stays PENDING and is taken over
// after PendingTimeout. Pass a live context: when the request's own deadline
// has passed, derive one with context.WithoutCancel plus a timeout.
func (c *Claim) Abort(ctx context.Context) error {
	_, err := c.update(ctx, "abort", &pb.IdempotencyRecord{State: pb.IdempotencyRecord_RETRY}, c.minter, c.minterInc, nil)
	return err
}

// Reassign names another minter, after the named one certainly refused to
// mint (it answered a refusal, or nothing was serving it): the record is
// updated before the new minter is asked, so a crash in between leaves a
// record naming a replica that holds nothing of the write, never one that
// misses where it landed. It fails with ErrClaimLost when the record is no
// longer ours.
func (c *Claim) Reassign(ctx context.Context, minter, minterInc string) error {
	rev, err := c.update(ctx, "reassign", &pb.IdempotencyRecord{State: pb.IdempotencyRecord_PENDING}, minter, minterInc, nil)
	if err != nil {
		return err
	}
	c.rev, c.minter, c.minterInc = rev, minter, minterInc
	return nil
}

// update replaces our record with rec (stamped with the request hash, the
// time and the minter) if it is still at our revision: ErrClaimLost (and
// lost, when given, is told) when another attempt took it over.
func (c *Claim) update(ctx context.Context, op string, rec *pb.IdempotencyRecord, minter, minterInc string, lost func(error)) (uint64, error) {
	if err := c.executable(op); err != nil {
		return 0, err
	}
	rec.RequestHash, rec.CreatedUnixMs, rec.Minter, rec.MinterIncarnation = c.hash, time.Now().UnixMilli(), minter, minterInc
	data, err := marshal(rec)
	if err != nil {
		return 0, err
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	rev, err := c.s.kv.Update(ctx, c.key, data, c.rev)
	if jsbucket.IsConflict(err) {
		if lost != nil {
			lost(err)
		}
		return 0, errors.Mark(status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "%s idempotency record %q", op, c.key), ErrClaimLost)
	}
	if err != nil {
		return 0, unavailable(err, op+" idempotency record")
	}
	return rev, nil
}

func (c *Claim) executable(op string) error {
	switch {
	case c.s == nil:
		return status.Errorf(pb.ErrorCode_INTERNAL, "%s: empty idempotency claim", op)
	case c.done:
		return status.Errorf(pb.ErrorCode_INTERNAL, "%s: the request was already executed; there is nothing to %s", op, op)
	}
	return nil
}

func pending(hash []byte, minter, minterInc string) ([]byte, error) {
	return marshal(&pb.IdempotencyRecord{
		State:             pb.IdempotencyRecord_PENDING,
		RequestHash:       hash,
		CreatedUnixMs:     time.Now().UnixMilli(),
		Minter:            minter,
		MinterIncarnation: minterInc,
	})
}

// PurgeTenant removes every record of tenant, with one purge of the
// bucket's stream filtered to the tenant's keys (a deleted tenant's records
// must not answer a tenant created again under its id).
func (s *Store) PurgeTenant(ctx context.Context, tenant string) error {
	if err := keyspace.ValidateTenantID(tenant); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant")
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	st, err := s.js.Stream(ctx, "KV_"+s.cfg.Bucket)
	if err != nil {
		return unavailable(err, "find the idempotency bucket's stream")
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+s.cfg.Bucket+"."+tenant+".>")); err != nil {
		return unavailable(err, "purge tenant "+tenant+"'s idempotency records")
	}
	return nil
}

// recordKey names the record: tenant "." hex(sha256(idemKey))[:40]. Client
// keys may contain any bytes (including '.', '*', '>' and spaces that KV
// keys forbid), so the key is hashed; the tenant prefix keeps tenants apart
// and lets an operator list or purge one tenant's records by subject.
func recordKey(tenant, idemKey string) string {
	sum := sha256.Sum256([]byte(idemKey))
	return tenant + "." + hex.EncodeToString(sum[:])[:keyHashHexChars]
}

func marshal(rec *pb.IdempotencyRecord) ([]byte, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_INTERNAL, err, "encode idempotency record")
	}
	return data, nil
}

func inProgress(cause error) error {
	return status.Wrap(pb.ErrorCode_UNAVAILABLE, cause,
		"a request with the same idempotency key is still in progress; retry later")
}

func unavailable(err error, what string) error {
	return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "%s", what)
}
