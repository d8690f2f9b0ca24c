package transfer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
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

// transfer runs this node's part of the change in st.
func (m *Mover) transfer(ctx context.Context, st *membership.State) error {
	c := st.Change
	// What it gains starts empty; nothing may be pulled in before.
	if err := m.cfg.Prepare(st); err != nil {
		return err
	}
	var moves []membership.TenantMove
	for _, mv := range st.Moves() {
		if slices.Contains(mv.Targets(), m.cfg.ID) {
			moves = append(moves, mv)
		}
	}
	// Its own copy counts as a source, unless it lost its data.
	refilling := st.Nodes[m.cfg.ID].Refilling
	keys, err := m.pull(ctx, st, pullJob{
		id: c.ID, moves: moves,
		checkpoint: func(mv membership.TenantMove) string { return checkpointName(c.ID, mv) },
		holds:      func(mv membership.TenantMove) bool { return !refilling && slices.Contains(mv.From, m.cfg.ID) },
	})
	if err != nil {
		return err
	}
	return m.reportDone(ctx, st, keys)
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
func (m *Mover) pull(ctx context.Context, st *membership.State, job pullJob) (uint64, error) {
	p := &progress{m: m, migration: job.id}
	cks, err := m.loadJob(ctx, st, job, p)
	if err != nil {
		return 0, err
	}
	m.log.Info("transfer starting", zap.String("migration", job.id), zap.Int("ranges", len(job.moves)),
		zap.Uint64("keys_total", p.total), zap.Uint64("keys_done", p.transferred))
	p.publish(ctx, false, nil, true)
	start := time.Now()
	for i, mv := range job.moves {
		self := 0
		if job.holds(mv) {
			self = 1
		}
		if err := m.transferMove(ctx, st, mv, job.checkpoint(mv), self, cks[i], p); err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err() // stopping: the checkpoint resumes it
			}
			m.met.transfer(transferFailed)
			p.publish(ctx, false, err, true)
			return 0, errors.Wrapf(err, "%s: tenant %s range (%d, %d]", job.id, mv.Tenant, mv.Arc.Start, mv.Arc.End)
		}
	}
	p.publish(ctx, true, nil, true)
	m.log.Info("transfer verified", zap.String("migration", job.id), zap.Int("ranges", len(job.moves)),
		zap.Uint64("keys", p.transferred), zap.Duration("took", time.Since(start)))
	return p.transferred, nil
}

// loadJob reads the checkpoints of job's moves and sets p's counts: the
// keys already moved, and the keys the job moves in all (asked of the
// sources once per job and epoch).
func (m *Mover) loadJob(ctx context.Context, st *membership.State, job pullJob, p *progress) ([]checkpoint, error) {
	totalKey := fmt.Sprintf("%s@%d", job.id, st.Epoch)
	total, known := m.totals[totalKey]
	cks := make([]checkpoint, len(job.moves))
	for i, mv := range job.moves {
		ck, err := m.loadCheckpoint(job.checkpoint(mv))
		if err != nil {
			return nil, err
		}
		cks[i] = ck
		p.transferred += ck.Keys
		if !known {
			if ck.Verified {
				total += ck.Keys
			} else if _, keys, _, err := m.sourceDigest(ctx, st, mv); err == nil {
				total += keys
			}
		}
	}
	m.totals[totalKey] = total
	p.total = total
	return cks, nil
}

// sources are the live current replicas of mv to pull from, in preference
// order: never a dead one (force removal), nor one that lost its data and
// is being refilled.
func (m *Mover) sources(st *membership.State, mv membership.TenantMove) []string {
	var out []string
	for _, id := range mv.From {
		if id != m.cfg.ID && id != st.Dead() && !st.Nodes[id].Refilling {
			out = append(out, id)
		}
	}
	return out
}

// sourceDigest asks the sources in turn for the arc's digest.
func (m *Mover) sourceDigest(ctx context.Context, st *membership.State, mv membership.TenantMove) ([]byte, uint64, string, error) {
	var errs error
	for _, src := range m.sources(st, mv) {
		digest, keys, err := m.digestFrom(ctx, st, mv, src)
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
func (m *Mover) prefetchDigests(ctx context.Context, st *membership.State, mv membership.TenantMove,
	srcs []string, wg *sync.WaitGroup) map[string]chan digestResult {
	out := make(map[string]chan digestResult, len(srcs))
	for _, src := range srcs {
		ch := make(chan digestResult, 1) // never blocks, read or not
		out[src] = ch
		wg.Go(func() {
			digest, _, err := m.digestFrom(ctx, st, mv, src)
			ch <- digestResult{digest: digest, err: err}
		})
	}
	return out
}

// digestFrom asks src for the arc's digest and key count.
func (m *Mover) digestFrom(ctx context.Context, st *membership.State, mv membership.TenantMove, src string) ([]byte, uint64, error) {
	resp := &pb.DigestResponse{}
	rctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	err := m.cfg.Request(rctx, src, bus.OpDigest, &pb.DigestRequest{
		TenantId: mv.Tenant, Range: &pb.HashRange{Start: mv.Arc.Start, End: mv.Arc.End}, Epoch: st.Epoch,
	}, resp)
	if err != nil {
		return nil, 0, errors.Wrapf(err, "digest from %s", src)
	}
	return resp.GetDigest(), resp.GetKeys(), nil
}

// reportDone has TransferDone appended for this node, retrying lost races
// while the change still runs and still waits for this node.
func (m *Mover) reportDone(ctx context.Context, st *membership.State, keys uint64) error {
	id := st.Change.ID
	for {
		cur := m.cfg.Ring.State()
		c := cur.Change
		if c == nil || c.ID != id || !c.Targets[m.cfg.ID] {
			return nil
		}
		if _, done := c.Done[m.cfg.ID]; done {
			return nil
		}
		if cur.Epoch != st.Epoch {
			// Placement moved mid-change (a node re-registered): the arcs
			// this node gains may differ; the next reconcile recomputes them
			// and keeps the verified ones.
			return errors.Wrap(ErrPlacementMoved, "transfer done not reported")
		}
		actx, cancel := context.WithTimeout(ctx, adminTimeout)
		seq, err := m.cfg.Ring.ReportTransferDone(actx, cur.Seq, m.cfg.Engine.Incarnation(),
			&pb.TransferDone{MigrationId: id, NodeId: m.cfg.ID, Keys: keys})
		if err == nil {
			err = m.cfg.Ring.WaitFor(actx, seq)
			cancel()
			m.log.Info("transfer done reported", zap.String("migration", id), zap.Uint64("seq", seq), zap.Uint64("keys", keys))
			return errors.Wrap(err, "fold own transfer done")
		}
		if !status.Is(err, pb.ErrorCode_VERSION_CONFLICT) {
			cancel()
			return errors.Wrap(err, "append transfer done")
		}
		err = m.cfg.Ring.WaitFor(actx, cur.Seq+1)
		cancel()
		if err != nil {
			return errors.Wrap(err, "fold the event that won the race")
		}
	}
}
