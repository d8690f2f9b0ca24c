package transfer

import (
	"context"
	"slices"
	"sync"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// maxPasses bounds the verification passes of one arc per attempt; the
// driver retries the arc later from its checkpoint.
const maxPasses = 4

// transferMove pulls and verifies one (tenant, arc) from every live current
// replica, not just one. A write acknowledged at W may be missing on the
// others (its hint not yet replayed, or addressed to the node that leaves):
// pulled from one replica that missed it, the arc would hold it on fewer
// than W replicas of its new set, and a read at R of the rest would miss
// it. A QUORUM write is on W = N/2+1 of the N current replicas, so the
// union of any N-W+1 = ⌈N/2⌉ of them holds it (this node's own copy counts
// when it is one of them, as on a lower replication factor). Every live
// replica is asked, and the arc is accepted once ⌈N/2⌉ (or every live one,
// after a force removal) have been caught up with, so one replica failing
// mid-transfer does not stall the change.
// self is 1 when this node's own copy is one of From's (see pullJob.holds).
func (m *Mover) transferMove(ctx context.Context, st *membership.State, mv membership.TenantMove, name string,
	self int, ck checkpoint, p *progress) error {
	if ck.Verified {
		return nil
	}
	// Pages merge into the tenant's live incarnation; a deleted tenant's
	// data is not moved.
	if _, gone, err := m.cfg.Store.LocalTenant(mv.Tenant); err != nil || gone {
		return err
	}
	if ck.HasAfter || ck.Keys > 0 {
		m.met.transfer(transferResumed)
		m.log.Info("resuming a range transfer from its checkpoint", zap.String("tenant", mv.Tenant),
			zap.Uint64("start", mv.Arc.Start), zap.Uint64("end", mv.Arc.End), zap.Uint64("keys_done", ck.Keys))
	}
	sources := m.sources(st, mv)
	// Dead replicas (force removal) are not asked: with none left alive
	// there is nothing to copy, and the arc is accepted as it is here.
	need := min((len(mv.From)+1)/2, len(sources)+self)
	errs, stopped := m.catchUp(ctx, st, mv, name, self, sources, &ck, p)
	if stopped {
		return errors.Wrap(ctx.Err(), "transfer interrupted")
	}
	if got := len(ck.VerifiedBy) + self; got < need {
		if errs == nil {
			errs = errors.New("too few live source replicas")
		}
		return errors.Wrapf(errs, "range verified against %d of %v; %d needed", got, mv.From, need)
	}
	ck.Verified = true
	m.met.transfer(transferVerified)
	return m.saveCheckpoint(name, ck)
}

// catchUp brings this node's copy of the arc up to every source not yet in
// ck.VerifiedBy, adding each one it caught up with, and returns the
// failures of the others; stopped says ctx ended during a source's pass.
func (m *Mover) catchUp(ctx context.Context, st *membership.State, mv membership.TenantMove, name string,
	self int, sources []string, ck *checkpoint, p *progress) (errs error, stopped bool) {
	todo := slices.DeleteFunc(slices.Clone(sources), func(s string) bool { return slices.Contains(ck.VerifiedBy, s) })
	// The others' digests are fetched while the first is pulled from: when
	// they agree with what this node then holds (the usual case), catching
	// up with them costs no more round trips.
	var (
		early    map[string]chan digestResult
		fetching sync.WaitGroup
	)
	defer fetching.Wait() // each fetch is bounded by peerTimeout and ctx
	if len(todo) > 1 {
		early = m.prefetchDigests(ctx, st, mv, todo[1:], &fetching)
	}
	var local []byte // this node's digest as of the last check (it only grows)
	for _, src := range todo {
		// The first source's keys count as transferred, unless this node
		// already held the arc (a lower replication factor).
		first := len(ck.VerifiedBy) == 0 && self == 0
		var remote []byte
		if ch, ok := early[src]; ok {
			if r := <-ch; r.err == nil {
				remote = r.digest
			}
		}
		var err error
		if local, err = m.verifyFrom(ctx, st, mv, src, name, ck, p, first, local, remote); err != nil {
			if ctx.Err() != nil {
				return errs, true
			}
			m.log.Warn("transfer source failed; trying the others", zap.String("source", src),
				zap.String("tenant", mv.Tenant), zap.Error(err))
			errs = errors.CombineErrors(errs, errors.Wrapf(err, "pull from %s", src))
			continue
		}
		// Saved with the next page or the verdict: after a restart an
		// unsaved one costs a digest check again.
		ck.VerifiedBy = append(ck.VerifiedBy, src)
		ck.Source = ""
		ck.restart()
	}
	return errs, false
}

// verifyFrom brings this node's copy of the arc up to src's: passes from
// the checkpoint until src's digest equals ours, or a full pass merged
// nothing new (ours then descends src's for every key; live writes keep the
// digests apart for a moment). first says src is the arc's first source:
// its keys count as transferred; later sources count only what they add.
// local, when set, is this node's digest from an earlier check: the copy
// only gains since, so a source equal to it is one this copy descends, and
// the check costs the source's digest alone; remote, when set, is that
// digest, fetched earlier (a source serves only once it has folded the
// change, so what it took since reached this node too). verifyFrom returns
// this node's digest as of its last check.
func (m *Mover) verifyFrom(ctx context.Context, st *membership.State, mv membership.TenantMove, src, name string,
	ck *checkpoint, p *progress, first bool, local, remote []byte) ([]byte, error) {
	if ck.Source != src {
		ck.Source = src
		ck.restart()
	}
	equal := func(fresh bool) (bool, error) {
		theirs, _, err := m.digestFrom(ctx, st, mv, src)
		if err != nil {
			return false, err
		}
		if fresh || local == nil {
			if local, _, err = m.cfg.Engine.Digest(mv.Tenant, mv.Arc); err != nil {
				return false, errors.Wrap(err, "local digest")
			}
		}
		return slices.Equal(theirs, local), nil
	}
	if !first && !ck.HasAfter {
		// A replica that agrees already costs a digest, not a scan.
		if remote != nil && local != nil && slices.Equal(remote, local) {
			return local, nil
		}
		if same, err := equal(false); err != nil || same {
			return local, err
		}
	}
	for pass := 0; pass < maxPasses; pass++ {
		full := !ck.HasAfter
		merged, err := m.pullFrom(ctx, st, mv, src, name, ck, p, first)
		if err != nil {
			return nil, err
		}
		same, err := equal(true)
		if err != nil {
			return nil, err
		}
		if same || (full && merged == 0) {
			return local, nil
		}
		// Writes in flight: another full pass.
		ck.restart()
		if err := m.saveCheckpoint(name, *ck); err != nil {
			return nil, err
		}
	}
	return nil, errors.Newf("digests still differ after %d passes (live writes keep changing the range); will retry", maxPasses)
}

// pullFrom runs one pass over the arc from src, from the checkpoint to the
// end, and returns how many keys changed locally. count says whether the
// keys it scans count as transferred, or only the ones it changes.
func (m *Mover) pullFrom(ctx context.Context, st *membership.State, mv membership.TenantMove, src, name string,
	ck *checkpoint, p *progress, count bool) (merged int, err error) {
	for page := 0; ; page++ {
		if h := m.cfg.PageHook; h != nil {
			h(ctx, page)
		}
		if err := ctx.Err(); err != nil {
			return merged, err
		}
		resp, changed, err := m.pullPage(ctx, st, mv, src, ck)
		if err != nil {
			return merged, err
		}
		merged += changed
		if k := len(resp.GetItems()); k > 0 {
			last := resp.GetItems()[k-1]
			ck.HasAfter, ck.AfterHash, ck.AfterKey = true, last.GetHash(), last.GetKey()
			if !count {
				k = changed
			}
			ck.Keys += uint64(k)
			p.transferred += uint64(k)
			m.met.keysTransferred.Add(k)
		}
		if resp.GetDone() {
			// The pass is complete; the position restarts at the next pass.
			return merged, m.saveCheckpoint(name, *ck)
		}
		if len(resp.GetItems()) == 0 {
			return merged, errors.Newf("source %s sent an empty page that is not the last", src)
		}
		if err := m.saveCheckpoint(name, *ck); err != nil {
			return merged, err
		}
		p.publish(ctx, false, nil, false)
	}
}

// pullPage asks src for the page after ck's position and merges it here; it
// returns the page and how many keys it changed.
func (m *Mover) pullPage(ctx context.Context, st *membership.State, mv membership.TenantMove, src string,
	ck *checkpoint) (*pb.ScanResponse, int, error) {
	req := &pb.ScanRequest{
		TenantId: mv.Tenant, Range: &pb.HashRange{Start: mv.Arc.Start, End: mv.Arc.End},
		HasAfter: ck.HasAfter, AfterHash: ck.AfterHash, AfterKey: ck.AfterKey,
		Limit: uint32(m.cfg.PageSize), Epoch: st.Epoch,
	}
	resp := &pb.ScanResponse{}
	rctx, cancel := context.WithTimeout(ctx, peerTimeout)
	err := m.cfg.Request(rctx, src, bus.OpScan, req, resp)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	items := make([]engine.MergeItem, 0, len(resp.GetItems()))
	for _, it := range resp.GetItems() {
		items = append(items, engine.MergeItem{Key: it.GetKey(), Object: dvvpb.ObjectFromProto(it.GetObject())})
	}
	// Merged under the tenant's conflict policy, as every merge is.
	policy := dvvpb.PolicyFromProto(m.cfg.Store.PolicyOf(mv.Tenant, pb.ConflictPolicy_SIBLINGS))
	changed, err := m.cfg.Store.MergeBatch(mv.Tenant, items, policy)
	if err != nil {
		return nil, 0, errors.Wrap(err, "merge transferred page")
	}
	return resp, changed, nil
}
