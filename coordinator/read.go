package coordinator

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// readReply is one replica's answer to a read.
type readReply struct {
	node  string
	obj   dvv.Object
	err   error
	epoch uint64
	// raw is the encoded reply: replicas in sync answer byte for byte the
	// same, which spares merging them (see sameReplies).
	raw []byte
}

// get reads at R replicas (see readQuorum), answers with their merged
// object (not-found is a valid reply), and hands replies still due, or ones
// that differ, to read repair.
func (s *Service) get(ctx context.Context, subject string, req *pb.GetRequest) (resp *pb.GetResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpGet, level, start, errLabel(err)) }()
	t, _, err := s.tenantOf(ctx, subject)
	if err != nil {
		return nil, err
	}
	if err := s.admit(t, kindRead); err != nil {
		return nil, err
	}
	if err := keyspace.ValidateKey(req.GetKey()); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad key")
	}
	l, err := levelOf(t, req.GetConsistency())
	if err != nil {
		return nil, err
	}
	level = l.String()

	var (
		got     []readReply
		replies *gather
		epoch   uint64
	)
	for attempt := 0; ; attempt++ {
		var stale uint64
		got, replies, epoch, stale, err = s.readQuorum(ctx, t, req.GetKey(), l)
		if err == nil {
			break
		}
		if stale == 0 || attempt >= maxEpochRetries {
			s.m.quorumFailure(bus.OpGet, level)
			return nil, err
		}
		if err := s.catchUp(ctx, stale); err != nil {
			return nil, err
		}
	}
	tid := t.GetTenantId()

	policy := dvvpb.PolicyFromProto(policyOf(t))
	merged := mergeReplies(got, policy)
	if first, same := sameReplies(got); same && replies.left == 0 && len(first.obj.Siblings) == len(merged.Siblings) {
		// Every replica asked answered alike: nothing to repair, and no
		// job to queue (the usual read).
		replies.close()
	} else {
		s.repairs.enqueue(repairJob{
			tenant: tid, key: req.GetKey(), policy: policyOf(t), epoch: epoch,
			got: got, rest: replies,
		})
	}

	live := merged.Live()
	clock := dvvpb.ClockToProto(merged.Clock)
	resp = &pb.GetResponse{
		Key: req.GetKey(), Found: len(live) > 0, VectorClock: clock, Consistency: level,
		Context: s.sealContext(tid, req.GetKey(), clock),
	}
	for _, sib := range live {
		resp.Siblings = append(resp.Siblings, &pb.Sibling{Value: sib.Value, TimestampMs: sib.TimestampMs})
	}
	switch {
	case len(live) == 0:
		// The body still carries vector_clock: a delete's tombstone context.
		return resp, status.Errorf(pb.ErrorCode_KEY_NOT_FOUND, "key %q not found in tenant %q", req.GetKey(), tid)
	case len(live) == 1:
		resp.Value = live[0].Value
	default:
		s.m.conflicts.Inc()
	}
	return resp, nil
}

// readQuorum reads the key from its current replicas and returns once R
// replied. It asks R replicas (healthy first), not all N: each read then
// costs N-R fewer messages and replica lookups. A replica that fails is
// replaced at once by the next, and if the quorum is not in after
// ReadHedgeAfter the rest are asked too, so a slow or paused replica costs
// a hedge delay, not a timeout. One read in 1/ReadRepairChance asks all N,
// so read repair still visits the others (hinted handoff and anti-entropy
// are what guarantee they converge). The gather, with the replies still
// due, goes to read repair. A failed quorum reports the newest epoch a
// replica refused with, if any.
func (s *Service) readQuorum(ctx context.Context, t *pb.Tenant, key string, l quorum.Level) (
	got []readReply, rest *gather, epoch, stale uint64, err error) {
	st := s.cfg.Membership.State()
	p, err := placeFor(st, t, keyspace.Hash(t.GetTenantId(), key))
	if err != nil {
		return nil, nil, 0, 0, err
	}
	// R counts against all N replicas; only the serving ones are asked.
	n, need := len(p.serving), quorum.Required(l, len(p.cur))
	if n < need {
		return nil, nil, 0, 0, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"%s reads need %d of the key's %d replicas, and %d of them are being refilled after losing their data; retry later or read at a lower level",
			l, need, len(p.cur), len(p.cur)-n)
	}
	first := n
	if need < n && rand.Float64() >= s.cfg.ReadRepairChance {
		first = need
	}
	g := s.gather(s.readOrder(p.serving), bus.OpRead, &pb.ReadRequest{TenantId: t.GetTenantId(), Key: key, Epoch: st.Epoch}, first)
	var hedge <-chan time.Time
	if g.unsent() > 0 {
		ht := time.NewTimer(s.cfg.ReadHedgeAfter)
		defer ht.Stop()
		hedge = ht.C
	}
	tally := quorum.NewTally(need, n)
	for tally.Outcome() == quorum.Pending {
		rep, gs := g.readReply(ctx.Done(), hedge)
		switch gs {
		case aborted:
			g.close()
			return nil, nil, 0, stale, status.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
				"read got %d of %d replicas before the deadline; %s needs %d", tally.Acks(), n, l, need)
		case hedged:
			s.m.readHedges.Inc()
			g.send(n)
			hedge = nil
			continue
		}
		got = append(got, rep)
		if rep.err == nil {
			tally.Ack()
			continue
		}
		tally.Fail()
		g.send(1) // the next replica stands in
		if status.Is(rep.err, pb.ErrorCode_STALE_EPOCH) {
			stale = max(stale, rep.epoch, st.Epoch+1)
		}
	}
	if tally.Outcome() == quorum.Lost {
		g.close()
		return nil, nil, 0, stale, status.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
			"read got %d of %d replicas; %s needs %d", tally.Acks(), n, l, need)
	}
	return got, g, st.Epoch, 0, nil
}

// readOrder is nodes healthy first, then suspect, then down: a read may
// need every one of them.
func (s *Service) readOrder(nodes []string) []string {
	out := s.liveness.order(nodes)
	if len(out) == len(nodes) {
		return out
	}
	for _, n := range nodes {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// readReply is the next reply of a read gather, decoded.
func (g *gather) readReply(abort <-chan struct{}, hedge <-chan time.Time) (readReply, gatherStatus) {
	r, gs := g.next(abort, hedge)
	if gs != gotReply {
		return readReply{}, gs
	}
	out := new(pb.ReadResponse)
	err := g.decode(r, "reads", out)
	rep := readReply{node: r.node, obj: dvvpb.ObjectFromProto(out.GetObject()), err: err, epoch: out.GetEpoch()}
	if err == nil {
		rep.raw = r.msg.Data
	}
	return rep, gotReply
}

// mergeReplies folds the successful replies into one object, under the
// tenant's policy even when they all agree: a last-write-wins key whose
// replicas all hold several siblings (merged under another policy before it
// was set) reads as its winner, and read repair then stores that.
func mergeReplies(replies []readReply, p dvv.Policy) dvv.Object {
	if first, ok := sameReplies(replies); ok {
		if p == dvv.LastWriteWins && len(first.obj.Siblings) > 1 {
			return dvv.Merge(first.obj, dvv.Object{}, p)
		}
		return first.obj
	}
	var out dvv.Object
	for _, r := range replies {
		if r.err == nil {
			out = dvv.Merge(out, r.obj, p)
		}
	}
	return out
}

// sameReplies reports whether every reply succeeded with the same bytes
// (the usual case: replicas in sync at the same epoch), returning the first.
// Equal encodings are equal objects, so there is nothing to merge or
// repair; unequal ones may still be equal objects and take the slow path.
func sameReplies(replies []readReply) (readReply, bool) {
	if len(replies) == 0 {
		return readReply{}, false
	}
	for _, r := range replies {
		if r.err != nil || !bytes.Equal(r.raw, replies[0].raw) {
			return readReply{}, false
		}
	}
	return replies[0], true
}
