package tenant

import (
	"context"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Store persists tenant records. Implementations: jetstream/tenantkv (the
// zero-setup default) and, later, a PostgreSQL store; both must pass the
// conformance suite in tenant/tenanttest.
//
// Concurrency contract: every method is safe for concurrent use by any
// number of goroutines and processes (coordinators are stateless and many
// share one store). Every method honours ctx: it returns no later than ctx's
// deadline (or a store default when ctx has none) with an error that wraps
// the context error. Methods never block on each other except through the
// backend's own atomic operations.
//
// Ownership: a record passed in is not retained (the store encodes it before
// returning), and every record returned is a fresh value the caller owns and
// may modify without affecting the store or other callers.
//
// Errors are bus typed errors: INVALID_ARGUMENT / INVALID_REPLICATION_FACTOR
// for a record that fails Validate or a malformed id or page token,
// TENANT_EXISTS, TENANT_NOT_FOUND and VERSION_CONFLICT as documented per
// method, UNAVAILABLE when the backend cannot be reached (the cause stays
// attached), INTERNAL for a stored record that cannot be decoded.
type Store interface {
	// Create stores a new record (normally from FromCreate). TENANT_EXISTS if
	// a tenant with that id is present. A previously deleted id may be
	// created again.
	Create(ctx context.Context, t *pb.Tenant) error
	// Get returns the record. TENANT_NOT_FOUND if absent or deleted.
	Get(ctx context.Context, id string) (*pb.Tenant, error)
	// Update replaces the record if its stored version equals t.Version-1
	// (optimistic concurrency: of concurrent updates from the same version
	// exactly one wins); VERSION_CONFLICT otherwise; TENANT_NOT_FOUND if
	// absent.
	Update(ctx context.Context, t *pb.Tenant) error
	// List returns one page of tenants ordered by tenant id, and the token
	// of the next page ("" after the last page). The token is the last id
	// of the page; callers treat it as opaque. pageSize <= 0 means
	// DefaultPageSize; it is capped at MaxPageSize (see PageSize). A list
	// is not a snapshot: tenants created or deleted while paging may or may
	// not appear.
	List(ctx context.Context, pageSize int, pageToken string) ([]*pb.Tenant, string, error)
	// Delete removes the record. TENANT_NOT_FOUND if absent. Of concurrent
	// deletes of one tenant exactly one succeeds.
	Delete(ctx context.Context, id string) error
}
