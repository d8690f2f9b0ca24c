package storagenode

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// Range transfer, target side (DESIGN.md §7). For every (tenant, arc) this
// node gains in the running change it pulls scan pages from each live
// current replica in turn and merges them, checkpointing after each page;
// after each replica's pass it compares that replica's digest with its own.
// Live writes reach both sides through the coordinator while the transfer
// runs, so digests may differ for a moment: a mismatch triggers another
// full pass, and a replica counts as caught up with when the digests match
// or a full pass merged nothing new (this node's copy then descends that
// replica's for every key). The arc is accepted once enough of its current
// replicas have been caught up with (see transferMove); when every arc is,
// the node appends TransferDone.

const (
	checkpointPrefix = "xfer/"
	// maxPasses bounds the verification passes of one arc per attempt; the
	// driver retries the arc later from its checkpoint.
	maxPasses = 4
	// progressEvery spaces progress messages.
	progressEvery = 250 * time.Millisecond
	// peerTimeout bounds one scan or digest request.
	peerTimeout = 30 * time.Second
)

// checkpoint is the durable progress of one (migration, tenant, arc).
type checkpoint struct {
	HasAfter  bool   `json:"has_after,omitempty"`
	AfterHash uint64 `json:"after_hash,omitempty"`
	AfterKey  string `json:"after_key,omitempty"`
	// Source is the replica the position above is in.
	Source string `json:"source,omitempty"`
	// Keys counts keys pulled so far (across passes and restarts).
	Keys uint64 `json:"keys"`
	// VerifiedBy lists the source replicas this copy has caught up with.
	VerifiedBy []string `json:"verified_by,omitempty"`
	Verified   bool     `json:"verified,omitempty"`
}

func checkpointName(migration string, mv membership.TenantMove) string {
	return fmt.Sprintf("%s%s/%s/%d-%d", checkpointPrefix, migration, mv.Tenant, mv.Arc.Start, mv.Arc.End)
}

func (n *Node) loadCheckpoint(name string) (checkpoint, error) {
	var ck checkpoint
	v, found, err := n.eng.GetMeta(name)
	if err != nil || !found {
		return ck, err
	}
	if err := json.Unmarshal(v, &ck); err != nil {
		// A corrupt checkpoint only costs a restart of its arc.
		n.log.Warn("unreadable transfer checkpoint; restarting its range", zap.String("checkpoint", name), zap.Error(err))
		return checkpoint{}, nil
	}
	return ck, nil
}

func (n *Node) saveCheckpoint(name string, ck checkpoint) error {
	v, err := json.Marshal(ck)
	if err != nil {
		return errors.Wrap(err, "encode transfer checkpoint")
	}
	return n.eng.PutMeta(name, v)
}

// progress publishes a target's transfer progress, rate limited.
type progress struct {
	n           *Node
	migration   string
	transferred uint64
	total       uint64
	last        time.Time
}

func (p *progress) publish(ctx context.Context, done bool, failure error, force bool) {
	if !force && time.Since(p.last) < progressEvery {
		return
	}
	p.last = time.Now()
	msg := &pb.MigrationProgress{
		MigrationId: p.migration, NodeId: p.n.cfg.ID, KeysTransferred: p.transferred,
		KeysTotal: max(p.total, p.transferred), Done: done, UnixMs: p.last.UnixMilli(),
	}
	if failure != nil {
		msg.Error = failure.Error()
	}
	pctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	if err := p.n.mem.PublishProgress(pctx, msg); err != nil && ctx.Err() == nil {
		p.n.log.Debug("publish migration progress", zap.String("migration", p.migration), zap.Error(err))
	}
}

// transfer runs this node's part of the change in st.
func (d *driver) transfer(ctx context.Context, st *membership.State) error {
	n := d.n
	c := st.Change
	// What it gains starts empty; nothing may be pulled in before.
	if err := n.prepare(st); err != nil {
		return err
	}
	var moves []membership.TenantMove
	for _, mv := range st.Moves() {
		if slices.Contains(mv.Targets(), n.cfg.ID) {
			moves = append(moves, mv)
		}
	}
	// Its own copy counts as a source, unless it lost its data.
	refilling := st.Nodes[n.cfg.ID].Refilling
	keys, err := d.pull(ctx, st, pullJob{
		id: c.ID, moves: moves,
		checkpoint: func(mv membership.TenantMove) string { return checkpointName(c.ID, mv) },
		holds:      func(mv membership.TenantMove) bool { return !refilling && slices.Contains(mv.From, n.cfg.ID) },
	})
	if err != nil {
		return err
	}
	return d.reportDone(ctx, st, keys)
}

// pullJob is a set of (tenant, arc) this node pulls from the arcs' current
// replicas: a change's transfer, or a refill.
type pullJob struct {
	// id names the job in progress reports (a migration id).
	id    string
	moves []membership.TenantMove
	// checkpoint names a move's durable progress.
	checkpoint func(membership.TenantMove) string
	// holds says this node's own copy of the move's arc is one of its
	// replicas' copies (it was in From and kept its data).
	holds func(membership.TenantMove) bool
}

// pull moves every range of job to this node and verifies it, from the
// checkpoints on, and returns the keys it moved.
func (d *driver) pull(ctx context.Context, st *membership.State, job pullJob) (uint64, error) {
	n := d.n
	p := &progress{n: n, migration: job.id}
	totalKey := fmt.Sprintf("%s@%d", job.id, st.Epoch)
	total, known := d.totals[totalKey]
	cks := make([]checkpoint, len(job.moves))
	for i, mv := range job.moves {
		ck, err := n.loadCheckpoint(job.checkpoint(mv))
		if err != nil {
			return 0, err
		}
		cks[i] = ck
		p.transferred += ck.Keys
		if !known {
			if ck.Verified {
				total += ck.Keys
			} else if _, keys, _, err := d.sourceDigest(ctx, st, mv); err == nil {
				total += keys
			}
		}
	}
	d.totals[totalKey] = total
	p.total = total
	n.log.Info("transfer starting", zap.String("migration", job.id), zap.Int("ranges", len(job.moves)),
		zap.Uint64("keys_total", total), zap.Uint64("keys_done", p.transferred))
	p.publish(ctx, false, nil, true)
	start := time.Now()
	for i, mv := range job.moves {
		self := 0
		if job.holds(mv) {
			self = 1
		}
		if err := d.transferMove(ctx, st, mv, job.checkpoint(mv), self, cks[i], p); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err() // stopping: the checkpoint resumes it
			}
			n.met.transfer(transferFailed)
			p.publish(ctx, false, err, true)
			return 0, errors.Wrapf(err, "%s: tenant %s range (%d, %d]", job.id, mv.Tenant, mv.Arc.Start, mv.Arc.End)
		}
	}
	p.publish(ctx, true, nil, true)
	n.log.Info("transfer verified", zap.String("migration", job.id), zap.Int("ranges", len(job.moves)),
		zap.Uint64("keys", p.transferred), zap.Duration("took", time.Since(start)))
	return p.transferred, nil
}

// sources are the live current replicas of mv to pull from, in preference
// order: never a dead one (force removal), nor one that lost its data and
// is being refilled.
func (d *driver) sources(st *membership.State, mv membership.TenantMove) []string {
	var out []string
	for _, id := range mv.From {
		if id != d.n.cfg.ID && id != st.Dead() && !st.Nodes[id].Refilling {
			out = append(out, id)
		}
	}
	return out
}

// sourceDigest asks the sources in turn for the arc's digest.
func (d *driver) sourceDigest(ctx context.Context, st *membership.State, mv membership.TenantMove) ([]byte, uint64, string, error) {
	var errs error
	for _, src := range d.sources(st, mv) {
		digest, keys, err := d.digestFrom(ctx, st, mv, src)
		if err == nil {
			return digest, keys, src, nil
		}
		errs = errors.CombineErrors(errs, err)
	}
	if errs == nil {
		errs = errors.New("no live source replica")
	}
	return nil, 0, "", errs
}

type digestResult struct {
	digest []byte
	err    error
}

// prefetchDigests asks each of srcs for the arc's digest on goroutines of
// wg; each answer (or error, bounded by peerTimeout) arrives on its channel.
func (d *driver) prefetchDigests(ctx context.Context, st *membership.State, mv membership.TenantMove,
	srcs []string, wg *sync.WaitGroup) map[string]chan digestResult {
	out := make(map[string]chan digestResult, len(srcs))
	for _, src := range srcs {
		ch := make(chan digestResult, 1) // never blocks, read or not
		out[src] = ch
		wg.Go(func() {
			digest, _, err := d.digestFrom(ctx, st, mv, src)
			ch <- digestResult{digest: digest, err: err}
		})
	}
	return out
}

// digestFrom asks src for the arc's digest and key count.
func (d *driver) digestFrom(ctx context.Context, st *membership.State, mv membership.TenantMove, src string) ([]byte, uint64, error) {
	resp := &pb.DigestResponse{}
	rctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	err := bus.Request(rctx, d.n.nc, d.n.cfg.Subjects.Node(src, bus.OpDigest), &pb.DigestRequest{
		TenantId: mv.Tenant, Range: &pb.HashRange{Start: mv.Arc.Start, End: mv.Arc.End}, Epoch: st.Epoch,
	}, resp)
	if err != nil {
		return nil, 0, errors.Wrapf(err, "digest from %s", src)
	}
	return resp.GetDigest(), resp.GetKeys(), nil
}

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
func (d *driver) transferMove(ctx context.Context, st *membership.State, mv membership.TenantMove, name string,
	self int, ck checkpoint, p *progress) error {
	n := d.n
	if ck.Verified {
		return nil
	}
	// Pages merge into the tenant's live incarnation; a deleted tenant's
	// data is not moved.
	if _, gone, err := n.localTenant(mv.Tenant); err != nil || gone {
		return err
	}
	if ck.HasAfter || ck.Keys > 0 {
		n.met.transfer(transferResumed)
		n.log.Info("resuming a range transfer from its checkpoint", zap.String("tenant", mv.Tenant),
			zap.Uint64("start", mv.Arc.Start), zap.Uint64("end", mv.Arc.End), zap.Uint64("keys_done", ck.Keys))
	}
	sources := d.sources(st, mv)
	// Dead replicas (force removal) are not asked: with none left alive
	// there is nothing to copy, and the arc is accepted as it is here.
	need := min((len(mv.From)+1)/2, len(sources)+self)
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
		early = d.prefetchDigests(ctx, st, mv, todo[1:], &fetching)
	}
	var (
		errs  error
		local []byte // this node's digest as of the last check (it only grows)
	)
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
		if local, err = d.verifyFrom(ctx, st, mv, src, name, &ck, p, first, local, remote); err != nil {
			if ctx.Err() != nil {
				return errors.Wrap(ctx.Err(), "transfer interrupted")
			}
			n.log.Warn("transfer source failed; trying the others", zap.String("source", src),
				zap.String("tenant", mv.Tenant), zap.Error(err))
			errs = errors.CombineErrors(errs, errors.Wrapf(err, "pull from %s", src))
			continue
		}
		// Saved with the next page or the verdict: after a restart an
		// unsaved one costs a digest check again.
		ck.VerifiedBy = append(ck.VerifiedBy, src)
		ck.Source, ck.HasAfter, ck.AfterHash, ck.AfterKey = "", false, 0, ""
	}
	if got := len(ck.VerifiedBy) + self; got < need {
		if errs == nil {
			errs = errors.New("too few live source replicas")
		}
		return errors.Wrapf(errs, "range verified against %d of %v; %d needed", got, mv.From, need)
	}
	ck.Verified = true
	n.met.transfer(transferVerified)
	return n.saveCheckpoint(name, ck)
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
func (d *driver) verifyFrom(ctx context.Context, st *membership.State, mv membership.TenantMove, src, name string,
	ck *checkpoint, p *progress, first bool, local, remote []byte) ([]byte, error) {
	n := d.n
	if ck.Source != src {
		ck.Source, ck.HasAfter, ck.AfterHash, ck.AfterKey = src, false, 0, ""
	}
	equal := func(fresh bool) (bool, error) {
		theirs, _, err := d.digestFrom(ctx, st, mv, src)
		if err != nil {
			return false, err
		}
		if fresh || local == nil {
			if local, _, err = n.eng.Digest(mv.Tenant, mv.Arc); err != nil {
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
		merged, err := d.pullFrom(ctx, st, mv, src, name, ck, p, first)
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
		ck.HasAfter, ck.AfterHash, ck.AfterKey = false, 0, ""
		if err := n.saveCheckpoint(name, *ck); err != nil {
			return nil, err
		}
	}
	return nil, errors.Newf("digests still differ after %d passes (live writes keep changing the range); will retry", maxPasses)
}

// pullFrom runs one pass over the arc from src, from the checkpoint to the
// end, and returns how many keys changed locally. count says whether the
// keys it scans count as transferred, or only the ones it changes.
func (d *driver) pullFrom(ctx context.Context, st *membership.State, mv membership.TenantMove, src, name string,
	ck *checkpoint, p *progress, count bool) (merged int, err error) {
	n := d.n
	subject := n.cfg.Subjects.Node(src, bus.OpScan)
	for page := 0; ; page++ {
		if h := n.cfg.transferHook; h != nil {
			h(ctx, page)
		}
		if err := ctx.Err(); err != nil {
			return merged, err
		}
		req := &pb.ScanRequest{
			TenantId: mv.Tenant, Range: &pb.HashRange{Start: mv.Arc.Start, End: mv.Arc.End},
			HasAfter: ck.HasAfter, AfterHash: ck.AfterHash, AfterKey: ck.AfterKey,
			Limit: uint32(n.cfg.TransferPageSize), Epoch: st.Epoch,
		}
		resp := &pb.ScanResponse{}
		rctx, cancel := context.WithTimeout(ctx, peerTimeout)
		err := bus.Request(rctx, n.nc, subject, req, resp)
		cancel()
		if err != nil {
			return merged, err
		}
		items := make([]engine.MergeItem, 0, len(resp.GetItems()))
		for _, it := range resp.GetItems() {
			items = append(items, engine.MergeItem{Key: it.GetKey(), Object: dvvpb.ObjectFromProto(it.GetObject())})
		}
		// Merged under the tenant's conflict policy, as every merge is.
		changed, err := n.mergeBatch(mv.Tenant, items, dvvpb.PolicyFromProto(n.policyOf(mv.Tenant, pb.ConflictPolicy_SIBLINGS)))
		if err != nil {
			return merged, errors.Wrap(err, "merge transferred page")
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
			n.met.keysTransferred.Add(k)
		}
		if resp.GetDone() {
			// The pass is complete; the position restarts at the next pass.
			return merged, n.saveCheckpoint(name, *ck)
		}
		if len(resp.GetItems()) == 0 {
			return merged, errors.Newf("source %s sent an empty page that is not the last", src)
		}
		if err := n.saveCheckpoint(name, *ck); err != nil {
			return merged, err
		}
		p.publish(ctx, false, nil, false)
	}
}

// reportDone has TransferDone appended for this node, retrying lost races
// while the change still runs and still waits for this node.
func (d *driver) reportDone(ctx context.Context, st *membership.State, keys uint64) error {
	n := d.n
	id := st.Change.ID
	for {
		cur := n.mem.State()
		c := cur.Change
		if c == nil || c.ID != id || !c.Targets[n.cfg.ID] {
			return nil
		}
		if _, done := c.Done[n.cfg.ID]; done {
			return nil
		}
		if cur.Epoch != st.Epoch {
			// Placement moved mid-change (a node re-registered): the arcs
			// this node gains may differ; the next reconcile recomputes them
			// and keeps the verified ones.
			return errors.Wrap(errPlacementMoved, "transfer done not reported")
		}
		actx, cancel := context.WithTimeout(ctx, adminTimeout)
		seq, err := n.mem.ReportTransferDone(actx, cur.Seq, n.eng.Incarnation(),
			&pb.TransferDone{MigrationId: id, NodeId: n.cfg.ID, Keys: keys})
		if err == nil {
			err = n.mem.WaitFor(actx, seq)
			cancel()
			n.log.Info("transfer done reported", zap.String("migration", id), zap.Uint64("seq", seq), zap.Uint64("keys", keys))
			return errors.Wrap(err, "fold own transfer done")
		}
		if !status.Is(err, pb.ErrorCode_VERSION_CONFLICT) {
			cancel()
			return errors.Wrap(err, "append transfer done")
		}
		err = n.mem.WaitFor(actx, cur.Seq+1)
		cancel()
		if err != nil {
			return errors.Wrap(err, "fold the event that won the race")
		}
	}
}
