package storagenode

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Anti-entropy (DESIGN.md §5, issue 5 item 4). One goroutine per node,
// owned by the Node and stopped by Stop, runs rounds one at a time: every
// AntiEntropyInterval (jittered), and on demand through the repair endpoint.
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
// and stop at the first sign the ring moved. Work is paced at
// AntiEntropyRate keys per second and only one arc is in flight, so client
// traffic keeps the node's capacity.

// Defaults of the anti-entropy settings.
const (
	DefaultAntiEntropyInterval = 10 * time.Minute
	DefaultAntiEntropyRate     = 20000
)

const (
	// opDigests and opRepair are the node subjects' last tokens.
	opDigests = bus.OpDigests
	opRepair  = bus.OpRepair

	// aeFanout is how many sub-arcs one narrowing step compares.
	aeFanout = 16
	// aeLeafKeys is the size at which a differing sub-arc is reconciled
	// key by key instead of split again.
	aeLeafKeys = 256
	// aeMaxDepth bounds narrowing: 16 steps of 16 reach single hashes.
	aeMaxDepth = 16
	// aePushers bounds the merge requests one leaf has in flight.
	aePushers = 8
	// maxDigestRanges caps the ranges of one digests request.
	maxDigestRanges = 256
	// aeQueueMax bounds the on-demand rounds waiting to run.
	aeQueueMax = 16
	// aeKeepRounds is how many on-demand rounds stay pollable.
	aeKeepRounds = 64
	// aeRetries is how often a round starts over when the ring moves
	// under it before it gives up until the next round.
	aeRetries = 3
	// peerTimeout bounds one request to a peer.
	peerTimeout = 30 * time.Second
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

// errPlacementMoved says the ring moved under a round, which starts over.
var errPlacementMoved = errors.New("the ring changed; the work is recomputed")

type aeMetrics struct {
	set      *metrics.Set
	node     string
	compared *metrics.Counter
	fixed    *metrics.Counter
	purged   *metrics.Counter
}

func newAEMetrics(set *metrics.Set, node string) *aeMetrics {
	return &aeMetrics{
		set:      set,
		node:     node,
		compared: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_antientropy_digests_compared_total{node=%q}`, node)),
		fixed:    set.GetOrCreateCounter(fmt.Sprintf(`pairdb_antientropy_keys_fixed_total{node=%q}`, node)),
		purged:   set.GetOrCreateCounter(fmt.Sprintf(`pairdb_tombstones_purged_total{node=%q}`, node)),
	}
}

func (m *aeMetrics) round(status string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`pairdb_antientropy_rounds_total{node=%q,status=%q}`, m.node, status)).Inc()
}

// antiEntropy is the node's anti-entropy worker. Its exported surface is
// the repair endpoint; enqueue and status may be called from any goroutine,
// everything else runs on the worker goroutine.
type antiEntropy struct {
	n    *Node
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

func newAntiEntropy(n *Node) *antiEntropy {
	return &antiEntropy{
		n:      n,
		met:    newAEMetrics(n.cfg.Metrics, n.cfg.ID),
		pace:   newPacer(float64(n.cfg.AntiEntropyRate)),
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		rounds: map[string]*round{},
	}
}

// start runs the worker until stop.
func (ae *antiEntropy) start() {
	ctx, cancel := context.WithCancel(context.Background())
	ae.cancel = cancel
	go ae.run(ctx)
}

// stop cancels the worker and waits for it; a round in progress stops at
// its next request or pacing wait.
func (ae *antiEntropy) stop() {
	if ae.cancel == nil {
		return
	}
	ae.cancel()
	<-ae.done
}

func (ae *antiEntropy) run(ctx context.Context) {
	defer close(ae.done)
	every := ae.n.cfg.AntiEntropyInterval
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
			ae.runRound(ctx, newRound(ae.n.cfg.ID, ""))
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
func (ae *antiEntropy) enqueue(tenant string) (*round, error) {
	ae.mu.Lock()
	defer ae.mu.Unlock()
	if len(ae.queue) >= aeQueueMax {
		return nil, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"node %s already has %d repair rounds queued; poll them and retry later", ae.n.cfg.ID, len(ae.queue))
	}
	r := newRound(ae.n.cfg.ID, tenant)
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

func (ae *antiEntropy) dequeue() *round {
	ae.mu.Lock()
	defer ae.mu.Unlock()
	if len(ae.queue) == 0 {
		return nil
	}
	r := ae.queue[0]
	ae.queue = ae.queue[1:]
	return r
}

func (ae *antiEntropy) status(id string) (*pb.RepairStatus, bool) {
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
func (ae *antiEntropy) abandonQueued() {
	for r := ae.dequeue(); r != nil; r = ae.dequeue() {
		r.update(func(s *pb.RepairStatus) {
			s.State, s.Error, s.EndedAtMs = roundFailed, "the node stopped before the round ran", time.Now().UnixMilli()
		})
	}
}

// runRound runs one round and records its outcome.
func (ae *antiEntropy) runRound(ctx context.Context, r *round) {
	start := time.Now()
	r.update(func(s *pb.RepairStatus) { s.State, s.StartedAtMs = roundRunning, start.UnixMilli() })
	partial, err := ae.round(ctx, r)
	for retry := 0; retry < aeRetries && errors.Is(err, errPlacementMoved) && ctx.Err() == nil; retry++ {
		// The ring moved under the round (a cutover, a re-registration):
		// start over on the new fold once this node has it.
		ae.awaitFold(ctx)
		r.update(func(s *pb.RepairStatus) { s.ArcsDone = 0 })
		partial, err = ae.round(ctx, r)
	}
	state, outcome := roundDone, aeOK
	switch {
	case errors.Is(err, errChangeRunning):
		state, outcome = roundSkipped, aeSkipped
	case err != nil && partial:
		state, outcome = roundFailed, aePartial
	case err != nil:
		state, outcome = roundFailed, aeFailed
	}
	ae.met.round(outcome)
	st := r.snapshot()
	r.update(func(s *pb.RepairStatus) {
		s.State, s.EndedAtMs = state, time.Now().UnixMilli()
		if err != nil {
			s.Error = err.Error()
		}
	})
	fields := []zap.Field{zap.String("round", st.GetRoundId()), zap.String("outcome", outcome),
		zap.Uint64("arcs", st.GetArcsDone()), zap.Uint64("digests_compared", st.GetDigestsCompared()),
		zap.Uint64("keys_fixed", st.GetKeysFixed()), zap.Uint64("tombstones_purged", st.GetTombstonesPurged()),
		zap.Duration("took", time.Since(start)), zap.Error(err)}
	switch {
	case ctx.Err() != nil:
	case outcome == aeFailed || outcome == aePartial:
		ae.n.log.Warn("anti-entropy round incomplete; the next round retries", fields...)
	case st.GetKeysFixed() > 0 || st.GetTombstonesPurged() > 0:
		ae.n.log.Info("anti-entropy round repaired replicas", fields...)
	default:
		ae.n.log.Debug("anti-entropy round found replicas in sync", fields...)
	}
}

// awaitFold waits, bounded, for the next ring log event this node folds:
// a peer that answered STALE_EPOCH has folded one this node has not yet.
func (ae *antiEntropy) awaitFold(ctx context.Context) {
	t := time.NewTimer(ae.n.cfg.EpochWait)
	defer t.Stop()
	select {
	case <-ae.n.mem.Changed():
	case <-t.C:
	case <-ctx.Done():
	}
}

// arcWork is one (tenant, arc) this node replicates and its other replicas.
type arcWork struct {
	tenant string
	arc    ring.Arc
	peers  []string
}

// roundCtx is what every step of one round shares.
type roundCtx struct {
	st     *membership.State
	cutoff int64 // tombstones stamped before this (Unix ms) are due
	r      *round
}

// round runs one round. partial reports that the error only concerns some
// replicas or tenants (the rest was compared).
func (ae *antiEntropy) round(ctx context.Context, r *round) (partial bool, err error) {
	n := ae.n
	st := n.mem.State()
	if st.Change != nil {
		return false, errChangeRunning
	}
	work, werr := ae.plan(ctx, st, r.snapshot().GetTenantId())
	if werr != nil && len(work) == 0 {
		return false, werr
	}
	r.update(func(s *pb.RepairStatus) { s.ArcsTotal = uint64(len(work)) })
	rc := &roundCtx{st: st, cutoff: time.Now().Add(-st.Settings.TombstoneGrace).UnixMilli(), r: r}
	errs := werr
	for _, w := range work {
		if err := ae.placementHolds(st); err != nil {
			return errs != nil, errors.CombineErrors(err, errs)
		}
		if err := ae.syncArc(ctx, rc, w); err != nil {
			if ctx.Err() != nil || errors.Is(err, errPlacementMoved) || !isPeerError(err) {
				return errs != nil, errors.CombineErrors(err, errs)
			}
			errs = errors.CombineErrors(errs, err)
		}
		r.update(func(s *pb.RepairStatus) { s.ArcsDone++ })
	}
	return errs != nil, errs
}

// placementHolds fails once the ring moved since st or a change started.
func (ae *antiEntropy) placementHolds(st *membership.State) error {
	cur := ae.n.mem.State()
	if cur.Change != nil {
		return errChangeRunning
	}
	if cur.Epoch != st.Epoch {
		return errors.Wrap(errPlacementMoved, "anti-entropy round stopped")
	}
	return nil
}

// peerError marks failures that concern one replica (unreachable, slow):
// the round goes on with the other arcs and replicas.
type peerError struct{ error }

func (e peerError) Unwrap() error { return e.error }

func isPeerError(err error) bool {
	var pe peerError
	return errors.As(err, &pe)
}

// plan lists the (tenant, arc) pairs this node replicates in st's current
// ring, with their other replicas. Tenants are those the node holds plus
// those the ring log knows (a node that lost a whole tenant must still get
// it back), or just tenant when set. Replication factors come from the ring
// log: a node needs no tenant store, and reaches none (deploy/nats).
func (ae *antiEntropy) plan(_ context.Context, st *membership.State, only string) ([]arcWork, error) {
	n := ae.n
	rfs := st.TenantRFs()
	var tenants []string
	if only != "" {
		tenants = []string{only}
	} else {
		local, err := n.eng.Tenants()
		if err != nil {
			return nil, errors.Wrap(err, "anti-entropy: list tenants")
		}
		tenants = local
		for t := range rfs {
			tenants = append(tenants, t)
		}
		slices.Sort(tenants)
		tenants = slices.Compact(tenants)
	}
	byRF := map[uint32][]arcWork{}
	var out []arcWork
	for _, t := range tenants {
		rf := rfs[t]
		if rf == 0 {
			n.log.Debug("anti-entropy skips a tenant whose replication factor is unknown", zap.String("tenant", t))
			continue
		}
		arcs, ok := byRF[rf]
		if !ok {
			arcs = replicatedArcs(st.Current(), int(rf), n.cfg.ID)
			byRF[rf] = arcs
		}
		for _, a := range arcs {
			a.tenant = t
			out = append(out, a)
		}
	}
	return out, nil
}

// replicatedArcs are the arcs of r whose first rf replicas include id, with
// the other replicas of each.
func replicatedArcs(r *ring.Ring, rf int, id string) []arcWork {
	var out []arcWork
	// Diff against no replicas at all lists every arc with its replicas.
	for _, mv := range ring.Diff(r, rf, r, 0) {
		if slices.Contains(mv.From, id) {
			peers := slices.DeleteFunc(slices.Clone(mv.From), func(p string) bool { return p == id })
			out = append(out, arcWork{arc: mv.Arc, peers: peers})
		}
	}
	return out
}

// syncArc compares one arc with its other replicas, repairs differences and
// purges due tombstones when every replica agrees.
func (ae *antiEntropy) syncArc(ctx context.Context, rc *roundCtx, w arcWork) error {
	local, err := ae.localDigests(ctx, w.tenant, []ring.Arc{w.arc}, rc.cutoff)
	if err != nil {
		return err
	}
	var (
		errs   error
		differ []string
		keys   = local[0].Keys
	)
	for _, p := range w.peers {
		remote, err := ae.remoteDigests(ctx, rc, p, w.tenant, []ring.Arc{w.arc})
		if err != nil {
			errs = errors.CombineErrors(errs, err)
			continue
		}
		if !bytes.Equal(remote[0].GetDigest(), local[0].Digest) {
			differ = append(differ, p)
			keys = max(keys, remote[0].GetKeys())
		}
	}
	if ctx.Err() != nil || (errs != nil && !isPeerError(errs)) {
		return errors.CombineErrors(ctx.Err(), errs)
	}
	if len(differ) > 0 {
		if err := ae.narrow(ctx, rc, w.tenant, w.arc, differ, keys, 0); err != nil {
			errs = errors.CombineErrors(errs, err)
		}
	}
	if errs != nil {
		// Some replica was not compared: it may still hold a value a
		// tombstone here deleted, so nothing is purged.
		return errs
	}
	return ae.purgeIfAgreed(ctx, rc, w, len(differ) == 0)
}

// narrow splits arc until the differing parts are small, then reconciles
// them with each peer whose digest differed.
func (ae *antiEntropy) narrow(ctx context.Context, rc *roundCtx, tenant string, arc ring.Arc, peers []string, keys uint64, depth int) error {
	subs := splitArc(arc, aeFanout)
	if keys <= aeLeafKeys || depth >= aeMaxDepth || subs == nil {
		var errs error
		for _, p := range peers {
			if err := ae.reconcileLeaf(ctx, rc, tenant, arc, p); err != nil {
				if !isPeerError(err) {
					return errors.CombineErrors(err, errs)
				}
				errs = errors.CombineErrors(errs, err)
			}
		}
		return errs
	}
	local, err := ae.localDigests(ctx, tenant, subs, rc.cutoff)
	if err != nil {
		return err
	}
	differ := make([][]string, len(subs))
	subKeys := make([]uint64, len(subs))
	var errs error
	for _, p := range peers {
		remote, err := ae.remoteDigests(ctx, rc, p, tenant, subs)
		if err != nil {
			if !isPeerError(err) {
				return err
			}
			errs = errors.CombineErrors(errs, err)
			continue
		}
		for i := range subs {
			if !bytes.Equal(remote[i].GetDigest(), local[i].Digest) {
				differ[i] = append(differ[i], p)
				subKeys[i] = max(subKeys[i], local[i].Keys, remote[i].GetKeys())
			}
		}
	}
	for i, sub := range subs {
		if len(differ[i]) == 0 {
			continue
		}
		if err := ae.narrow(ctx, rc, tenant, sub, differ[i], subKeys[i], depth+1); err != nil {
			if !isPeerError(err) {
				return errors.CombineErrors(err, errs)
			}
			errs = errors.CombineErrors(errs, err)
		}
	}
	return errs
}

// splitArc cuts a into k consecutive sub-arcs of (nearly) equal width, in
// ring order starting after a.Start; nil when a is too narrow to split.
func splitArc(a ring.Arc, k int) []ring.Arc {
	width := a.End - a.Start // modulo 2^64; 0 is the whole ring
	step := width / uint64(k)
	if width == 0 {
		step = (^uint64(0))/uint64(k) + 1
	}
	if step == 0 {
		return nil
	}
	out := make([]ring.Arc, 0, k)
	start := a.Start
	for i := 0; i < k-1; i++ {
		end := start + step
		out = append(out, ring.Arc{Start: start, End: end})
		start = end
	}
	return append(out, ring.Arc{Start: start, End: a.End})
}
