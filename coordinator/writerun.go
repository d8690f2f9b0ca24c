package coordinator

import (
	"context"

	"go.uber.org/zap"

	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// writeRun performs one write machine's actions (writemachine.go) with the
// real calls: the ring, the applies, the claim, the survivors' read, the
// merges and their results, and the metrics. It holds what the machine
// does not need to decide: the membership state and placement of the
// current view, and the version itself (object, clock, the forwards'
// acks).
type writeRun struct {
	s    *Service
	w    *writeReq
	hash uint64
	st   *membership.State
	p    placement
	m    *minted
	f    *fanout
}

// write runs the replica protocol: one replica mints the version (mint)
// and forwards it to the others, whose acks come straight back here, and
// the answer goes out as soon as W replicas hold it, in the current
// replica set and, while a membership change runs, in the next one too
// (see fanout). A replica that has folded a newer ring epoch refuses
// (STALE_EPOCH): the coordinator catches up and goes on under the newer
// ring, with the same version.
func (s *Service) write(ctx context.Context, w *writeReq) (writeOutcome, error) {
	r := &writeRun{s: s, w: w, hash: keyspace.Hash(w.tenant.GetTenantId(), w.key)}
	m := newWriteMachine(r.spec())
	acts := m.start()
	for {
		var ev writeEvent
		answered := false
		for _, a := range acts {
			if a.kind == actFinish {
				return r.finish(a)
			}
			if e, ok := r.perform(ctx, a); ok {
				ev, answered = e, true
			}
		}
		if !answered {
			return writeOutcome{}, status.Errorf(pb.ErrorCode_INTERNAL,
				"the write of key %q stopped: its machine asked for nothing to answer (%v)", w.key, acts)
		}
		acts = m.handle(ev)
	}
}

// spec is what the machine knows of the request.
func (r *writeRun) spec() writeSpec {
	w := r.w
	sp := writeSpec{key: w.key, level: w.level, idemKey: w.idemKey != "", claimed: w.claim != nil,
		maxSkew: r.s.cfg.MaxClockSkew}
	if w.claim != nil {
		sp.retry = w.claim.Retry()
		sp.named, _ = w.claim.Minter()
	}
	return sp
}

// perform does one action; ok says it produced the event the machine
// waits for (metrics and sends produce none).
func (r *writeRun) perform(ctx context.Context, a writeAction) (ev writeEvent, ok bool) {
	s, w := r.s, r.w
	switch a.kind {
	case actPlace:
		return r.place(), true
	case actApply:
		return r.apply(ctx, a), true
	case actReassign:
		if err := w.claim.Reassign(ctx, a.node, r.st.Nodes[a.node].Incarnation); err != nil {
			return writeEvent{kind: evReassignFailed, err: err}, true
		}
		return writeEvent{kind: evReassigned}, true
	case actReadSurvivors:
		return r.readSurvivors(ctx, a), true
	case actCatchUp:
		if err := s.catchUp(ctx, a.epoch); err != nil {
			return writeEvent{kind: evCatchUpFailed, err: err}, true
		}
		return writeEvent{kind: evCaughtUp}, true
	case actAwait:
		return r.f.await(ctx), true
	case actMerge:
		r.f.send(a.nodes, a.epoch)
	case actCountQuorumFailure:
		s.m.quorumFailure(w.op, w.level.String())
	case actCountOutcomeUnknown:
		s.m.outcomeUnknown.with(labels{w.op}).Inc()
		s.liveness.markSlow(a.node)
	case actCountMinterReassigned:
		s.m.minterReassigned.Inc()
	}
	return writeEvent{}, false
}

// place reads the ring and places the key.
func (r *writeRun) place() writeEvent {
	s, w := r.s, r.w
	st := s.cfg.Membership.State()
	p, err := placeFor(st, w.tenant, r.hash)
	if err != nil {
		return writeEvent{kind: evPlaceFailed, err: err}
	}
	r.st, r.p = st, p
	view := ringView{epoch: st.Epoch, joint: p.joint(), all: p.all, candidates: s.minterCandidates(st, p.all)}
	if w.claim != nil {
		named, inc := w.claim.Minter()
		n, member := st.Nodes[named]
		view.namedMember = member && n.Incarnation == inc && n.State != membership.Registered
	}
	return writeEvent{kind: evPlaced, view: view}
}

// apply asks a.node to mint (or, resolving a retry, to find) the write.
func (r *writeRun) apply(ctx context.Context, a writeAction) writeEvent {
	res := r.s.applyAt(ctx, r.w, a.node, r.p, a.epoch)
	ev := writeEvent{node: a.node, err: res.err}
	switch res.verdict {
	case applied:
		r.adopt(r.s.mintedFrom(res), a.epoch)
		ev.kind, ev.existing = evApplied, res.resp.GetExisting()
		if res.fw != nil {
			ev.forwards = res.fw.nodes
		}
		if a.resolve && ev.existing {
			r.s.log.Info("a retry found its write at the replica that minted it",
				zap.String("tenant", r.w.tenant.GetTenantId()), zap.String("node", a.node))
		}
	case refusedStale:
		ev.kind, ev.epoch = evRefusedStale, res.epoch
	case refusedRequest:
		ev.kind = evRefusedRequest
	case refusedNode:
		ev.kind, ev.deadlinePassed = evRefusedNode, ctx.Err() != nil
	default:
		ev.kind = evUnknown
	}
	return ev
}

// readSurvivors looks for an earlier attempt of a retry on the replicas
// that could hold it.
func (r *writeRun) readSurvivors(ctx context.Context, a writeAction) writeEvent {
	found, obj, clock, complete := r.s.findOrigin(ctx, r.w, a.nodes, a.epoch)
	ev := writeEvent{kind: evSurvivors, found: found, holds: obj != nil, complete: complete}
	switch {
	case found && obj != nil:
		r.adopt(&minted{obj: obj, clock: clock}, a.epoch)
	case !found && complete:
		named, _ := r.w.claim.Minter()
		r.s.log.Info("a retry found no trace of its earlier attempt on any replica; minting it",
			zap.String("tenant", r.w.tenant.GetTenantId()), zap.String("gone_minter", named))
		ev.candidates = r.s.minterCandidates(r.st, r.p.all)
	}
	return ev
}

// adopt keeps the version the write settles on, and starts collecting the
// acks of the replicas its minter forwarded it to.
func (r *writeRun) adopt(m *minted, epoch uint64) {
	r.m = m
	r.f = r.s.newFanout(r.w, m, epoch)
}

func (r *writeRun) finish(a writeAction) (writeOutcome, error) {
	if a.err != nil {
		return writeOutcome{}, a.err
	}
	return writeOutcome{clock: r.m.clock, acks: a.acks, existing: a.existing}, nil
}
