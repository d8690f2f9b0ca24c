package heal

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Anti-entropy, one round: plan the arcs, compare each with its other
// replicas, narrow down where they differ.

// runRound runs one round and records its outcome.
func (ae *AntiEntropy) runRound(ctx context.Context, r *round) {
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
	ae.logRound(ctx, st, outcome, time.Since(start), err)
}

// logRound logs a round's outcome: a warning when it is incomplete, info
// when it repaired something, debug otherwise, nothing when stopping.
func (ae *AntiEntropy) logRound(ctx context.Context, st *pb.RepairStatus, outcome string, took time.Duration, err error) {
	fields := []zap.Field{zap.String("round", st.GetRoundId()), zap.String("outcome", outcome),
		zap.Uint64("arcs", st.GetArcsDone()), zap.Uint64("digests_compared", st.GetDigestsCompared()),
		zap.Uint64("keys_fixed", st.GetKeysFixed()), zap.Uint64("tombstones_purged", st.GetTombstonesPurged()),
		zap.Duration("took", took), zap.Error(err)}
	switch {
	case ctx.Err() != nil:
	case outcome == aeFailed || outcome == aePartial:
		ae.log.Warn("anti-entropy round incomplete; the next round retries", fields...)
	case st.GetKeysFixed() > 0 || st.GetTombstonesPurged() > 0:
		ae.log.Info("anti-entropy round repaired replicas", fields...)
	default:
		ae.log.Debug("anti-entropy round found replicas in sync", fields...)
	}
}

// awaitFold waits, bounded, for the next ring log event this node folds:
// a peer that answered STALE_EPOCH has folded one this node has not yet.
func (ae *AntiEntropy) awaitFold(ctx context.Context) {
	t := time.NewTimer(ae.cfg.EpochWait)
	defer t.Stop()
	select {
	case <-ae.cfg.Ring.Changed():
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
func (ae *AntiEntropy) round(ctx context.Context, r *round) (partial bool, err error) {
	st := ae.cfg.Ring.State()
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
func (ae *AntiEntropy) placementHolds(st *membership.State) error {
	cur := ae.cfg.Ring.State()
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
func (ae *AntiEntropy) plan(_ context.Context, st *membership.State, only string) ([]arcWork, error) {
	rfs := st.TenantRFs()
	var tenants []string
	if only != "" {
		tenants = []string{only}
	} else {
		local, err := ae.cfg.Engine.Tenants()
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
			ae.log.Debug("anti-entropy skips a tenant whose replication factor is unknown", zap.String("tenant", t))
			continue
		}
		arcs, ok := byRF[rf]
		if !ok {
			arcs = replicatedArcs(st.Current(), int(rf), ae.cfg.ID)
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
func (ae *AntiEntropy) syncArc(ctx context.Context, rc *roundCtx, w arcWork) error {
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
func (ae *AntiEntropy) narrow(ctx context.Context, rc *roundCtx, tenant string, arc ring.Arc, peers []string, keys uint64, depth int) error {
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
