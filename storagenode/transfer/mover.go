// Package transfer moves data onto a storage node when the ring changes
// (DESIGN.md §7): the ranges the node gains in a membership change, every
// range it replicates when it lost its data (refill), and the deletion of
// the ranges it no longer replicates (cleanup). The node's membership
// driver calls Mover.Reconcile on every fold of the ring log; everything a
// Mover does is driven by durable state (the ring log and the checkpoints
// it keeps in the engine's metadata), so a restart resumes rather than
// forgets.
//
// The package does not know the node: it is given the engine operations,
// the node's merge path, the ring log and a request function as the small
// interfaces below.
package transfer

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode/engine"
)

const (
	// adminTimeout bounds one request the node makes of the ring log's
	// coordinators (progress, TransferDone, RefillDone).
	adminTimeout = 10 * time.Second
	// peerTimeout bounds one scan or digest request.
	peerTimeout = 30 * time.Second
)

// ErrPlacementMoved says the ring changed under the work, which is
// recomputed on the next fold: not a failure.
var ErrPlacementMoved = errors.New("the ring changed; the work is recomputed")

// Engine is what a Mover needs of the node's engine (*engine.Engine):
// metadata for checkpoints, digests, the tenants stored and range deletion.
// Its methods may be called from any goroutine.
type Engine interface {
	Incarnation() string
	GetMeta(name string) (value []byte, found bool, err error)
	PutMeta(name string, value []byte) error
	DeleteMetaPrefix(prefix string) error
	Digest(tenant string, a ring.Arc) ([]byte, uint64, error)
	Tenants() ([]string, error)
	DeleteArc(tenant string, a ring.Arc) (uint64, error)
}

// Store is the node's merge path for data that arrives without a request
// of its own: pulled pages go through the same tenant, policy and actor
// checks as a merge request. Its methods may be called from any goroutine;
// none may be called with the placement lock held.
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

// RingLog is the ring log as a Mover reads it and the requests it makes of
// it (storagenode.Membership implements it).
type RingLog interface {
	// State is the latest fold (immutable).
	State() *membership.State
	// ReportTransferDone has done appended if the log's last sequence is
	// still expectedSeq and returns its sequence; VERSION_CONFLICT if not.
	ReportTransferDone(ctx context.Context, expectedSeq uint64, incarnation string, done *pb.TransferDone) (uint64, error)
	// ReportRefilled has RefillDone recorded for (id, incarnation) on the
	// fold at basisSeq; VERSION_CONFLICT when data moved since.
	ReportRefilled(ctx context.Context, id, incarnation string, basisSeq, keys uint64) (uint64, error)
	// WaitFor blocks until the fold has reached seq.
	WaitFor(ctx context.Context, seq uint64) error
	// PublishProgress records a target's transfer progress.
	PublishProgress(ctx context.Context, p *pb.MigrationProgress) error
}

// Request sends req to endpoint op of node and decodes the answer into
// resp. It returns when ctx ends.
type Request func(ctx context.Context, node, op string, req, resp proto.Message) error

// Config is what a Mover is built from. Every field is required except
// PageHook.
type Config struct {
	// ID is this node's id.
	ID string
	// PageSize is the number of keys one scan page asks for.
	PageSize int
	// CleanupGrace is how long after a cutover the ranges the node lost
	// are kept (requests routed on the old ring still find them).
	CleanupGrace time.Duration

	Engine  Engine
	Store   Store
	Ring    RingLog
	Request Request
	// Placement is the node's placement lock, taken exclusively around
	// each range deletion: writes hold it shared, so one routed on a newer
	// ring is never deleted.
	Placement sync.Locker
	// Prepare readies the node's storage for st: it clears the arcs the
	// node gains in st's change, once per change, before anything is
	// pulled into them.
	Prepare func(st *membership.State) error
	Logger  *zap.Logger
	Metrics *Metrics
	// PageHook, set by tests only, runs before every page pulled (page
	// counts from 0 within one pass over one range).
	PageHook func(ctx context.Context, page int)
}

// Mover does this node's part of data movement. It is not safe for
// concurrent use: one goroutine (the node's membership driver) calls
// Reconcile, and every wait inside it ends with the context passed in.
type Mover struct {
	cfg Config
	log *zap.Logger
	met *Metrics

	// cleanup bookkeeping: the epoch of the last cutover this node folded
	// (epoch moved while no change ran), when it saw it, and whether that
	// epoch's cleanup finished.
	cutoverEpoch uint64
	cutoverAt    time.Time
	cleaned      bool

	// totals caches the keys a migration moves to this node (sum of the
	// sources' digest key counts), keyed by migration id and epoch.
	totals map[string]uint64
}

// New returns a Mover that has done nothing yet.
func New(cfg Config) *Mover {
	return &Mover{cfg: cfg, log: cfg.Logger, met: cfg.Metrics, totals: map[string]uint64{}}
}

// Reconcile does the data movement st asks of this node, if any:
//
//   - refilling (it came back with an empty disk under a known id): pull
//     every (tenant, arc) it replicates, verify, report RefillDone
//     (refill.go);
//   - a change runs and this node is a target that has not reported: pull
//     every (tenant, arc) it gains, verify, report TransferDone;
//   - NORMAL, no change, CleanupGrace after the last cutover: delete the
//     ranges it no longer replicates (cleanup.go).
//
// An error wrapping ErrPlacementMoved means st is outdated, not that the
// work failed.
func (m *Mover) Reconcile(ctx context.Context, st *membership.State) error {
	me := st.Nodes[m.cfg.ID]
	if st.Change == nil && st.Epoch != m.cutoverEpoch {
		m.cutoverEpoch, m.cutoverAt, m.cleaned = st.Epoch, time.Now(), false
		clear(m.totals)
		// No change runs: every transfer checkpoint is obsolete.
		if err := m.cfg.Engine.DeleteMetaPrefix(checkpointPrefix); err != nil {
			return errors.Wrap(err, "drop finished transfer checkpoints")
		}
	}
	switch {
	case me.Refilling:
		// First: until it is refilled, reads skip this node.
		return m.refill(ctx, st)
	case st.Change != nil:
		c := st.Change
		if _, done := c.Done[m.cfg.ID]; c.Targets[m.cfg.ID] && !done {
			return m.transfer(ctx, st)
		}
	case me.State == membership.Normal && !m.cleaned && time.Since(m.cutoverAt) >= m.cfg.CleanupGrace:
		return m.cleanup(ctx, st)
	}
	return nil
}
