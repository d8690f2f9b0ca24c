package heal

import (
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// Hint replay, one batch: validate, group by tenant and policy, drop what
// is obsolete, merge, settle.

// groupKey is one MergeBatch: a tenant under one conflict policy.
type groupKey struct {
	tenant string
	policy pb.ConflictPolicy
}

// apply merges a batch and settles each hint: acked after its commit,
// rejected when malformed, retried when the commit failed.
func (d *Hints) apply(hs []Hint) error {
	groups := map[groupKey][]Hint{}
	var order []groupKey
	for _, h := range hs {
		req, err := h.Request()
		if err == nil {
			err = validateTarget(req.GetTenantId(), req.GetKey())
		}
		if err == nil && req.GetObject() == nil {
			err = errors.New("hint carries no object")
		}
		if err != nil {
			d.reject(h, err)
			continue
		}
		k := groupKey{tenant: req.GetTenantId(), policy: req.GetPolicy()}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], h)
	}
	var errs error
	for _, k := range order {
		errs = errors.CombineErrors(errs, d.applyGroup(k, groups[k]))
	}
	return errs
}

func (d *Hints) applyGroup(k groupKey, hs []Hint) error {
	inc, gone, err := d.cfg.Store.LocalTenant(k.tenant)
	if err != nil {
		for _, h := range hs {
			d.retry(h)
		}
		return errors.Wrapf(err, "replay %d hints of tenant %s", len(hs), k.tenant)
	}
	if hs = d.dropGone(hs, inc, gone); len(hs) == 0 {
		return nil
	}
	// Under the placement lock, so a gain (which takes it exclusively)
	// is either seen by the check or clears after the merge.
	d.cfg.Placement.Lock()
	defer d.cfg.Placement.Unlock()
	if hs = d.dropObsolete(k.tenant, hs); len(hs) == 0 {
		return nil
	}
	items := make([]engine.MergeItem, len(hs))
	for i, h := range hs {
		req, _ := h.Request()
		items[i] = engine.MergeItem{Key: req.GetKey(), Object: dvvpb.ObjectFromProto(req.GetObject()), Minted: req.GetMinted()}
	}
	policy := dvvpb.PolicyFromProto(d.cfg.Store.PolicyOf(k.tenant, k.policy))
	err = d.mergeBatch(k.tenant, items, policy)
	if status.CodeOf(err) == pb.ErrorCode_INVALID_ARGUMENT {
		// One malformed object fails the whole batch: merge one by one to
		// reject only the culprits.
		return d.mergeEach(k.tenant, hs, items, policy)
	}
	if err != nil {
		for _, h := range hs {
			d.retry(h)
		}
		return errors.Wrapf(err, "merge %d hints of tenant %s", len(hs), k.tenant)
	}
	for _, h := range hs {
		d.ack(h)
	}
	return nil
}

// dropGone acks the hints of hs for an incarnation of the tenant that is
// gone (deleted, and maybe created again) without merging them: that data
// is gone. inc is the tenant's live incarnation (0: unknown), gone says it
// was deleted. It returns the rest.
func (d *Hints) dropGone(hs []Hint, inc uint64, gone bool) []Hint {
	kept := hs[:0:0]
	for _, h := range hs {
		req, _ := h.Request()
		if gone || (inc != 0 && req.GetTenantIncarnation() != 0 && req.GetTenantIncarnation() != inc) {
			d.ack(h)
			continue
		}
		kept = append(kept, h)
	}
	return kept
}

// mergeEach merges the hints of hs (with their items) one at a time and
// settles each: acked, rejected when its object is malformed, retried when
// the commit failed.
func (d *Hints) mergeEach(tenant string, hs []Hint, items []engine.MergeItem, policy dvv.Policy) error {
	var errs error
	for i, h := range hs {
		err := d.mergeBatch(tenant, items[i:i+1], policy)
		switch {
		case err == nil:
			d.ack(h)
		case status.CodeOf(err) == pb.ErrorCode_INVALID_ARGUMENT:
			d.reject(h, err)
		default:
			d.retry(h)
			errs = errors.CombineErrors(errs, err)
		}
	}
	return errs
}

// dropObsolete acks the hints of hs that are obsolete (see Hints)
// and returns the rest.
func (d *Hints) dropObsolete(tenant string, hs []Hint) []Hint {
	maxAge := hintMaxAge
	if d.cfg.Ring != nil {
		maxAge = d.cfg.Ring.State().Settings.HintMaxAge
	}
	kept := hs[:0:0]
	for _, h := range hs {
		req, _ := h.Request()
		old := !h.Stored().IsZero() && time.Since(h.Stored()) > maxAge
		if old || (req.GetEpoch() > 0 && d.cfg.GainedSince(tenant, req.GetKey(), req.GetEpoch())) {
			d.met.hintsObsolete.Inc()
			d.ack(h)
			continue
		}
		kept = append(kept, h)
	}
	return kept
}

// mergeBatch commits items; the caller holds the placement lock shared,
// like a merge request, so it is ordered against range cleanup and gains.
func (d *Hints) mergeBatch(tenant string, items []engine.MergeItem, p dvv.Policy) error {
	changed, err := d.cfg.Store.MergeBatch(tenant, items, p)
	if changed > 0 {
		d.met.mergeChanged.Add(changed)
	}
	return err
}

// ack counts the hint before settling it, so that whoever sees it settled
// (the stream, a test) also sees it counted.
func (d *Hints) ack(h Hint) {
	d.replayed.Inc()
	if err := h.Ack(); err != nil {
		// Delivered again after AckWait and merged again: harmless.
		d.log.Debug("hint ack failed", zap.Error(err))
	}
}

func (d *Hints) retry(h Hint) {
	if err := h.Retry(hintRetryDelay); err != nil {
		d.log.Debug("hint nak failed", zap.Error(err))
	}
}

func (d *Hints) reject(h Hint, cause error) {
	d.rejected.Inc()
	d.log.Error("dropping a hint that cannot be applied", zap.Error(cause))
	if err := h.Reject(cause.Error()); err != nil {
		d.log.Debug("hint term failed", zap.Error(err))
	}
}

func (d *Hints) settle(hs []Hint, f func(Hint) error) {
	for _, h := range hs {
		if err := f(h); err != nil {
			d.log.Debug("settling a hint failed", zap.Error(err))
		}
	}
}
