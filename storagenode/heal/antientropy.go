package heal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Anti-entropy (DESIGN.md §5, issue 5 item 4). One goroutine per node,
// owned by the node and stopped by Stop, runs rounds one at a time: every
// Interval (jittered), and on demand through the repair endpoint (Repair).
//
// A round walks every (tenant, arc of the current ring) this node
// replicates and, for each arc, compares its digest with every other
// current replica's. Where they differ it narrows down: the arc is split
// aeFanout ways and the sub-arcs' digests are compared (one request per
// peer and level, served by the digests endpoint), recursively, until a
// sub-arc holds at most aeLeafKeys keys. A differing leaf is reconciled
// key by key: the peer's objects are pulled with scan and merged here in
// one batch; then every object the peer lacks or holds an older version of
// is pushed to it with merge requests. Every replica runs the same rounds,
// so pushing is not needed for convergence, but it halves the time to heal
// and makes one on-demand round on one node fix both sides.
//
// Digests and pulls count purge-eligible tombstones (see tombstones.go) as
// absent, and such a tombstone is never pushed to a replica that lacks it,
// so replicas that purge at slightly different times do not copy them back
// and forth. It is still pulled into, and pushed to, a replica that holds
// an older version of the key: that is how a replica that missed a delete
// gets the tombstone. When every current replica of an arc answered and
// all digests match (after repair, if any), the node purges its eligible
// tombstones in the arc.
//
// Rounds skip while a membership change runs (transfers own the data then)
// and stop at the first sign the ring moved. Work is paced at Rate keys per
// second and only one arc is in flight, so client traffic keeps the node's
// capacity.

const (
	// aeFanout is how many sub-arcs one narrowing step compares.
	aeFanout = 16
	// aeLeafKeys is the size at which a differing sub-arc is reconciled
	// key by key instead of split again.
	aeLeafKeys = 256
	// aeMaxDepth bounds narrowing: 16 steps of 16 reach single hashes.
	aeMaxDepth = 16
	// aePushers bounds the merge requests one leaf has in flight.
	aePushers = 8
	// aeQueueMax bounds the on-demand rounds waiting to run.
	aeQueueMax = 16
	// aeKeepRounds is how many on-demand rounds stay pollable.
	aeKeepRounds = 64
	// aeRetries is how often a round starts over when the ring moves
	// under it before it gives up until the next round.
	aeRetries = 3
)

// Round states as RepairStatus reports them.
const (
	roundQueued  = "queued"
	roundRunning = "running"
	roundDone    = "done"
	roundFailed  = "failed"
	roundSkipped = "skipped"
)

// Round outcomes in pairdb_antientropy_rounds_total.
const (
	aeOK      = "ok"      // every arc compared with every replica
	aePartial = "partial" // some replica could not be reached; its arcs wait for the next round
	aeFailed  = "failed"  // a local error, or the ring moved mid-round
	aeSkipped = "skipped" // a membership change runs
)

var errChangeRunning = errors.New("a membership change is running; anti-entropy waits for it to finish")

// AntiEntropyConfig is what the anti-entropy worker is built from. Every
// field is required.
type AntiEntropyConfig struct {
	// ID is this node's id.
	ID string
	// Interval is the time between scheduled rounds (jittered).
	Interval time.Duration
	// Rate paces the work in keys per second.
	Rate int
	// EpochWait bounds the wait for the next fold after the ring moved
	// under a round.
	EpochWait time.Duration
	// PageSize is the number of keys per scan page.
	PageSize int

	Engine  Engine
	Store   Store
	Ring    Ring
	Request Request
	// Placement is the shared side of the node's placement lock
	// (RWMutex.RLocker), held around local merges and purges so a range
	// cleanup or a gain (which take it exclusively) cannot interleave.
	Placement sync.Locker
	Logger    *zap.Logger
	Metrics   *Metrics
}

// AntiEntropy is the node's anti-entropy worker. Its exported surface is
// the repair endpoint (Repair), which may be called from any goroutine
// once NewAntiEntropy returned, before Start and after Stop too; everything
// else runs on the worker goroutine.
type AntiEntropy struct {
	cfg  AntiEntropyConfig
	log  *zap.Logger
	met  *aeMetrics
	pace *pacer
	kick chan struct{}

	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	queue  []*round
	rounds map[string]*round // on-demand rounds, pollable by id
	order  []string          // their ids, oldest first
}

// round is one anti-entropy round; its status is read by pollers while the
// worker updates it.
type round struct {
	mu     sync.Mutex
	status *pb.RepairStatus
}

func (r *round) update(f func(s *pb.RepairStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r.status)
}

func (r *round) snapshot() *pb.RepairStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proto.CloneOf(r.status)
}

// NewAntiEntropy builds the worker; it runs rounds from Start on, and
// queues the on-demand ones asked for before.
func NewAntiEntropy(cfg AntiEntropyConfig) *AntiEntropy {
	return &AntiEntropy{
		cfg:    cfg,
		log:    cfg.Logger,
		met:    newAEMetrics(cfg.Metrics.set, cfg.Metrics.node),
		pace:   newPacer(float64(cfg.Rate)),
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		rounds: map[string]*round{},
	}
}

// Start runs the worker until Stop.
func (ae *AntiEntropy) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	ae.cancel = cancel
	go ae.run(ctx)
}

// Stop cancels the worker and waits for it; a round in progress stops at
// its next request or pacing wait. Without Start it does nothing.
func (ae *AntiEntropy) Stop() {
	if ae.cancel == nil {
		return
	}
	ae.cancel()
	<-ae.done
}

func (ae *AntiEntropy) run(ctx context.Context) {
	defer close(ae.done)
	every := ae.cfg.Interval
	// The first round comes after half to one interval, so nodes started
	// together do not all compare at once.
	timer := time.NewTimer(every/2 + mrand.N(every/2+1))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			ae.abandonQueued()
			return
		case <-timer.C:
			ae.runRound(ctx, newRound(ae.cfg.ID, ""))
			timer.Reset(every)
		case <-ae.kick:
		}
		for r := ae.dequeue(); r != nil && ctx.Err() == nil; r = ae.dequeue() {
			ae.runRound(ctx, r)
		}
	}
}

func newRound(node, tenant string) *round {
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := "repair-" + node + "-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
	return &round{status: &pb.RepairStatus{RoundId: id, NodeId: node, TenantId: tenant, State: roundQueued}}
}

// enqueue queues an on-demand round; a full queue is UNAVAILABLE.
func (ae *AntiEntropy) enqueue(tenant string) (*round, error) {
	ae.mu.Lock()
	defer ae.mu.Unlock()
	if len(ae.queue) >= aeQueueMax {
		return nil, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"node %s already has %d repair rounds queued; poll them and retry later", ae.cfg.ID, len(ae.queue))
	}
	r := newRound(ae.cfg.ID, tenant)
	id := r.status.GetRoundId()
	ae.queue = append(ae.queue, r)
	ae.rounds[id] = r
	ae.order = append(ae.order, id)
	if len(ae.order) > aeKeepRounds {
		delete(ae.rounds, ae.order[0])
		ae.order = ae.order[1:]
	}
	select {
	case ae.kick <- struct{}{}:
	default:
	}
	return r, nil
}

func (ae *AntiEntropy) dequeue() *round {
	ae.mu.Lock()
	defer ae.mu.Unlock()
	if len(ae.queue) == 0 {
		return nil
	}
	r := ae.queue[0]
	ae.queue = ae.queue[1:]
	return r
}

func (ae *AntiEntropy) status(id string) (*pb.RepairStatus, bool) {
	ae.mu.Lock()
	r, ok := ae.rounds[id]
	ae.mu.Unlock()
	if !ok {
		return nil, false
	}
	return r.snapshot(), true
}

// abandonQueued marks rounds that will never run, for pollers racing the
// node's shutdown.
func (ae *AntiEntropy) abandonQueued() {
	for r := ae.dequeue(); r != nil; r = ae.dequeue() {
		r.update(func(s *pb.RepairStatus) {
			s.State, s.Error, s.EndedAtMs = roundFailed, "the node stopped before the round ran", time.Now().UnixMilli()
		})
	}
}

// Repair serves the repair endpoint: queue a round (answering at once with
// its id), or report the state of a round by id.
func (ae *AntiEntropy) Repair(req *pb.RepairRequest) (*pb.RepairResponse, error) {
	if id := req.GetRoundId(); id != "" {
		st, ok := ae.status(id)
		if !ok {
			return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"node %s has no repair round %q (it remembers its last %d, until it restarts)", ae.cfg.ID, id, aeKeepRounds)
		}
		return &pb.RepairResponse{Status: st}, nil
	}
	if t := req.GetTenantId(); t != "" {
		if err := keyspace.ValidateTenantID(t); err != nil {
			return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant_id")
		}
	}
	r, err := ae.enqueue(req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return &pb.RepairResponse{Status: r.snapshot()}, nil
}
