package storagenode

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Tenant incarnations. The ring log records each tenant's creation and
// deletion (TenantChanged); the sequence of the event that created it is the
// tenant's incarnation. A tenant deleted and created again under the same
// id is a new incarnation and must never see the old one's data.
//
// A node keeps one incarnation's data per tenant, in the tenant's key span,
// and a durable marker per tenant (engine metadata "tenant/<id>") says
// which: the incarnation the data belongs to, or the deletion it was
// dropped for. Before the node serves a request for an incarnation its
// marker does not name, it drops the tenant's span (one range deletion, with
// the new marker in the same synced batch), so the old data is gone before
// anything of the new incarnation is stored or read. When it folds a
// tenant's deletion, the membership driver drops the data at once and
// reports it, so `pairdb tenant delete --wait` can tell when every node is
// done. Requests, hints and node-to-node transfers carry the incarnation
// they were routed under; one for an incarnation that is gone is refused
// (TENANT_NOT_FOUND), or, for hints, dropped.
//
// A tenant without a marker adopts the live incarnation without dropping
// anything: its data predates the markers (or there is none).

const tenantMarkerPrefix = "tenant/"

// tenantMark is a tenant's marker: the incarnation the stored data belongs
// to, or (deleted) the deletion it was dropped for.
type tenantMark struct {
	seq     uint64
	deleted bool
}

func (m tenantMark) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, m.seq)
	if m.deleted {
		return append(b, 1)
	}
	return append(b, 0)
}

func decodeMark(b []byte) (tenantMark, error) {
	if len(b) != 9 {
		return tenantMark{}, errors.Newf("tenant marker has %d bytes, want 9", len(b))
	}
	return tenantMark{seq: binary.BigEndian.Uint64(b), deleted: b[8] == 1}, nil
}

// tenantMarks caches every marker; the engine holds them durably.
type tenantMarks struct {
	mu sync.RWMutex
	m  map[string]tenantMark
}

func (t *tenantMarks) get(tenant string) (tenantMark, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m, ok := t.m[tenant]
	return m, ok
}

func (t *tenantMarks) set(tenant string, m tenantMark) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[tenant] = m
}

// loadTenantMarks reads every marker at start.
func (n *Node) loadTenantMarks() error {
	raw, err := n.eng.MetaPrefix(tenantMarkerPrefix)
	if err != nil {
		return errors.Wrap(err, "read tenant markers")
	}
	n.marks = &tenantMarks{m: make(map[string]tenantMark, len(raw))}
	for tenant, v := range raw {
		m, err := decodeMark(v)
		if err != nil {
			return errors.Wrapf(err, "tenant marker of %s", tenant)
		}
		n.marks.m[tenant] = m
	}
	return nil
}

// liveTenant checks a request for tenant routed under incarnation inc (0:
// the live one) against the node's fold, which has folded the request's
// epoch: the tenant must be recorded and live, and inc its live
// incarnation. It then makes sure the node's data for the tenant is that
// incarnation's (settleTenant) and returns it. Static mode checks nothing.
// The caller must not hold placeMu.
func (n *Node) liveTenant(tenant string, inc uint64) (uint64, error) {
	if n.mem == nil {
		return 0, nil
	}
	t, ok := n.mem.State().Tenants[tenant]
	if !ok || t.Deleted {
		n.met.refused(refusedTenant)
		return 0, status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND,
			"node %s takes no data of tenant %q: the ring log does not know it, or it was deleted", n.cfg.ID, tenant)
	}
	if inc != 0 && inc != t.Seq {
		n.met.refused(refusedTenant)
		return 0, status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND,
			"incarnation %d of tenant %q is gone: the tenant was deleted and created again (incarnation %d)", inc, tenant, t.Seq)
	}
	if _, err := n.settleTenant(tenant, tenantMark{seq: t.Seq}); err != nil {
		return 0, err
	}
	return t.Seq, nil
}

// sourceTenant is liveTenant for the node-to-node reads transfers and
// anti-entropy make: a tenant the ring log does not know is served as
// stored (a tenant created before tenants were recorded, still moving with
// a change), a deleted one is not.
func (n *Node) sourceTenant(tenant string, inc uint64) error {
	if n.mem == nil {
		return nil
	}
	if _, known := n.mem.State().Tenants[tenant]; !known {
		return nil
	}
	_, err := n.liveTenant(tenant, inc)
	return err
}

// settleTenant brings tenant's marker to want, dropping the tenant's
// stored data first unless the marker already says so or there is no
// marker and want is a live incarnation (the data, if any, predates
// markers). It returns how many keys it dropped. Writes to the node are
// held off while it drops (placeMu), so nothing of the new incarnation is
// stored before the old one is gone. The caller must not hold placeMu.
func (n *Node) settleTenant(tenant string, want tenantMark) (uint64, error) {
	if cur, ok := n.marks.get(tenant); ok && cur == want {
		return 0, nil
	}
	n.placeMu.Lock()
	defer n.placeMu.Unlock()
	cur, ok := n.marks.get(tenant)
	switch {
	case ok && cur == want:
		return 0, nil
	case ok && cur.seq > want.seq:
		// The marker follows a later event than the caller's fold; it
		// will catch up.
		return 0, nil
	case !ok && !want.deleted:
		if err := n.eng.PutMeta(tenantMarkerPrefix+tenant, want.encode()); err != nil {
			return 0, errors.Wrapf(err, "record tenant %s's incarnation", tenant)
		}
		n.marks.set(tenant, want)
		return 0, nil
	}
	dropped, err := n.eng.DropTenant(tenant, tenantMarkerPrefix+tenant, want.encode())
	if err != nil {
		return 0, errors.Wrapf(err, "drop the data of tenant %s", tenant)
	}
	n.marks.set(tenant, want)
	n.log.Info("dropped a tenant's data", zap.String("tenant", tenant), zap.Uint64("keys", dropped),
		zap.Uint64("for_seq", want.seq), zap.Bool("deleted", want.deleted), zap.Uint64("previous_seq", cur.seq))
	return dropped, nil
}

// policyOf is tenant's conflict policy as the ring log says, which every
// merge on this node applies, whatever a request says: sent is the
// request's, used only when the log does not know the tenant (static mode,
// or a tenant created before tenants were recorded).
func (n *Node) policyOf(tenant string, sent pb.ConflictPolicy) pb.ConflictPolicy {
	if n.mem != nil {
		if t, ok := n.mem.State().Tenants[tenant]; ok && t.Policy != pb.ConflictPolicy_CONFLICT_POLICY_UNSPECIFIED {
			return t.Policy
		}
	}
	return sent
}

// localTenant prepares tenant for data that reaches the node without a
// request of its own (hints, pulled transfer pages, anti-entropy): it
// returns the live incarnation (0 when the ring log does not know the
// tenant, whose data is then taken as it comes) with the stored data
// settled to it, or gone when the tenant was deleted (its data is dropped;
// see mergeBatch). The caller must not hold placeMu.
func (n *Node) localTenant(tenant string) (inc uint64, gone bool, err error) {
	if n.mem == nil {
		return 0, false, nil
	}
	t, ok := n.mem.State().Tenants[tenant]
	switch {
	case !ok:
		return 0, false, nil
	case t.Deleted:
		return 0, true, nil
	}
	_, err = n.settleTenant(tenant, tenantMark{seq: t.Seq})
	return t.Seq, false, err
}

// dropDeletedTenants drops the data of every tenant the fold says is
// deleted whose marker is older, and of every live tenant whose marker
// names an older incarnation, and reports each deleted tenant's removal to
// the migration progress stream (once per process: a report lost to a
// crash is made again after the restart). The driver calls it on every
// fold.
func (d *driver) dropDeletedTenants(ctx context.Context, st *membership.State) error {
	n := d.n
	for tenant, t := range st.Tenants {
		cur, ok := n.marks.get(tenant)
		if ok && cur.seq >= t.Seq && (!t.Deleted || d.reported[tenant] >= t.Seq) {
			continue
		}
		if !ok && !t.Deleted {
			continue // adopted lazily, at the first request
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		dropped, err := n.settleTenant(tenant, tenantMark{seq: t.Seq, deleted: t.Deleted})
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, adminTimeout)
		err = n.mem.PublishProgress(pctx, &pb.MigrationProgress{
			MigrationId: membership.TenantProgressID(tenant), NodeId: n.cfg.ID, KeysTransferred: dropped,
			Done: true, UnixMs: time.Now().UnixMilli(), TenantSeq: t.Seq,
		})
		cancel()
		if err != nil {
			return errors.Wrapf(err, "report the removal of tenant %s's data", tenant)
		}
		d.reported[tenant] = t.Seq
	}
	return nil
}
