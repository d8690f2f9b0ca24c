package storagenode

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// Anti-entropy, the exchange with one peer: digests, leaf reconciliation,
// pacing, and the two endpoints (digests, repair) the node serves.

// localDigests digests arcs here and paces by the keys read.
func (ae *antiEntropy) localDigests(ctx context.Context, tenant string, arcs []ring.Arc, cutoff int64) ([]engine.ArcDigest, error) {
	ds, err := ae.n.eng.DigestArcs(tenant, arcs, cutoff)
	if err != nil {
		return nil, errors.Wrapf(err, "anti-entropy: local digests of tenant %s", tenant)
	}
	var keys uint64
	for _, d := range ds {
		keys += d.Keys
	}
	return ds, ae.pace.wait(ctx, keys)
}

// remoteDigests asks peer for the digests of arcs under the round's cutoff.
// Failures to reach the peer are peerErrors; a stale epoch means the ring
// moved.
func (ae *antiEntropy) remoteDigests(ctx context.Context, rc *roundCtx, peer, tenant string, arcs []ring.Arc) ([]*pb.RangeDigest, error) {
	n := ae.n
	req := &pb.RangeDigestsRequest{TenantId: tenant, TombstonesBeforeMs: rc.cutoff, Epoch: rc.st.Epoch}
	for _, a := range arcs {
		req.Ranges = append(req.Ranges, &pb.HashRange{Start: a.Start, End: a.End})
	}
	resp := &pb.RangeDigestsResponse{}
	rctx, cancel := context.WithTimeout(ctx, peerTimeout)
	err := bus.Request(rctx, n.nc, n.cfg.Subjects.Node(peer, opDigests), req, resp)
	cancel()
	if err != nil {
		return nil, ae.peerFailed(ctx, peer, errors.Wrapf(err, "anti-entropy: digests of tenant %s from %s", tenant, peer))
	}
	if len(resp.GetDigests()) != len(arcs) {
		return nil, peerError{errors.Newf("anti-entropy: %s answered %d digests for %d ranges", peer, len(resp.GetDigests()), len(arcs))}
	}
	var keys uint64
	for _, d := range resp.GetDigests() {
		keys += d.GetKeys()
	}
	ae.met.compared.Add(len(arcs))
	rc.r.update(func(s *pb.RepairStatus) { s.DigestsCompared += uint64(len(arcs)) })
	return resp.GetDigests(), ae.pace.wait(ctx, keys)
}

// peerFailed classifies a failed request to a peer.
func (ae *antiEntropy) peerFailed(ctx context.Context, peer string, err error) error {
	switch {
	case ctx.Err() != nil:
		return errors.CombineErrors(ctx.Err(), err)
	case status.Is(err, pb.ErrorCode_STALE_EPOCH):
		return errors.Mark(errors.Wrapf(err, "peer %s is on a newer ring", peer), errPlacementMoved)
	}
	return peerError{err}
}

// reconcileLeaf makes this node and peer agree on one small arc: pull what
// the peer has newer, then push what the peer lacks or has older.
func (ae *antiEntropy) reconcileLeaf(ctx context.Context, rc *roundCtx, tenant string, arc ring.Arc, peer string) error {
	remote, err := ae.scanPeer(ctx, rc, peer, tenant, arc)
	if err != nil {
		return err
	}
	local, err := ae.scanLocal(ctx, tenant, arc)
	if err != nil {
		return err
	}
	policy := dvvpb.PolicyFromProto(ae.n.policyOf(tenant, pb.ConflictPolicy_SIBLINGS))
	var pull []engine.MergeItem
	for k, ro := range remote {
		lo, ok := local[k]
		switch {
		case !ok && engine.PurgeEligible(ro, rc.cutoff):
			// Collected here already (or never held): do not bring it back.
		case !ok || dvv.Behind(lo, ro, policy):
			pull = append(pull, engine.MergeItem{Key: k, Object: ro})
		}
	}
	if len(pull) > 0 {
		changed, err := ae.mergeLocal(rc, tenant, pull)
		if err != nil {
			return err
		}
		ae.fixed(rc, changed)
		if local, err = ae.scanLocal(ctx, tenant, arc); err != nil {
			return err
		}
	}
	var push []engine.MergeItem
	for k, lo := range local {
		ro, ok := remote[k]
		switch {
		case !ok && engine.PurgeEligible(lo, rc.cutoff):
			// Due for collection: the peer may have purged it already.
		case !ok || dvv.Behind(ro, lo, policy):
			push = append(push, engine.MergeItem{Key: k, Object: lo})
		}
	}
	if len(push) == 0 {
		return nil
	}
	if err := ae.pace.wait(ctx, uint64(len(push))); err != nil {
		return err
	}
	sent, err := ae.pushTo(ctx, rc, peer, tenant, push)
	ae.fixed(rc, sent)
	return err
}

func (ae *antiEntropy) fixed(rc *roundCtx, k int) {
	if k <= 0 {
		return
	}
	ae.met.fixed.Add(k)
	rc.r.update(func(s *pb.RepairStatus) { s.KeysFixed += uint64(k) })
}

// mergeLocal merges pulled objects under the placement lock (so cleanup
// cannot delete the arc underneath), after checking the ring did not move,
// under the tenant's conflict policy.
func (ae *antiEntropy) mergeLocal(rc *roundCtx, tenant string, items []engine.MergeItem) (int, error) {
	n := ae.n
	if _, gone, err := n.localTenant(tenant); err != nil || gone {
		return 0, err
	}
	n.placeMu.RLock()
	defer n.placeMu.RUnlock()
	if err := ae.placementHolds(rc.st); err != nil {
		return 0, err
	}
	changed, err := n.mergeBatch(tenant, items, dvvpb.PolicyFromProto(n.policyOf(tenant, pb.ConflictPolicy_SIBLINGS)))
	if err != nil {
		return 0, errors.Wrapf(err, "anti-entropy: merge %d pulled keys of tenant %s", len(items), tenant)
	}
	return changed, nil
}

// pushTo sends objects to peer as merge requests, a few at a time, and
// returns how many the peer accepted.
func (ae *antiEntropy) pushTo(ctx context.Context, rc *roundCtx, peer, tenant string, items []engine.MergeItem) (int, error) {
	n := ae.n
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
		errs error
	)
	sem := make(chan struct{}, aePushers)
	subject := n.cfg.Subjects.Node(peer, bus.OpMerge)
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return sent, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, peerTimeout)
			defer cancel()
			err := bus.Request(rctx, n.nc, subject, &pb.MergeRequest{
				TenantId: tenant, Key: it.Key, Object: dvvpb.ObjectToProto(it.Object),
				Policy: n.policyOf(tenant, pb.ConflictPolicy_SIBLINGS), Epoch: rc.st.Epoch,
			}, &pb.MergeResponse{})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = errors.CombineErrors(errs, errors.Wrapf(err, "push key %q", it.Key))
				return
			}
			sent++
		})
	}
	wg.Wait()
	if errs != nil {
		return sent, ae.peerFailed(ctx, peer, errors.Wrapf(errs, "anti-entropy: push to %s", peer))
	}
	return sent, nil
}

// scanPeer reads every object of tenant's arc from peer, page by page.
func (ae *antiEntropy) scanPeer(ctx context.Context, rc *roundCtx, peer, tenant string, arc ring.Arc) (map[string]dvv.Object, error) {
	n := ae.n
	out := map[string]dvv.Object{}
	req := &pb.ScanRequest{TenantId: tenant, Range: &pb.HashRange{Start: arc.Start, End: arc.End},
		Limit: uint32(n.cfg.TransferPageSize), Epoch: rc.st.Epoch}
	for {
		resp := &pb.ScanResponse{}
		rctx, cancel := context.WithTimeout(ctx, peerTimeout)
		err := bus.Request(rctx, n.nc, n.cfg.Subjects.Node(peer, bus.OpScan), req, resp)
		cancel()
		if err != nil {
			return nil, ae.peerFailed(ctx, peer, errors.Wrapf(err, "anti-entropy: scan tenant %s from %s", tenant, peer))
		}
		items := resp.GetItems()
		for _, it := range items {
			out[it.GetKey()] = dvvpb.ObjectFromProto(it.GetObject())
		}
		if err := ae.pace.wait(ctx, uint64(len(items))); err != nil {
			return nil, err
		}
		if resp.GetDone() {
			return out, nil
		}
		if len(items) == 0 {
			return nil, peerError{errors.Newf("anti-entropy: %s sent an empty scan page that is not the last", peer)}
		}
		last := items[len(items)-1]
		req.HasAfter, req.AfterHash, req.AfterKey = true, last.GetHash(), last.GetKey()
	}
}

// scanLocal reads every object of tenant's arc here.
func (ae *antiEntropy) scanLocal(ctx context.Context, tenant string, arc ring.Arc) (map[string]dvv.Object, error) {
	out := map[string]dvv.Object{}
	var after *engine.Position
	for {
		items, done, err := ae.n.eng.Scan(tenant, arc, after, ae.n.cfg.TransferPageSize, true)
		if err != nil {
			return nil, errors.Wrapf(err, "anti-entropy: scan tenant %s", tenant)
		}
		for _, it := range items {
			out[it.Key] = it.Object
		}
		if err := ae.pace.wait(ctx, uint64(len(items))); err != nil {
			return nil, err
		}
		if done || len(items) == 0 {
			return out, nil
		}
		last := items[len(items)-1]
		after = &engine.Position{Hash: last.Hash, Key: last.Key}
	}
}

// pacer spaces work at a rate of keys per second. Work is charged after it
// is done; a charge beyond the budget (one second's worth) sleeps it off.
// Only the worker goroutine uses it.
type pacer struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newPacer(rate float64) *pacer { return &pacer{rate: rate, tokens: rate, last: time.Now()} }

// wait charges n keys and sleeps until the budget is no longer in debt.
func (p *pacer) wait(ctx context.Context, n uint64) error {
	now := time.Now()
	p.tokens = min(p.rate, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	p.last = now
	p.tokens -= float64(n)
	if p.tokens >= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(time.Duration(-p.tokens / p.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// digests serves RangeDigestsRequest: the digests of several arcs at once,
// with due tombstones counted as absent under the requester's cutoff.
func (n *Node) digests(ctx context.Context, _ string, req *pb.RangeDigestsRequest) (*pb.RangeDigestsResponse, error) {
	if err := keyspace.ValidateTenantID(req.GetTenantId()); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant_id")
	}
	if k := len(req.GetRanges()); k == 0 || k > maxDigestRanges {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "ask for 1 to %d ranges, not %d", maxDigestRanges, k)
	}
	epoch, err := n.checkEpoch(ctx, opDigests, req.GetEpoch())
	if err != nil {
		return &pb.RangeDigestsResponse{Epoch: epoch}, err
	}
	if err := n.sourceTenant(req.GetTenantId(), req.GetTenantIncarnation()); err != nil {
		return &pb.RangeDigestsResponse{Epoch: epoch}, err
	}
	arcs := make([]ring.Arc, 0, len(req.GetRanges()))
	for _, r := range req.GetRanges() {
		arcs = append(arcs, ring.Arc{Start: r.GetStart(), End: r.GetEnd()})
	}
	ds, err := n.eng.DigestArcs(req.GetTenantId(), arcs, req.GetTombstonesBeforeMs())
	if err != nil {
		return &pb.RangeDigestsResponse{Epoch: epoch}, n.failed(opDigests, err)
	}
	resp := &pb.RangeDigestsResponse{Epoch: epoch, Digests: make([]*pb.RangeDigest, 0, len(ds))}
	for _, d := range ds {
		resp.Digests = append(resp.Digests, &pb.RangeDigest{Digest: d.Digest, Keys: d.Keys})
	}
	return resp, nil
}

// repair serves RepairRequest: queue a round (answering at once with its
// id), or report the state of a round by id.
func (n *Node) repair(_ context.Context, _ string, req *pb.RepairRequest) (*pb.RepairResponse, error) {
	if n.ae == nil {
		return nil, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"node %s runs without membership (static mode): it knows no replicas to compare with", n.cfg.ID)
	}
	if id := req.GetRoundId(); id != "" {
		st, ok := n.ae.status(id)
		if !ok {
			return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"node %s has no repair round %q (it remembers its last %d, until it restarts)", n.cfg.ID, id, aeKeepRounds)
		}
		return &pb.RepairResponse{Status: st}, nil
	}
	if t := req.GetTenantId(); t != "" {
		if err := keyspace.ValidateTenantID(t); err != nil {
			return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant_id")
		}
	}
	r, err := n.ae.enqueue(req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return &pb.RepairResponse{Status: r.snapshot()}, nil
}
