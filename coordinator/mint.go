package coordinator

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// The rules an apply's answer is judged by are in writemachine.go ("One
// write, at most one version").

// applyVerdict classifies one apply.
type applyVerdict int

const (
	applied        applyVerdict = iota // a version exists at the minter
	refusedStale                       // STALE_EPOCH: nothing minted; catch up and retry
	refusedRequest                     // the request itself is refused (bad input, limits)
	refusedNode                        // this replica certainly minted nothing; another may
	unknownOutcome                     // the replica may have minted
)

// applyResult is one apply's outcome.
type applyResult struct {
	verdict applyVerdict
	node    string
	resp    *pb.ApplyResponse
	fw      *gather // the forwarded merges' acks (applied only; nil without forwards)
	err     error
	epoch   uint64 // with refusedStale: the replica's epoch
}

// minted is the version a write settles on: what the replicas must hold.
type minted struct {
	obj *pb.Object
	// by is the minting replica: it holds obj (it acks the write).
	by string
	// fresh: obj is exactly the version just minted (not an earlier
	// attempt's, found existing), so replicas record its origin.
	fresh bool
	// clock is the context the write's answer carries: the object's clock
	// right after the write (for an earlier attempt found existing, the
	// clock its minter recorded then, when it has one).
	clock []*pb.ClockEntry
	// fw collects the acks of the replicas the minter forwarded to (nil
	// when none).
	fw *gather
}

// minterCandidates orders the replicas to try as minter: healthy first,
// then suspect (see liveness.order), leaving out nodes whose clock is
// further from this coordinator's than MaxClockSkew (their deadline checks
// could not be trusted). Replicas being refilled go last: one could mint,
// but the version it answers would not hold what it has yet to pull.
func (s *Service) minterCandidates(st *membership.State, all []string) []string {
	out := slices.DeleteFunc(s.liveness.order(all), s.liveness.skewed)
	slices.SortStableFunc(out, func(a, b string) int {
		return cmp.Compare(boolInt(st.Nodes[a].Refilling), boolInt(st.Nodes[b].Refilling))
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// mintedFrom turns an applied result into the version to replicate.
func (s *Service) mintedFrom(r applyResult) *minted {
	resp := r.resp
	m := &minted{obj: resp.GetObject(), by: r.node, fresh: !resp.GetExisting(), clock: resp.GetObject().GetClock(), fw: r.fw}
	if rec := resp.GetMinted(); resp.GetExisting() && rec != nil {
		m.clock = rec.GetClock()
	}
	return m
}

// applyAt asks node to mint the write and pass it on to the other
// replicas of p, and classifies the answer.
func (s *Service) applyAt(ctx context.Context, w *writeReq, node string, p placement, epoch uint64) applyResult {
	now := time.Now()
	wait := now.Add(s.cfg.ReplicaTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(wait) {
		wait = d
	}
	// The replica mints nothing past deadline by its clock, which is at
	// most MaxClockSkew behind ours: so nothing is minted after we stop
	// waiting at wait.
	deadline := wait.Add(-s.cfg.MaxClockSkew)
	if deadline.Sub(now) < minApplyWindow {
		return applyResult{verdict: refusedNode, node: node, err: status.Errorf(pb.ErrorCode_DEADLINE_EXCEEDED,
			"too little time left to ask replica %s to mint the write (%s)", node, deadline.Sub(now))}
	}
	fw := s.openForwards(p.all, node, now)
	apply := &pb.ApplyRequest{
		TenantId: w.tenant.GetTenantId(), Key: w.key, Value: w.value, Tombstone: w.tombstone,
		Context: dvvpb.ClockToProto(w.context), Policy: policyOf(w.tenant), MaxSiblings: w.tenant.GetMaxSiblings(),
		Epoch: epoch, Origin: w.origin, RecordOrigin: w.idemKey != "", Forwards: forwardsOf(fw),
		DeadlineUnixMs: deadline.UnixMilli(), MaxObjectBytes: maxObjectBytes(w.tenant), TenantIncarnation: w.inc,
	}
	resp := new(pb.ApplyResponse)
	cctx, cancel := context.WithDeadline(ctx, wait)
	err := bus.Request(cctx, s.nc, s.cfg.Subjects.Node(node, bus.OpApply), apply, resp)
	cancel()
	if errors.Is(err, nats.ErrNoResponders) {
		s.liveness.markDown(node)
	}
	s.m.replica("writes", node, err)
	r := applyResult{node: node, resp: resp, err: err, verdict: classifyApply(err)}
	if r.verdict == applied {
		r.fw = fw
		return r
	}
	// Acks of a failed apply are not counted (a replica that forwarded
	// and then failed its commit answers OUTCOME_UNKNOWN).
	if fw != nil {
		fw.close()
	}
	if r.verdict == refusedStale {
		r.epoch = max(resp.GetEpoch(), epoch+1)
	}
	return r
}

// minApplyWindow is the least time an apply is given to mint.
const minApplyWindow = 10 * time.Millisecond

// classifyApply sorts an apply's error (see "One write, at most one
// version" in writemachine.go).
func classifyApply(err error) applyVerdict {
	switch {
	case err == nil:
		return applied
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrReconnectBufExceeded):
		// Nobody got it, or it never left this process.
		return refusedNode
	case !bus.IsReply(err):
		// No answer in time, a lost connection, an answer we could not
		// read: the replica may have minted.
		return unknownOutcome
	}
	switch status.CodeOf(err) {
	case pb.ErrorCode_OUTCOME_UNKNOWN:
		return unknownOutcome
	case pb.ErrorCode_STALE_EPOCH:
		return refusedStale
	case pb.ErrorCode_INVALID_ARGUMENT, pb.ErrorCode_TOO_MANY_SIBLINGS, pb.ErrorCode_VALUE_TOO_LARGE, pb.ErrorCode_TENANT_NOT_FOUND:
		return refusedRequest
	}
	return refusedNode
}

// findOrigin reads key from nodes with the write's origin: found when a
// replica holds its sibling or a record of it; obj is the merged object
// (nil when no replica holds the key); clock the write's context from a
// record, else obj's clock; complete when every node answered.
func (s *Service) findOrigin(ctx context.Context, w *writeReq, nodes []string, epoch uint64) (found bool, obj *pb.Object, clock []*pb.ClockEntry, complete bool) {
	g := s.gather(nodes, bus.OpRead, &pb.ReadRequest{TenantId: w.tenant.GetTenantId(), Key: w.key, Epoch: epoch, Origin: w.origin}, len(nodes))
	defer g.close()
	policy := dvvpb.PolicyFromProto(policyOf(w.tenant))
	var merged dvv.Object
	complete = true
	for g.left > 0 {
		r, gs := g.next(ctx.Done(), nil)
		if gs != gotReply {
			return found, nil, nil, false
		}
		resp := new(pb.ReadResponse)
		if err := g.decode(r, "reads", resp); err != nil {
			complete = false
			continue
		}
		o := dvvpb.ObjectFromProto(resp.GetObject())
		merged = dvv.Merge(merged, o, policy)
		if rec := resp.GetOrigin(); rec != nil {
			found = true
			if clock == nil {
				clock = rec.GetClock()
			}
		}
		if o.HasOrigin(w.origin) {
			found = true
		}
	}
	if merged.Empty() {
		return found, nil, clock, complete
	}
	if clock == nil {
		clock = dvvpb.ClockToProto(merged.Clock)
	}
	return found, dvvpb.ObjectToProto(merged), clock, complete
}

// maxObjectBytes is the stored object the tenant's limits allow: every
// sibling at the largest value, with room for dots, timestamps and origins,
// and a clock of many actors. The replicas cap it at what one message can
// carry.
func maxObjectBytes(t *pb.Tenant) uint64 {
	const perSibling, clock = 128, 64 << 10
	return uint64(t.GetMaxSiblings())*(t.GetMaxValueBytes()+perSibling) + clock
}
