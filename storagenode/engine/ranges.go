package engine

import (
	"bytes"
	"crypto/sha256"
	"math"
	"slices"

	"github.com/cockroachdb/errors"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Range operations: scans, digests and deletions of one tenant's ring arc.
//
// An arc (Start, End] on the ring hash maps to at most two contiguous key
// spans of the tenant (see keys.go): Start < End is one span; Start > End
// wraps and is [0, End] plus (Start, max]; Start == End is the whole tenant.
// Spans are always visited in key order (ascending hash, then key), so a
// Position names a point in that order and a scan resumes strictly after
// it, whichever node serves the next page.

// Position is a point in a tenant's key order: the ring hash, then the key.
type Position struct {
	Hash uint64
	Key  string
}

// Item is one key found by Scan.
type Item struct {
	Hash uint64
	Key  string
	// Object is the stored object. Without values its siblings are nil
	// and only the clock is set.
	Object dvv.Object
	// Size is the stored object's encoded size in bytes.
	Size int
}

// MergeItem is one key of a MergeBatch.
type MergeItem struct {
	Key    string
	Object dvv.Object
	// Minted: see MergeOptions.Minted.
	Minted bool
}

// span is a half-open key interval [lo, hi).
type span struct{ lo, hi []byte }

// arcSpans returns the key spans of tenant's arc in key order.
func arcSpans(tenant string, a ring.Arc) []span {
	tlo, thi := tenantSpan(tenant)
	// from(h) is the first key whose hash is >= h; to(h) the first whose
	// hash is > h (the tenant's end when h is the top of the ring).
	from := func(h uint64) []byte { return dataKey(tenant, h, "") }
	to := func(h uint64) []byte {
		if h == math.MaxUint64 {
			return thi
		}
		return dataKey(tenant, h+1, "")
	}
	switch {
	case a.Start == a.End:
		return []span{{tlo, thi}}
	case a.Start < a.End:
		return []span{{from(a.Start + 1), to(a.End)}}
	}
	out := []span{{tlo, to(a.End)}}
	if a.Start < math.MaxUint64 {
		out = append(out, span{from(a.Start + 1), thi})
	}
	return out
}

func validateTenant(tenant string) error {
	if err := keyspace.ValidateTenantID(tenant); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant id")
	}
	return nil
}

// Scan returns up to limit keys of tenant's arc in key order, starting
// strictly after *after (from the beginning when after is nil), read from
// one consistent view of the store. done reports that the arc holds no key
// after the last item returned.
func (e *Engine) Scan(tenant string, a ring.Arc, after *Position, limit int, withValues bool) ([]Item, bool, error) {
	return e.ScanBudget(tenant, a, after, limit, 0, withValues)
}

// ScanBudget is Scan that also stops once the items' encoded sizes reach
// maxBytes (0: no byte bound). It always returns at least one item when the
// arc has one left, so a single large object still makes progress.
func (e *Engine) ScanBudget(tenant string, a ring.Arc, after *Position, limit, maxBytes int, withValues bool) ([]Item, bool, error) {
	if err := validateTenant(tenant); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "scan limit must be positive, got %d", limit)
	}
	if err := e.acquire(); err != nil {
		return nil, false, err
	}
	defer e.mu.RUnlock()

	var resume []byte
	if after != nil {
		// The immediate successor of the position's storage key.
		resume = append(dataKey(tenant, after.Hash, after.Key), 0)
	}
	tlo, thi := tenantSpan(tenant)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: tlo, UpperBound: thi})
	if err != nil {
		return nil, false, errors.Wrap(err, "engine: open scan iterator")
	}
	var (
		items []Item
		size  int
	)
	full := false
	for _, sp := range arcSpans(tenant, a) {
		lo := sp.lo
		if resume != nil && compare(resume, lo) > 0 {
			lo = resume
		}
		for ok := it.SeekGE(lo); ok && compare(it.Key(), sp.hi) < 0; ok = it.Next() {
			if full {
				// One more key exists after the page: not done.
				return items, false, closeIter(it)
			}
			item, err := decodeItem(it, withValues)
			if err != nil {
				return nil, false, errors.CombineErrors(err, it.Close())
			}
			items = append(items, item)
			size += item.Size + len(item.Key)
			full = len(items) >= limit || (maxBytes > 0 && size >= maxBytes)
		}
	}
	return items, true, closeIter(it)
}

func closeIter(it *pebble.Iterator) error {
	if err := errors.CombineErrors(it.Error(), it.Close()); err != nil {
		return errors.Wrap(err, "engine: iterate")
	}
	return nil
}

func compare(a, b []byte) int { return bytes.Compare(a, b) }

func decodeItem(it *pebble.Iterator, withValues bool) (Item, error) {
	_, h, key, err := decodeDataKey(it.Key())
	if err != nil {
		return Item{}, errors.Wrap(err, "engine: scan")
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return Item{}, errors.Wrapf(err, "engine: read value of %q", key)
	}
	var o pb.Object
	if err := proto.Unmarshal(v, &o); err != nil {
		return Item{}, errors.Wrapf(err, "engine: stored object at %q is corrupt", key)
	}
	obj := dvvpb.ObjectFromProto(&o)
	if !withValues {
		obj.Siblings = nil
	}
	return Item{Hash: h, Key: key, Object: obj, Size: len(v)}, nil
}

// Digest is SHA-256 over every (key, canonical clock, sibling dots) of
// tenant's arc in key order, read from one Pebble snapshot, and the number
// of keys. Nodes holding equal objects for the arc get equal digests; see
// appendDigestEntry for the encoding.
func (e *Engine) Digest(tenant string, a ring.Arc) ([]byte, uint64, error) {
	if err := validateTenant(tenant); err != nil {
		return nil, 0, err
	}
	if err := e.acquire(); err != nil {
		return nil, 0, err
	}
	defer e.mu.RUnlock()

	snap := e.db.NewSnapshot()
	defer func() { _ = snap.Close() }()
	tlo, thi := tenantSpan(tenant)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: tlo, UpperBound: thi})
	if err != nil {
		return nil, 0, errors.Wrap(err, "engine: open digest iterator")
	}
	h := sha256.New()
	var (
		n   uint64
		buf []byte
		o   pb.Object
	)
	for _, sp := range arcSpans(tenant, a) {
		for ok := it.SeekGE(sp.lo); ok && compare(it.Key(), sp.hi) < 0; ok = it.Next() {
			_, _, key, err := decodeDataKey(it.Key())
			if err != nil {
				return nil, 0, errors.CombineErrors(errors.Wrap(err, "engine: digest"), it.Close())
			}
			v, err := it.ValueAndErr()
			if err == nil {
				o.Reset()
				err = proto.Unmarshal(v, &o)
			}
			if err != nil {
				return nil, 0, errors.CombineErrors(errors.Wrapf(err, "engine: digest: object at %q", key), it.Close())
			}
			buf = appendDigestEntry(buf[:0], key, &o)
			_, _ = h.Write(buf)
			n++
		}
	}
	if err := closeIter(it); err != nil {
		return nil, 0, err
	}
	return h.Sum(nil), n, nil
}

// DeleteArc removes every key of tenant's arc with range deletions in one
// synced batch, and returns how many keys it removed. The count is read
// just before the deletion, so a write racing into the arc may make it off
// by that write (the key count is approximate anyway; see Keys). Callers
// that must not lose such writes exclude them around the call.
func (e *Engine) DeleteArc(tenant string, a ring.Arc) (uint64, error) {
	if err := validateTenant(tenant); err != nil {
		return 0, err
	}
	if err := e.acquire(); err != nil {
		return 0, err
	}
	defer e.mu.RUnlock()

	spans := arcSpans(tenant, a)
	var n uint64
	for _, sp := range spans {
		c, err := e.count(sp)
		if err != nil {
			return 0, err
		}
		n += c
	}
	if n == 0 {
		return 0, nil
	}
	b := e.db.NewBatch()
	defer func() { _ = b.Close() }()
	for _, sp := range spans {
		if err := b.DeleteRange(sp.lo, sp.hi, nil); err != nil {
			return 0, errors.Wrap(err, "engine: stage range deletion")
		}
	}
	// Synced regardless of Options.Sync: a cleanup that reappears after a
	// crash would only waste space, but a half-applied one is confusing.
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, errors.Wrapf(err, "engine: delete arc (%d, %d] of tenant %q", a.Start, a.End, tenant)
	}
	e.keys.Add(-int64(n))
	return n, nil
}

func (e *Engine) count(sp span) (uint64, error) {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: sp.lo, UpperBound: sp.hi, KeyTypes: pebble.IterKeyTypePointsOnly})
	if err != nil {
		return 0, errors.Wrap(err, "engine: open count iterator")
	}
	var n uint64
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n, closeIter(it)
}

// countKeys counts every data key; Open calls it once.
func countKeys(db *pebble.DB) (uint64, error) {
	lo, hi := dataSpan()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, errors.Wrap(err, "open count iterator")
	}
	var n uint64
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n, closeIter(it)
}

// Keys approximates the number of stored keys: counted exactly at Open,
// then +1 for every key Apply, Merge or MergeBatch create and minus what
// DeleteArc removed. It drifts only when a write races a DeleteArc of the
// same arc; a restart recounts.
func (e *Engine) Keys() uint64 { return uint64(max(e.keys.Load(), 0)) }

// Tenants lists the tenants that hold at least one key, sorted. It seeks
// from one tenant to the next, so it costs one seek per tenant, not per key.
func (e *Engine) Tenants() ([]string, error) {
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	lo, hi := dataSpan()
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, errors.Wrap(err, "engine: open tenant iterator")
	}
	var out []string
	for ok := it.First(); ok; {
		tenant, _, _, err := decodeDataKey(it.Key())
		if err != nil {
			return nil, errors.CombineErrors(errors.Wrap(err, "engine: list tenants"), it.Close())
		}
		out = append(out, tenant)
		_, next := tenantSpan(tenant)
		ok = it.SeekGE(next)
	}
	return out, closeIter(it)
}

// MergeBatch merges a page of replicated objects of one tenant in one
// batch: one commit (one fsync) per page instead of one per key, which is
// what makes range transfers fast. Each key's stripe is held across the
// commit, taken in stripe order so batches never deadlock with each other or
// with single-key writes. It returns how many keys changed.
func (e *Engine) MergeBatch(tenant string, items []MergeItem, policy dvv.Policy) (int, error) {
	if err := validateTenant(tenant); err != nil {
		return 0, err
	}
	for _, it := range items {
		if err := validate(tenant, it.Key); err != nil {
			return 0, err
		}
		if err := e.Validate(it.Object); err != nil {
			return 0, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "cannot merge into key %q of tenant %q", it.Key, tenant)
		}
	}
	if len(items) == 0 {
		return 0, nil
	}
	if err := e.acquire(); err != nil {
		return 0, err
	}
	defer e.mu.RUnlock()

	hashes := make([]uint64, len(items))
	for i, it := range items {
		hashes[i] = keyspace.Hash(tenant, it.Key)
	}
	defer e.lockAll(hashes)()

	mb := &mergeBatch{e: e, b: e.db.NewBatch(), tenant: tenant, staged: map[string]*stagedObject{}}
	defer func() { _ = mb.b.Close() }()
	for i, it := range items {
		if err := mb.add(dataKey(tenant, hashes[i], it.Key), it, policy); err != nil {
			return 0, err
		}
	}
	if mb.changed == 0 {
		return 0, nil
	}
	if err := mb.b.Commit(e.writeOpts); err != nil {
		return 0, errors.Wrap(err, "engine: commit merged page")
	}
	for _, en := range mb.staged {
		if en.written && !en.existed {
			e.keys.Add(1)
		}
	}
	return mb.changed, nil
}

// mergeBatch stages the merges of one MergeBatch. A page may repeat a key:
// later items merge into the staged object.
type mergeBatch struct {
	e       *Engine
	b       *pebble.Batch
	tenant  string
	staged  map[string]*stagedObject
	changed int
}

type stagedObject struct {
	obj              dvv.Object
	existed, written bool
}

// add merges it into the object at k, staging the write (and, for a fresh
// version, the origin records it brings) when anything changed.
func (mb *mergeBatch) add(k []byte, it MergeItem, policy dvv.Policy) error {
	en, ok := mb.staged[string(k)]
	if !ok {
		cur, found, err := mb.e.get(k)
		if err != nil {
			return err
		}
		en = &stagedObject{obj: cur, existed: found}
		mb.staged[string(k)] = en
	}
	merged := dvv.Merge(en.obj, it.Object, policy)
	if dvv.Equal(en.obj, merged) {
		return nil
	}
	v, err := proto.Marshal(dvvpb.ObjectToProto(merged))
	if err != nil {
		return errors.Wrap(err, "engine: encode object")
	}
	if err := mb.b.Set(k, v, nil); err != nil {
		return errors.Wrap(err, "engine: stage write")
	}
	if it.Minted {
		records, err := gainedOrigins(mb.tenant, en.obj, it.Object, mb.e.now().UnixMilli())
		if err != nil {
			return err
		}
		for _, r := range records {
			if err := mb.b.Set(r.k, r.v, nil); err != nil {
				return errors.Wrap(err, "engine: stage origin record")
			}
		}
	}
	en.obj, en.written = merged, true
	mb.changed++
	return nil
}

// lockAll takes the per-key stripes of every hash, each once and in stripe
// order (so two batches, or a batch and single-key writes, cannot deadlock),
// and returns the unlock.
func (e *Engine) lockAll(hashes []uint64) (unlock func()) {
	stripes := make([]int, 0, len(hashes))
	for _, h := range hashes {
		stripes = append(stripes, int(h%lockStripes))
	}
	slices.Sort(stripes)
	stripes = slices.Compact(stripes)
	for _, s := range stripes {
		e.locks[s].Lock()
	}
	return func() {
		for _, s := range stripes {
			e.locks[s].Unlock()
		}
	}
}
