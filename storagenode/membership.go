package storagenode

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Membership is the ring log as a node uses it: the folded state, live
// notifications, and the requests a node makes of the coordinators. A node
// never writes the log itself: it asks, and a coordinator validates and
// appends (coordinator/members.go); NATS permissions bind each node to its
// own id (deploy/nats). The wiring (cluster/) implements it over NATS.
// transfer.RingLog and heal.Ring are the parts of it those packages use.
type Membership interface {
	// State is the latest fold of the ring log (immutable).
	State() *membership.State
	// Changed returns a channel closed at the next folded event.
	Changed() <-chan struct{}
	// WaitForEpoch blocks until the fold's epoch is at least epoch.
	WaitForEpoch(ctx context.Context, epoch uint64) error
	// Register has (id, incarnation) recorded unless the log already
	// knows it, and returns once the fold shows it.
	Register(ctx context.Context, id, incarnation string) error
	// ReportTransferDone has done (this node's TransferDone) appended if the
	// log's last sequence is still expectedSeq, and returns the event's
	// sequence; a log that moved is VERSION_CONFLICT.
	ReportTransferDone(ctx context.Context, expectedSeq uint64, incarnation string, done *pb.TransferDone) (uint64, error)
	// ReportRefilled has RefillDone recorded for this node (id,
	// incarnation), refilled on the ring as folded at basisSeq, and returns
	// the event's sequence; VERSION_CONFLICT when data moved since.
	ReportRefilled(ctx context.Context, id, incarnation string, basisSeq, keys uint64) (uint64, error)
	// WaitFor blocks until the fold has reached log sequence seq.
	WaitFor(ctx context.Context, seq uint64) error
	// PublishProgress records a target's transfer progress.
	PublishProgress(ctx context.Context, p *pb.MigrationProgress) error
}

// registerTimeout bounds one registration attempt.
const registerTimeout = 5 * time.Second

// register announces this node's (id, incarnation), bounded by a timeout.
// Start calls it once; on failure the driver keeps retrying.
func (n *Node) registerSelf(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	if err := n.mem.Register(ctx, n.cfg.ID, n.eng.Incarnation()); err != nil {
		return status.Wrap(status.CodeOf(err), err, "register node %s (incarnation %s) in the ring log", n.cfg.ID, n.eng.Incarnation())
	}
	return nil
}

// registered reports whether st knows this node under its incarnation.
func (n *Node) registered(st *membership.State) bool {
	me, ok := st.Nodes[n.cfg.ID]
	return ok && me.Incarnation == n.eng.Incarnation()
}

// epochOf is the node's epoch (0 in static mode).
func (n *Node) epochOf() uint64 {
	if n.mem == nil {
		return 0
	}
	return n.mem.State().Epoch
}

// ringState is this node's state as its fold says: JOINING, NORMAL, ...,
// REGISTERED when it is known but not a member (or not yet known under its
// incarnation), and "" in static mode.
func (n *Node) ringState() string {
	if n.mem == nil {
		return ""
	}
	st := n.mem.State()
	me, ok := st.Nodes[n.cfg.ID]
	if !ok || me.Incarnation != n.eng.Incarnation() {
		return membership.Registered.String()
	}
	return me.Shown()
}

// checkEpoch compares a request's epoch with the node's. A request from an
// older ring (epoch > 0 and below the node's) is STALE_EPOCH: the sender
// refreshes and retries. A request from a newer ring waits, bounded, until
// the node has folded it, so that e.g. a transfer source knows about the
// change before it serves a scan and rejects stale writes from then on.
// It returns the node's epoch, which every response carries.
func (n *Node) checkEpoch(ctx context.Context, op string, epoch uint64) (uint64, error) {
	if n.mem == nil {
		return 0, nil
	}
	st := n.mem.State()
	if epoch > st.Epoch {
		wctx, cancel := context.WithTimeout(ctx, n.cfg.EpochWait)
		err := n.mem.WaitForEpoch(wctx, epoch)
		cancel()
		if err != nil {
			return st.Epoch, status.Wrap(pb.ErrorCode_UNAVAILABLE, err,
				"%s: node %s is at epoch %d and has not caught up with the sender's epoch %d yet; retry", op, n.cfg.ID, st.Epoch, epoch)
		}
		st = n.mem.State()
	}
	if epoch > 0 && epoch < st.Epoch {
		n.met.staleEpoch.Inc()
		return st.Epoch, status.Errorf(pb.ErrorCode_STALE_EPOCH,
			"%s at epoch %d is stale: node %s is at epoch %d; refresh the ring and retry", op, epoch, n.cfg.ID, st.Epoch)
	}
	// The storage is ready for the epoch (gains.go): arcs the node gains
	// in it are cleared before anything is written there.
	gctx, cancel := context.WithTimeout(ctx, n.cfg.EpochWait)
	err := n.gate.wait(gctx, st.Epoch)
	cancel()
	if err != nil {
		return st.Epoch, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "%s: node %s is preparing for epoch %d; retry", op, n.cfg.ID, st.Epoch)
	}
	if !n.registered(st) {
		// A process that just started on an empty disk under a known id
		// must not answer for the incarnation that held the data.
		return st.Epoch, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"%s: node %s runs incarnation %s, which the ring log does not know yet; retry", op, n.cfg.ID, n.eng.Incarnation())
	}
	return st.Epoch, nil
}

// checkServing refuses a read while this node is being refilled: it does
// not hold its arcs' data yet (the coordinators leave it out of reads; a
// read reaching it anyway is answered UNAVAILABLE, never with a miss).
func (n *Node) checkServing(op string) error {
	if n.mem == nil {
		return nil
	}
	if me := n.mem.State().Nodes[n.cfg.ID]; me.Refilling {
		return status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"%s: node %s lost its data and is being refilled from the other replicas; it serves no reads until then", op, n.cfg.ID)
	}
	return nil
}

// logStateOnce logs this node's ring state when it changes.
func (d *driver) logState(st *membership.State) {
	me := st.Nodes[d.n.cfg.ID]
	if me.State == d.lastState {
		return
	}
	d.lastState = me.State
	d.n.log.Info("ring state", zap.String("state", me.Shown()), zap.Uint64("epoch", st.Epoch))
}
