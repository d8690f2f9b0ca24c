package heal

import (
	"context"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// Anti-entropy, the exchange with one peer: digests and leaf
// reconciliation.

// localDigests digests arcs here and paces by the keys read.
func (ae *AntiEntropy) localDigests(ctx context.Context, tenant string, arcs []ring.Arc, cutoff int64) ([]engine.ArcDigest, error) {
	ds, err := ae.cfg.Engine.DigestArcs(tenant, arcs, cutoff)
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
func (ae *AntiEntropy) remoteDigests(ctx context.Context, rc *roundCtx, peer, tenant string, arcs []ring.Arc) ([]*pb.RangeDigest, error) {
	req := &pb.RangeDigestsRequest{TenantId: tenant, TombstonesBeforeMs: rc.cutoff, Epoch: rc.st.Epoch}
	for _, a := range arcs {
		req.Ranges = append(req.Ranges, &pb.HashRange{Start: a.Start, End: a.End})
	}
	resp := &pb.RangeDigestsResponse{}
	rctx, cancel := context.WithTimeout(ctx, peerTimeout)
	err := ae.cfg.Request(rctx, peer, bus.OpDigests, req, resp)
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
func (ae *AntiEntropy) peerFailed(ctx context.Context, peer string, err error) error {
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
func (ae *AntiEntropy) reconcileLeaf(ctx context.Context, rc *roundCtx, tenant string, arc ring.Arc, peer string) error {
	remote, err := ae.scanPeer(ctx, rc, peer, tenant, arc)
	if err != nil {
		return err
	}
	local, err := ae.scanLocal(ctx, tenant, arc)
	if err != nil {
		return err
	}
	policy := dvvpb.PolicyFromProto(ae.cfg.Store.PolicyOf(tenant, pb.ConflictPolicy_SIBLINGS))
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

func (ae *AntiEntropy) fixed(rc *roundCtx, k int) {
	if k <= 0 {
		return
	}
	ae.met.fixed.Add(k)
	rc.r.update(func(s *pb.RepairStatus) { s.KeysFixed += uint64(k) })
}

// mergeLocal merges pulled objects under the placement lock (so cleanup
// cannot delete the arc underneath), after checking the ring did not move,
// under the tenant's conflict policy.
func (ae *AntiEntropy) mergeLocal(rc *roundCtx, tenant string, items []engine.MergeItem) (int, error) {
	if _, gone, err := ae.cfg.Store.LocalTenant(tenant); err != nil || gone {
		return 0, err
	}
	ae.cfg.Placement.Lock()
	defer ae.cfg.Placement.Unlock()
	if err := ae.placementHolds(rc.st); err != nil {
		return 0, err
	}
	changed, err := ae.cfg.Store.MergeBatch(tenant, items, dvvpb.PolicyFromProto(ae.cfg.Store.PolicyOf(tenant, pb.ConflictPolicy_SIBLINGS)))
	if err != nil {
		return 0, errors.Wrapf(err, "anti-entropy: merge %d pulled keys of tenant %s", len(items), tenant)
	}
	return changed, nil
}

// pushTo sends objects to peer as merge requests, a few at a time, and
// returns how many the peer accepted.
func (ae *AntiEntropy) pushTo(ctx context.Context, rc *roundCtx, peer, tenant string, items []engine.MergeItem) (int, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
		errs error
	)
	sem := make(chan struct{}, aePushers)
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
			err := ae.cfg.Request(rctx, peer, bus.OpMerge, &pb.MergeRequest{
				TenantId: tenant, Key: it.Key, Object: dvvpb.ObjectToProto(it.Object),
				Policy: ae.cfg.Store.PolicyOf(tenant, pb.ConflictPolicy_SIBLINGS), Epoch: rc.st.Epoch,
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
func (ae *AntiEntropy) scanPeer(ctx context.Context, rc *roundCtx, peer, tenant string, arc ring.Arc) (map[string]dvv.Object, error) {
	out := map[string]dvv.Object{}
	req := &pb.ScanRequest{TenantId: tenant, Range: &pb.HashRange{Start: arc.Start, End: arc.End},
		Limit: uint32(ae.cfg.PageSize), Epoch: rc.st.Epoch}
	for {
		resp := &pb.ScanResponse{}
		rctx, cancel := context.WithTimeout(ctx, peerTimeout)
		err := ae.cfg.Request(rctx, peer, bus.OpScan, req, resp)
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
func (ae *AntiEntropy) scanLocal(ctx context.Context, tenant string, arc ring.Arc) (map[string]dvv.Object, error) {
	out := map[string]dvv.Object{}
	var after *engine.Position
	for {
		items, done, err := ae.cfg.Engine.Scan(tenant, arc, after, ae.cfg.PageSize, true)
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
