package transfer

import (
	"context"
	"slices"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
)

// cleanup deletes every (tenant, arc) this node holds but does not
// replicate under the current ring. It runs only with no change in
// progress, and rechecks that under the placement lock right before each
// deletion, so a write routed on a newer ring is never deleted.
func (m *Mover) cleanup(ctx context.Context, st *membership.State) error {
	rfs := st.TenantRFs()
	tenants, err := m.cfg.Engine.Tenants()
	if err != nil {
		return errors.Wrap(err, "cleanup: list tenants")
	}
	lost := map[uint32][]ring.Arc{}
	var total uint64
	for _, t := range tenants {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rf, ok := rfs[t]
		if !ok || rf == 0 {
			m.log.Info("cleanup skips a tenant whose replication factor the ring log does not know yet",
				zap.String("tenant", t), zap.Uint64("epoch", st.Epoch))
			continue
		}
		arcs, ok := lost[rf]
		if !ok {
			arcs = lostArcs(st.Current(), int(rf), m.cfg.ID)
			lost[rf] = arcs
		}
		for _, a := range arcs {
			deleted, err := m.deleteArc(st, t, a)
			if err != nil {
				return err
			}
			total += deleted
		}
	}
	m.cleaned = true
	m.log.Info("cleanup done", zap.Uint64("epoch", st.Epoch), zap.Uint64("deleted_keys", total))
	return nil
}

func (m *Mover) deleteArc(st *membership.State, tenant string, a ring.Arc) (uint64, error) {
	m.cfg.Placement.Lock()
	defer m.cfg.Placement.Unlock()
	if cur := m.cfg.Ring.State(); cur.Epoch != st.Epoch || cur.Change != nil {
		return 0, errors.Wrap(ErrPlacementMoved, "cleanup stopped")
	}
	deleted, err := m.cfg.Engine.DeleteArc(tenant, a)
	if err != nil {
		return 0, errors.Wrapf(err, "cleanup of tenant %s", tenant)
	}
	if deleted > 0 {
		m.met.cleanupDeleted.Add(int(deleted))
		m.log.Debug("deleted a range this node no longer replicates", zap.String("tenant", tenant),
			zap.Uint64("start", a.Start), zap.Uint64("end", a.End), zap.Uint64("keys", deleted))
	}
	return deleted, nil
}

// lostArcs are the arcs of r whose first rf replicas do not include id.
func lostArcs(r *ring.Ring, rf int, id string) []ring.Arc {
	var out []ring.Arc
	// Diff against no replicas at all lists every arc with its replicas.
	for _, mv := range ring.Diff(r, rf, r, 0) {
		if !slices.Contains(mv.From, id) {
			out = append(out, mv.Arc)
		}
	}
	return out
}
