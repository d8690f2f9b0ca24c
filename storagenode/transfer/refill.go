package transfer

import (
	"context"
	"fmt"
	"strings"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Refill (DESIGN.md §7). A node that comes back with an empty disk under a
// known id registers a new incarnation, and the ring log marks it
// refilling: it keeps its place on the ring, so no other node silently
// becomes a replica of its arcs; it takes writes at once; and it serves no
// reads (the coordinators leave it out, and it refuses them itself) until
// it holds its arcs again. The driver pulls every arc it replicates from
// the arc's other replicas, exactly as a transfer does (every live one, a
// majority verified by digest), then asks for RefillDone on the fold it
// pulled for. If data moved between nodes since (a change started or
// ended, another node lost its data), that fold no longer holds: the
// coordinators refuse and the driver pulls again, keeping the arcs whose
// checkpoints still match.

const refillPrefix = "refill/"

// refillCheckpointName names a refill's progress on one arc: the
// incarnation and the arc's replicas are part of it, so a checkpoint is
// reused only for the same arc of the same refill.
func refillCheckpointName(incarnation string, mv membership.TenantMove) string {
	return fmt.Sprintf("%s%s/%s/%d-%d/%s", refillPrefix, incarnation, mv.Tenant, mv.Arc.Start, mv.Arc.End, strings.Join(mv.From, ","))
}

// RefillID is the migration id a refill's progress is reported under.
func RefillID(node string) string { return "refill-" + node }

// refill pulls every arc this node replicates on st's ring and reports it
// refilled.
func (m *Mover) refill(ctx context.Context, st *membership.State) error {
	inc := m.cfg.Engine.Incarnation()
	moves := st.Refill(m.cfg.ID)
	if len(moves) > 0 {
		m.log.Info("this node lost its data: refilling it from the other replicas before it serves reads",
			zap.Int("ranges", len(moves)), zap.Uint64("seq", st.Seq))
	}
	keys, err := m.pull(ctx, st, pullJob{
		id: RefillID(m.cfg.ID), moves: moves,
		checkpoint: func(mv membership.TenantMove) string { return refillCheckpointName(inc, mv) },
		holds:      func(membership.TenantMove) bool { return false },
	})
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	seq, err := m.cfg.Ring.ReportRefilled(actx, m.cfg.ID, inc, st.Seq, keys)
	if status.Is(err, pb.ErrorCode_VERSION_CONFLICT) {
		return errors.Wrap(ErrPlacementMoved, err.Error())
	}
	if err != nil {
		return errors.Wrap(err, "report the refill")
	}
	if err := m.cfg.Ring.WaitFor(actx, seq); err != nil {
		return errors.Wrap(err, "fold own refill")
	}
	m.log.Info("refilled: serving reads again", zap.Uint64("keys", keys), zap.Uint64("seq", seq))
	return errors.Wrap(m.cfg.Engine.DeleteMetaPrefix(refillPrefix), "drop refill checkpoints")
}
