package storagenode

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/storagenode/transfer"
)

// The membership driver is one goroutine per node, owned by the Node and
// stopped by Stop. It wakes on every ring log event and on a ticker and
// reconciles the node with the fold:
//
//   - not registered under its incarnation: register (again);
//   - a tenant deleted, or created again: drop its old data (tenants.go);
//   - then the data movement the fold asks for: refill, a change's
//     transfer, or cleanup after the grace (transfer.Mover.Reconcile).
//
// Everything it does is driven by durable state (the ring log and the
// node's checkpoints), so a restart resumes rather than forgets.

// adminTimeout bounds one admin request the node makes.
const adminTimeout = 10 * time.Second

type driver struct {
	n      *Node
	mover  *transfer.Mover
	cancel context.CancelFunc
	done   chan struct{}

	lastState membership.NodeState
	failing   bool // the last reconcile failed; logged once per streak

	// reported is the sequence of each tenant's removal this process has
	// reported done (tenants.go).
	reported map[string]uint64
}

func (n *Node) startDriver() {
	ctx, cancel := context.WithCancel(context.Background())
	d := &driver{n: n, mover: n.newMover(), cancel: cancel, done: make(chan struct{}), reported: map[string]uint64{}}
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
		if errors.Is(err, transfer.ErrPlacementMoved) {
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
	return d.mover.Reconcile(ctx, st)
}
