package storagenode

import (
	"context"
	"slices"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
)

// The membership driver is one goroutine per node, owned by the Node and
// stopped by Stop. It wakes on every ring log event and on a ticker and
// reconciles the node with the fold:
//
//   - not registered under its incarnation: register (again);
//   - a change runs and this node is a target that has not reported: pull
//     every (tenant, arc) it gains, verify, report TransferDone;
//   - refilling (it came back with an empty disk under a known id): pull
//     every (tenant, arc) it replicates, verify, report RefillDone
//     (refill.go);
//   - NORMAL, no change, CleanupGrace after the last cutover: delete the
//     ranges it no longer replicates.
//
// Everything it does is driven by durable state (the ring log and the
// node's checkpoints), so a restart resumes rather than forgets.

// adminTimeout bounds one admin request the node makes.
const adminTimeout = 10 * time.Second

type driver struct {
	n      *Node
	cancel context.CancelFunc
	done   chan struct{}

	lastState membership.NodeState
	failing   bool // the last reconcile failed; logged once per streak

	// cleanup bookkeeping: the epoch of the last cutover this node folded
	// (epoch moved while no change ran), when it saw it, and whether that
	// epoch's cleanup finished.
	cutoverEpoch uint64
	cutoverAt    time.Time
	cleaned      bool

	// totals caches the keys a migration moves to this node (sum of the
	// sources' digest key counts), keyed by migration id and epoch.
	totals map[string]uint64
	// reported is the sequence of each tenant's removal this process has
	// reported done (tenants.go).
	reported map[string]uint64
}

func (n *Node) startDriver() {
	ctx, cancel := context.WithCancel(context.Background())
	d := &driver{n: n, cancel: cancel, done: make(chan struct{}), totals: map[string]uint64{}, reported: map[string]uint64{}}
	n.drv = d
	go d.run(ctx)
}

// stop cancels the driver and waits for it; every wait inside it is bound
// to the cancelled context.
func (d *driver) stop() {
	d.cancel()
	<-d.done
}

func (d *driver) run(ctx context.Context) {
	defer close(d.done)
	t := time.NewTicker(d.n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		changed := d.n.mem.Changed()
		err := d.reconcile(ctx)
		if errors.Is(err, errPlacementMoved) {
			// Not a failure: the next round works on the new fold.
			d.n.log.Debug("membership work restarts on a newer ring", zap.Error(err))
			err = nil
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !d.failing:
			d.n.log.Warn("membership work failed; will retry", zap.Error(err))
		case err == nil && d.failing:
			d.n.log.Info("membership work recovered")
		}
		d.failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
	}
}

func (d *driver) reconcile(ctx context.Context) error {
	n := d.n
	st := n.mem.State()
	if !n.registered(st) {
		if err := n.registerSelf(ctx); err != nil {
			return err
		}
		st = n.mem.State()
	}
	d.logState(st)
	if err := d.dropDeletedTenants(ctx, st); err != nil {
		return err
	}
	me := st.Nodes[n.cfg.ID]
	if st.Change == nil && st.Epoch != d.cutoverEpoch {
		d.cutoverEpoch, d.cutoverAt, d.cleaned = st.Epoch, time.Now(), false
		clear(d.totals)
		// No change runs: every transfer checkpoint is obsolete.
		if err := n.eng.DeleteMetaPrefix(checkpointPrefix); err != nil {
			return errors.Wrap(err, "drop finished transfer checkpoints")
		}
	}
	switch {
	case me.Refilling:
		// First: until it is refilled, reads skip this node.
		return d.refill(ctx, st)
	case st.Change != nil:
		c := st.Change
		if _, done := c.Done[n.cfg.ID]; c.Targets[n.cfg.ID] && !done {
			return d.transfer(ctx, st)
		}
	case me.State == membership.Normal && !d.cleaned && time.Since(d.cutoverAt) >= n.cfg.CleanupGrace:
		return d.cleanup(ctx, st)
	}
	return nil
}

// cleanup deletes every (tenant, arc) this node holds but does not
// replicate under the current ring. It runs only with no change in
// progress, and rechecks that under the placement lock right before each
// deletion, so a write routed on a newer ring is never deleted.
func (d *driver) cleanup(ctx context.Context, st *membership.State) error {
	n := d.n
	rfs := tenantRFs(st)
	tenants, err := n.eng.Tenants()
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
			n.log.Info("cleanup skips a tenant whose replication factor the ring log does not know yet",
				zap.String("tenant", t), zap.Uint64("epoch", st.Epoch))
			continue
		}
		arcs, ok := lost[rf]
		if !ok {
			arcs = lostArcs(st.Current(), int(rf), n.cfg.ID)
			lost[rf] = arcs
		}
		for _, a := range arcs {
			deleted, err := d.deleteArc(st, t, a)
			if err != nil {
				return err
			}
			total += deleted
		}
	}
	d.cleaned = true
	n.log.Info("cleanup done", zap.Uint64("epoch", st.Epoch), zap.Uint64("deleted_keys", total))
	return nil
}

var errPlacementMoved = errors.New("the ring changed; the work is recomputed")

func (d *driver) deleteArc(st *membership.State, tenant string, a ring.Arc) (uint64, error) {
	n := d.n
	n.placeMu.Lock()
	defer n.placeMu.Unlock()
	if cur := n.mem.State(); cur.Epoch != st.Epoch || cur.Change != nil {
		return 0, errors.Wrap(errPlacementMoved, "cleanup stopped")
	}
	deleted, err := n.eng.DeleteArc(tenant, a)
	if err != nil {
		return 0, errors.Wrapf(err, "cleanup of tenant %s", tenant)
	}
	if deleted > 0 {
		n.met.cleanupDeleted.Add(int(deleted))
		n.log.Debug("deleted a range this node no longer replicates", zap.String("tenant", tenant),
			zap.Uint64("start", a.Start), zap.Uint64("end", a.End), zap.Uint64("keys", deleted))
	}
	return deleted, nil
}

// tenantRFs are the replication factors the ring log knows, for every live
// tenant (a tenant it does not know is kept as it is).
func tenantRFs(st *membership.State) map[string]uint32 {
	out := map[string]uint32{}
	for t := range st.Tenants {
		if cur, _ := st.TenantRF(t); cur > 0 {
			out[t] = cur
		}
	}
	return out
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
