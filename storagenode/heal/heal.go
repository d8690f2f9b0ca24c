// Package heal brings a storage node's replicas back into agreement after
// failures (README "How the store heals", DESIGN.md §5, §7): hint replay
// merges the writes a node missed while it was away (hints.go), and
// anti-entropy compares the arcs it replicates with their other replicas,
// repairs what differs and collects tombstones every replica agrees on
// (antientropy*.go, tombstones.go).
//
// The package does not know the node: it is given the engine operations,
// the node's merge path, the ring log and a request function as the small
// interfaces below, and never imports storagenode.
package heal

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// peerTimeout bounds one request to another replica.
const peerTimeout = 30 * time.Second

// errPlacementMoved says the ring moved under a round, which starts over.
var errPlacementMoved = errors.New("the ring changed; the work is recomputed")

// Store is the node's merge path for data that arrives without a request
// of its own: hints and pulled objects go through the same tenant, policy
// and actor checks as a merge request. Its methods may be called from any
// goroutine; LocalTenant must not be called with the placement lock held.
type Store interface {
	// LocalTenant settles the node's data of tenant to its live
	// incarnation and returns it (0 when the ring log does not know the
	// tenant), or gone when the tenant was deleted.
	LocalTenant(tenant string) (inc uint64, gone bool, err error)
	// PolicyOf is tenant's conflict policy as the ring log says, or sent
	// when the log does not know the tenant.
	PolicyOf(tenant string, sent pb.ConflictPolicy) pb.ConflictPolicy
	// MergeBatch merges items into tenant's data and returns how many keys
	// changed.
	MergeBatch(tenant string, items []engine.MergeItem, p dvv.Policy) (changed int, err error)
}

// Ring is the ring log as the node follows it (storagenode.Membership
// implements it). Its methods may be called from any goroutine.
type Ring interface {
	// State is the latest fold (immutable).
	State() *membership.State
	// Changed returns a channel closed at the next folded event.
	Changed() <-chan struct{}
}

// Engine is what anti-entropy needs of the node's engine (*engine.Engine):
// digests and scans of arcs, the tenants stored, and the tombstone purge.
// Its methods may be called from any goroutine.
type Engine interface {
	Tenants() ([]string, error)
	DigestArcs(tenant string, arcs []ring.Arc, tombstonesBefore int64) ([]engine.ArcDigest, error)
	Scan(tenant string, a ring.Arc, after *engine.Position, limit int, withValues bool) ([]engine.Item, bool, error)
	PurgeTombstones(tenant string, a ring.Arc, tombstonesBefore int64) (uint64, error)
}

// Request sends req to endpoint op of node and decodes the answer into
// resp. It returns when ctx ends.
type Request func(ctx context.Context, node, op string, req, resp proto.Message) error

// validateTarget checks a hint's tenant and key as the node checks a
// request's.
func validateTarget(tenant, key string) error {
	if err := keyspace.ValidateTarget(tenant, key); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad request")
	}
	return nil
}
