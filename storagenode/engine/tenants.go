package engine

import (
	"bytes"

	"github.com/cockroachdb/errors"
	"github.com/cockroachdb/pebble/v2"

	"github.com/pairdb/pairdb/ring"
)

// DropTenant removes everything this store holds for tenant, its data and
// its origin records, with range deletions in one synced batch, and sets
// the metadata marker name to marker in the same batch (so a crash leaves
// either the old data and the old marker, or neither). It returns how many
// keys it removed (counted just before; see DeleteArc). The caller keeps
// writes to the tenant out while it runs.
func (e *Engine) DropTenant(tenant, marker string, value []byte) (uint64, error) {
	if err := validateTenant(tenant); err != nil {
		return 0, err
	}
	if err := e.acquire(); err != nil {
		return 0, err
	}
	defer e.mu.RUnlock()
	lo, hi := tenantSpan(tenant)
	n, err := e.count(span{lo, hi})
	if err != nil {
		return 0, err
	}
	olo := originKey(tenant, nil)
	b := e.db.NewBatch()
	defer func() { _ = b.Close() }()
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return 0, errors.Wrap(err, "engine: stage tenant deletion")
	}
	if err := b.DeleteRange(olo, prefixEnd(olo), nil); err != nil {
		return 0, errors.Wrap(err, "engine: stage tenant origin records deletion")
	}
	if err := b.Set(metaKey(marker), value, nil); err != nil {
		return 0, errors.Wrap(err, "engine: stage tenant marker")
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, errors.Wrapf(err, "engine: drop tenant %q", tenant)
	}
	e.keys.Add(-int64(n))
	return n, nil
}

// MetaPrefix returns every metadata value whose name starts with prefix,
// by name without the prefix.
func (e *Engine) MetaPrefix(prefix string) (map[string][]byte, error) {
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	lo := metaKey(prefix)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, errors.Wrap(err, "engine: open metadata iterator")
	}
	out := map[string][]byte{}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, errors.CombineErrors(errors.Wrap(err, "engine: read metadata"), it.Close())
		}
		out[string(bytes.TrimPrefix(it.Key(), lo))] = bytes.Clone(v)
	}
	return out, closeIter(it)
}

// TenantKeys counts the keys stored for tenant.
func (e *Engine) TenantKeys(tenant string) (uint64, error) {
	if err := validateTenant(tenant); err != nil {
		return 0, err
	}
	if err := e.acquire(); err != nil {
		return 0, err
	}
	defer e.mu.RUnlock()
	lo, hi := tenantSpan(tenant)
	return e.count(span{lo, hi})
}

// TenantArc is one arc of one tenant.
type TenantArc struct {
	Tenant string
	Arc    ring.Arc
}

// ClearArcs removes every key of the given arcs and sets the metadata
// marker name to value, in one synced batch: after a crash either all of
// it happened or none did, so a caller that checks the marker first clears
// each set of arcs exactly once. It returns how many keys it removed
// (counted just before; see DeleteArc). The caller keeps writes to the
// arcs out while it runs.
func (e *Engine) ClearArcs(arcs []TenantArc, marker string, value []byte) (uint64, error) {
	for _, ta := range arcs {
		if err := validateTenant(ta.Tenant); err != nil {
			return 0, err
		}
	}
	if err := e.acquire(); err != nil {
		return 0, err
	}
	defer e.mu.RUnlock()
	b := e.db.NewBatch()
	defer func() { _ = b.Close() }()
	var n uint64
	for _, ta := range arcs {
		for _, sp := range arcSpans(ta.Tenant, ta.Arc) {
			c, err := e.count(sp)
			if err != nil {
				return 0, err
			}
			n += c
			if c == 0 {
				continue
			}
			if err := b.DeleteRange(sp.lo, sp.hi, nil); err != nil {
				return 0, errors.Wrap(err, "engine: stage range deletion")
			}
		}
	}
	if err := b.Set(metaKey(marker), value, nil); err != nil {
		return 0, errors.Wrap(err, "engine: stage marker")
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, errors.Wrap(err, "engine: clear arcs")
	}
	e.keys.Add(-int64(n))
	return n, nil
}
