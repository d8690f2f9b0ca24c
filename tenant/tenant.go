// Package tenant is the tenant model: defaults, bounds, validation, the
// create/update transitions, and the Store interface every metadata backend
// (JetStream KV by default, PostgreSQL in production) implements.
//
// The bounds below are the single source of truth for what a tenant record may
// hold. A PostgreSQL schema's CHECK constraints are to be generated from (or
// tested against) these constants, so the API and the database can never
// disagree about the range again (upstream accepted RF 1..10 in the API and
// 1..5 in the database, turning RF 6..10 into INTERNAL errors).
package tenant

import (
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Conflict policies (DESIGN §5).
const (
	// PolicySiblings keeps every concurrent value; a write is never dropped.
	PolicySiblings = "siblings"
	// PolicyLastWriteWins keeps one winner by (timestamp, actor).
	PolicyLastWriteWins = "last_write_wins"
)

// Defaults applied by FromCreate to fields left at their zero value.
const (
	DefaultReplicationFactor = 3
	DefaultConsistency       = "quorum"
	DefaultConflictPolicy    = PolicySiblings
	DefaultMaxSiblings       = 16
	DefaultMaxValueBytes     = 1 << 20 // 1 MiB
)

// Bounds, inclusive. Kept in one place: validation, the API documentation and
// any SQL schema derive from these.
const (
	// MinReplicationFactor and MaxReplicationFactor bound N. Seven replicas
	// is already beyond any sensible Dynamo-style deployment; the cap keeps
	// fan-outs and quorum sizes small.
	MinReplicationFactor = 1
	MaxReplicationFactor = 7
	// MinMaxSiblings and MaxMaxSiblings bound the per-key sibling cap.
	MinMaxSiblings = 1
	MaxMaxSiblings = 1000
	// MaxRate bounds reads_per_second and writes_per_second; 0, their
	// default, means no limit.
	MaxRate = 1_000_000
	// MinMaxValueBytes and MaxMaxValueBytes bound the per-value size limit.
	// 4 MiB stays under the embedded server's 8 MiB max payload even when a
	// value travels base64-encoded in JSON.
	MinMaxValueBytes = 1
	MaxMaxValueBytes = 4 << 20
)

// Paging of Store.List.
const (
	// DefaultPageSize is used when the caller asks for pageSize <= 0.
	DefaultPageSize = 100
	// MaxPageSize caps one page, so one List call stays one bounded reply.
	MaxPageSize = 1000
)

// FromCreate builds a new tenant record (version 1) from a create request:
// zero fields take the defaults, text fields are normalised to lower case,
// and the result is validated.
func FromCreate(req *pb.CreateTenantRequest, now time.Time) (*pb.Tenant, error) {
	if req == nil {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "create tenant: request is empty")
	}
	ts := timestamp(now)
	t := &pb.Tenant{
		TenantId:           req.GetTenantId(),
		ReplicationFactor:  req.GetReplicationFactor(),
		DefaultConsistency: normalize(req.GetDefaultConsistency()),
		ConflictPolicy:     normalize(req.GetConflictPolicy()),
		MaxSiblings:        req.GetMaxSiblings(),
		MaxValueBytes:      req.GetMaxValueBytes(),
		ReadsPerSecond:     req.GetReadsPerSecond(),
		WritesPerSecond:    req.GetWritesPerSecond(),
		CreatedAt:          ts,
		UpdatedAt:          proto.Clone(ts).(*timestamppb.Timestamp),
		Version:            1,
	}
	if t.ReplicationFactor == 0 {
		t.ReplicationFactor = DefaultReplicationFactor
	}
	if t.DefaultConsistency == "" {
		t.DefaultConsistency = DefaultConsistency
	}
	if t.ConflictPolicy == "" {
		t.ConflictPolicy = DefaultConflictPolicy
	}
	if t.MaxSiblings == 0 {
		t.MaxSiblings = DefaultMaxSiblings
	}
	if t.MaxValueBytes == 0 {
		t.MaxValueBytes = DefaultMaxValueBytes
	}
	if err := Validate(t); err != nil {
		return nil, err
	}
	return t, nil
}

// ApplyUpdate returns a new record: a copy of t with the fields set in req
// changed, version+1 and updated_at = now. t is never modified: upstream
// changed its cached record in place before the database write, so a failed
// update left a wrong value cached. A non-zero req.ExpectedVersion that
// differs from t's version is VERSION_CONFLICT; the store's own
// compare-and-swap still guards the race between this check and the write.
func ApplyUpdate(t *pb.Tenant, req *pb.UpdateTenantRequest, now time.Time) (*pb.Tenant, error) {
	if t == nil || req == nil {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "update tenant: record or request is empty")
	}
	if req.GetTenantId() != t.GetTenantId() {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"update tenant: request is for tenant %q but the record is %q", req.GetTenantId(), t.GetTenantId())
	}
	if ev := req.GetExpectedVersion(); ev != 0 && ev != t.GetVersion() {
		return nil, status.Errorf(pb.ErrorCode_VERSION_CONFLICT,
			"tenant %q is at version %d, not the expected %d; re-read it and retry", t.GetTenantId(), t.GetVersion(), ev)
	}
	n := proto.Clone(t).(*pb.Tenant)
	if req.ReplicationFactor != nil {
		n.ReplicationFactor = req.GetReplicationFactor()
	}
	if req.DefaultConsistency != nil {
		n.DefaultConsistency = normalize(req.GetDefaultConsistency())
	}
	if req.ConflictPolicy != nil {
		n.ConflictPolicy = normalize(req.GetConflictPolicy())
	}
	if req.MaxSiblings != nil {
		n.MaxSiblings = req.GetMaxSiblings()
	}
	if req.MaxValueBytes != nil {
		n.MaxValueBytes = req.GetMaxValueBytes()
	}
	if req.ReadsPerSecond != nil {
		n.ReadsPerSecond = req.GetReadsPerSecond()
	}
	if req.WritesPerSecond != nil {
		n.WritesPerSecond = req.GetWritesPerSecond()
	}
	n.Version = t.GetVersion() + 1
	n.UpdatedAt = timestamp(now)
	if err := Validate(n); err != nil {
		return nil, err
	}
	return n, nil
}

// Validate checks a complete, stored-form record: every field within bounds,
// text fields in canonical lower case, version >= 1, both timestamps set.
// A bad replication factor is INVALID_REPLICATION_FACTOR, anything else
// INVALID_ARGUMENT.
func Validate(t *pb.Tenant) error {
	if t == nil {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenant record is empty")
	}
	if err := keyspace.ValidateTenantID(t.GetTenantId()); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant")
	}
	id := t.GetTenantId()
	if err := CheckReplicationFactor(t.GetReplicationFactor()); err != nil {
		return inTenant(id, err)
	}
	lvl, err := quorum.ParseLevel(t.GetDefaultConsistency())
	if err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "tenant %q: default consistency", id)
	}
	if t.GetDefaultConsistency() != lvl.String() {
		// Stored lower-case so that stores, caches and comparisons never see
		// two spellings of one level.
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"tenant %q: default consistency must be stored as %q, got %q", id, lvl.String(), t.GetDefaultConsistency())
	}
	switch t.GetConflictPolicy() {
	case PolicySiblings, PolicyLastWriteWins:
	default:
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"tenant %q: conflict policy must be %q or %q, got %q", id, PolicySiblings, PolicyLastWriteWins, t.GetConflictPolicy())
	}
	if err := CheckMaxSiblings(t.GetMaxSiblings()); err != nil {
		return inTenant(id, err)
	}
	if err := CheckMaxValueBytes(t.GetMaxValueBytes()); err != nil {
		return inTenant(id, err)
	}
	if err := CheckRate("reads", t.GetReadsPerSecond()); err != nil {
		return inTenant(id, err)
	}
	if err := CheckRate("writes", t.GetWritesPerSecond()); err != nil {
		return inTenant(id, err)
	}
	if t.GetVersion() < 1 {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenant %q: version must be at least 1", id)
	}
	if t.GetCreatedAt() == nil || t.GetUpdatedAt() == nil {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenant %q: created_at and updated_at must be set", id)
	}
	if err := t.GetCreatedAt().CheckValid(); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "tenant %q: created_at", id)
	}
	if err := t.GetUpdatedAt().CheckValid(); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "tenant %q: updated_at", id)
	}
	return nil
}

// CheckReplicationFactor checks a replication factor against the bounds
// (INVALID_REPLICATION_FACTOR). Validate, the coordinator's create and
// update, and the CLI's flags all use it, so each says the same thing.
func CheckReplicationFactor(rf uint32) error {
	if rf < MinReplicationFactor || rf > MaxReplicationFactor {
		return status.Errorf(pb.ErrorCode_INVALID_REPLICATION_FACTOR,
			"replication factor must be between %d and %d, got %d", MinReplicationFactor, MaxReplicationFactor, rf)
	}
	return nil
}

// CheckMaxSiblings checks a sibling cap against the bounds.
func CheckMaxSiblings(n uint32) error {
	if n < MinMaxSiblings || n > MaxMaxSiblings {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"max siblings must be between %d and %d, got %d", MinMaxSiblings, MaxMaxSiblings, n)
	}
	return nil
}

// CheckMaxValueBytes checks a value size limit against the bounds.
func CheckMaxValueBytes(n uint64) error {
	if n < MinMaxValueBytes || n > MaxMaxValueBytes {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"max value bytes must be between %d and %d (4 MiB), got %d", MinMaxValueBytes, MaxMaxValueBytes, n)
	}
	return nil
}

// CheckRate checks a per-second rate limit (0: none) against the bound.
func CheckRate(what string, n uint32) error {
	if n > MaxRate {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"%s per second must be at most %d (0 means no limit), got %d", what, MaxRate, n)
	}
	return nil
}

// inTenant names the tenant in a check's error, keeping its code.
func inTenant(id string, err error) error {
	return status.Errorf(status.CodeOf(err), "tenant %q: %s", id, status.ToProto(err).GetMessage())
}

// Level is the tenant's default consistency level. For a record that passed
// Validate it cannot fail; an unparsable value (a record that skipped
// validation) falls back to quorum, the safe middle that neither weakens
// durability to ONE nor fails every request as ALL would when a node is down.
func Level(t *pb.Tenant) quorum.Level {
	lvl, err := quorum.ParseLevel(t.GetDefaultConsistency())
	if err != nil {
		return quorum.Quorum
	}
	return lvl
}

// PageSize turns a requested List page size into the one a store uses:
// <= 0 means DefaultPageSize, anything above MaxPageSize is capped.
func PageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

// CheckPageToken accepts "" (first page) or a token a store handed out (the
// last tenant id of the previous page). Anything else is INVALID_ARGUMENT,
// so a garbled token fails loudly instead of silently restarting the list.
func CheckPageToken(token string) error {
	if token == "" {
		return nil
	}
	if err := keyspace.ValidateTenantID(token); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid page token")
	}
	return nil
}

// CheckID validates a tenant id passed to Get or Delete.
func CheckID(id string) error {
	if err := keyspace.ValidateTenantID(id); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant")
	}
	return nil
}

// timestamp truncates to microseconds: PostgreSQL timestamptz keeps
// microseconds, so truncating here means every store returns exactly the
// record it was given and the conformance suite can compare with proto.Equal.
func timestamp(now time.Time) *timestamppb.Timestamp {
	return timestamppb.New(now.UTC().Truncate(time.Microsecond))
}

func normalize(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
