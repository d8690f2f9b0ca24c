package heal

import (
	"bytes"
	"context"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Tombstone collection (issue 5 item 5). A key is due for collection when
// every sibling is a tombstone and the newest is older than TombstoneGrace
// (engine.PurgeEligible). A node purges its due keys of an arc only at the
// end of that arc's anti-entropy step, and only when
//
//   - no membership change runs and no node is JOINING or LEAVING, so the
//     current replicas are all the replicas a key has;
//   - every other current replica answered, and all digests are equal with
//     due tombstones counted as absent: no replica holds a live value (or
//     a newer version) that such a tombstone deleted, so none can bring the
//     key back once the tombstone is gone.
//
// Replicas purge independently, at their own rounds; until they have, the
// ones that did not purge yet still digest equal to the ones that did.
// A write to a purged key gets a dot no purged tombstone covers (the
// engine's dot counter is node-wide), so it is never mistaken for history.
// The grace is the cluster's (membership.Settings, recorded in the ring log
// at bootstrap): it exceeds the hint max age (a hint holds a value for at
// most that long), checked at bootstrap, and should exceed the anti-entropy
// interval by a wide margin, so a replica that missed a delete gets its
// tombstone before it is due.

// settled reports whether the current replicas are every replica: no change
// runs and no node is JOINING (a wiped node waiting to be re-added takes
// writes but is no current replica) or LEAVING.
func settled(st *membership.State) bool {
	if st.Change != nil {
		return false
	}
	for _, n := range st.Nodes {
		if n.State == membership.Joining || n.State == membership.Leaving {
			return false
		}
	}
	return true
}

// purgeIfAgreed purges the due tombstones of w's arc here when every
// replica agrees on it. matched says the digests compared before any repair
// were all equal; otherwise they are compared once more now.
func (ae *AntiEntropy) purgeIfAgreed(ctx context.Context, rc *roundCtx, w arcWork, matched bool) error {
	if !settled(rc.st) {
		return nil
	}
	if !matched {
		agreed, err := ae.agreed(ctx, rc, w)
		if err != nil || !agreed {
			// Still converging (live writes, or a push not yet applied):
			// the next round decides.
			return err
		}
	}
	ae.cfg.Placement.Lock()
	defer ae.cfg.Placement.Unlock()
	if err := ae.placementHolds(rc.st); err != nil {
		return err
	}
	if !settled(ae.cfg.Ring.State()) {
		return nil
	}
	purged, err := ae.cfg.Engine.PurgeTombstones(w.tenant, w.arc, rc.cutoff)
	if purged > 0 {
		ae.met.purged.Add(int(purged))
		rc.r.update(func(s *pb.RepairStatus) { s.TombstonesPurged += purged })
		ae.log.Debug("purged tombstones", zap.String("tenant", w.tenant), zap.Uint64("start", w.arc.Start),
			zap.Uint64("end", w.arc.End), zap.Uint64("keys", purged))
	}
	return errors.Wrapf(err, "purge tombstones of tenant %s", w.tenant)
}

// agreed compares the arc's digest with every other replica's once more.
func (ae *AntiEntropy) agreed(ctx context.Context, rc *roundCtx, w arcWork) (bool, error) {
	local, err := ae.localDigests(ctx, w.tenant, []ring.Arc{w.arc}, rc.cutoff)
	if err != nil {
		return false, err
	}
	for _, p := range w.peers {
		remote, err := ae.remoteDigests(ctx, rc, p, w.tenant, []ring.Arc{w.arc})
		if err != nil {
			return false, err
		}
		if !bytes.Equal(remote[0].GetDigest(), local[0].Digest) {
			return false, nil
		}
	}
	return true, nil
}
