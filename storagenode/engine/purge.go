package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"

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

// Tombstone collection (DESIGN.md §5) and the node-wide dot counter that
// makes it safe.
//
// A key whose siblings are all tombstones, the newest stamped before a
// cutoff (now minus the tombstone grace), is purge-eligible. The storage
// node purges such keys only in an arc whose digests match on every current
// replica, with eligible tombstones counted as absent on every side
// (DigestArcs), so no replica still holds a value the tombstone deleted.
//
// Why dot counters are node-wide: once a key's object is gone, a write
// without context starts from an empty clock. A per-key counter would mint
// (actor, 1) again, a dot the purged tombstone's clock already covers on a
// replica that has not purged yet; that replica's merge would drop the new
// value as "seen and superseded", and anti-entropy would then spread the
// loss. So every dot this incarnation mints comes from one sequence that
// never goes back, across keys and restarts: counter = max(last minted + 1,
// Clock[self] + 1, ctx[self] + 1). The sequence is reserved on disk in
// blocks with a synced write before any counter of the block is used, so a
// crash skips ahead but never reuses a counter.
//
// (Raising the floor by passing ctx ⊔ {self: counter} to dvv.Update would
// also supersede every sibling this node minted for the key, turning a
// context-free write into an overwrite; the counter is therefore set after
// Update, see mint.)

// metaDotCounter holds the dot counter reservation: no counter above it has
// been handed out. It sits outside metaUserPrefix, like the incarnation.
var metaDotCounter = []byte{prefixMeta, 'd', 'o', 't', 'c', 'o', 'u', 'n', 't', 'e', 'r'}

// dotCounterBlock is how many counters one synced reservation covers.
const dotCounterBlock = 1024

// purgePage bounds the keys one purge batch examines and deletes.
const purgePage = 256

// dotCounter is the node-wide dot sequence. Its mutex is taken under a key
// stripe (never the other way round).
type dotCounter struct {
	mu    sync.Mutex
	last  uint64 // the last counter handed out (or skipped at open)
	limit uint64 // reserved on disk: nothing above it was handed out
}

// loadDotCounter restores the sequence. A store written before the counter
// existed (data but no reservation) starts above the highest counter of inc
// in any stored clock, which covers every dot inc minted there.
func loadDotCounter(db *pebble.DB, inc string) (*dotCounter, error) {
	v, closer, err := db.Get(metaDotCounter)
	if err == nil {
		if len(v) != 8 {
			_ = closer.Close()
			return nil, errors.Newf("dot counter reservation has %d bytes, want 8", len(v))
		}
		limit := binary.BigEndian.Uint64(v)
		return &dotCounter{last: limit, limit: limit}, errors.Wrap(closer.Close(), "release dot counter read")
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return nil, errors.Wrap(err, "read dot counter")
	}
	hi, err := maxCounterOf(db, inc)
	if err != nil {
		return nil, err
	}
	return &dotCounter{last: hi, limit: hi}, nil
}

// maxCounterOf scans every stored clock for the highest counter of actor.
func maxCounterOf(db *pebble.DB, actor string) (uint64, error) {
	lo, hi := dataSpan()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, errors.Wrap(err, "open clock scan")
	}
	var (
		top uint64
		o   pb.Object
	)
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			o.Reset()
			err = proto.Unmarshal(v, &o)
		}
		if err != nil {
			return 0, errors.CombineErrors(errors.Wrapf(err, "clock scan: object at %q", it.Key()), it.Close())
		}
		for _, c := range o.GetClock() {
			if c.GetActor() == actor {
				top = max(top, c.GetCounter())
			}
		}
	}
	return top, closeIter(it)
}

// next hands out the next counter, at least floor. It reserves a new block
// with a synced write when the reservation is used up.
func (c *dotCounter) next(db *pebble.DB, floor uint64) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := max(c.last+1, floor)
	if n > dvv.MaxCounter {
		// Only a forged clock gets here (counters start at 1 and validated
		// clocks stay at or below MaxCounter); refusing keeps the sequence
		// from wrapping and handing out used counters again.
		return 0, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"the next dot counter would be %d, above the largest allowed (%d)", n, uint64(dvv.MaxCounter))
	}
	if n > c.limit {
		limit := n + dotCounterBlock - 1
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], limit)
		// Synced whatever Options.Sync says: a reservation lost in a crash
		// would let counters already used be handed out again.
		if err := db.Set(metaDotCounter, b[:], pebble.Sync); err != nil {
			return 0, errors.Wrap(err, "engine: reserve dot counters")
		}
		c.limit = limit
	}
	c.last = n
	return n, nil
}

// minted is the highest counter this sequence may have handed out: no dot
// of this incarnation above it exists anywhere.
func (c *dotCounter) minted() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// mint renumbers the sibling dvv.Update just minted at this incarnation
// (its dot is (self, o.Clock[self])) with the next node-wide counter. The
// new counter is at least Update's, so the clock still covers everything
// it covered; the extra counters it now spans are dots of other keys, which
// never occur on this key. The caller holds the key's stripe and the close
// guard.
func (e *Engine) mint(o dvv.Object) (dvv.Object, error) {
	self := e.incarnation
	old := dvv.Dot{Actor: self, Counter: o.Clock[self]}
	c, err := e.dots.next(e.db, old.Counter)
	if err != nil {
		return dvv.Object{}, err
	}
	if c == old.Counter {
		return o, nil
	}
	for i := range o.Siblings {
		if o.Siblings[i].Dot == old {
			o.Siblings[i].Dot.Counter = c
		}
	}
	o.Clock[self] = c
	// No sibling of self lies between the old and the new counter (the
	// clock covered none), so this keeps the canonical order; sorting again
	// costs nothing and does not depend on that argument.
	dvv.SortSiblings(o.Siblings)
	return o, nil
}

// PurgeEligible reports whether o may be collected under cutoff
// tombstonesBefore (Unix ms): it holds siblings, every one a tombstone, and
// the newest was stamped before the cutoff. A cutoff of 0 or less makes
// nothing eligible.
func PurgeEligible(o dvv.Object, tombstonesBefore int64) bool {
	if tombstonesBefore <= 0 || len(o.Siblings) == 0 {
		return false
	}
	for _, s := range o.Siblings {
		if !s.Tombstone || s.TimestampMs >= tombstonesBefore {
			return false
		}
	}
	return true
}

// eligibleProto is PurgeEligible on the stored form, so digests need not
// convert every object.
func eligibleProto(o *pb.Object, tombstonesBefore int64) bool {
	ss := o.GetSiblings()
	if tombstonesBefore <= 0 || len(ss) == 0 {
		return false
	}
	for _, s := range ss {
		if !s.GetTombstone() || s.GetTimestampMs() >= tombstonesBefore {
			return false
		}
	}
	return true
}

// ArcDigest is the digest of one arc and the number of keys it covers.
type ArcDigest struct {
	Digest []byte
	Keys   uint64
}

// DigestArcs digests each of tenant's arcs as Digest does, all from one
// Pebble snapshot, except that purge-eligible keys under tombstonesBefore
// count as absent (0: none are). Two replicas that differ only in which
// eligible tombstones they still hold get equal digests, so replicas that
// purge at slightly different times do not look divergent. With a cutoff
// of 0, a single arc's digest equals Digest's.
func (e *Engine) DigestArcs(tenant string, arcs []ring.Arc, tombstonesBefore int64) ([]ArcDigest, error) {
	if err := validateTenant(tenant); err != nil {
		return nil, err
	}
	if err := e.acquire(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()

	snap := e.db.NewSnapshot()
	defer func() { _ = snap.Close() }()
	tlo, thi := tenantSpan(tenant)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: tlo, UpperBound: thi})
	if err != nil {
		return nil, errors.Wrap(err, "engine: open digest iterator")
	}
	out := make([]ArcDigest, 0, len(arcs))
	var (
		buf []byte
		o   pb.Object
	)
	for _, a := range arcs {
		h := sha256.New()
		var n uint64
		for _, sp := range arcSpans(tenant, a) {
			for ok := it.SeekGE(sp.lo); ok && compare(it.Key(), sp.hi) < 0; ok = it.Next() {
				_, _, key, err := decodeDataKey(it.Key())
				if err != nil {
					return nil, errors.CombineErrors(errors.Wrap(err, "engine: digest"), it.Close())
				}
				v, err := it.ValueAndErr()
				if err == nil {
					o.Reset()
					err = proto.Unmarshal(v, &o)
				}
				if err != nil {
					return nil, errors.CombineErrors(errors.Wrapf(err, "engine: digest: object at %q", key), it.Close())
				}
				if eligibleProto(&o, tombstonesBefore) {
					continue
				}
				buf = appendDigestEntry(buf[:0], key, &o)
				_, _ = h.Write(buf)
				n++
			}
		}
		out = append(out, ArcDigest{Digest: h.Sum(nil), Keys: n})
	}
	if err := closeIter(it); err != nil {
		return nil, err
	}
	return out, nil
}

// appendDigestEntry encodes one key as Digest does: uvarint(len(key)) key
// uvarint(entries), then per clock entry sorted by actor uvarint(len(actor))
// actor uint64be(counter), then uvarint(siblings) and each sibling's dot
// the same way, in the stored (canonical, by dot) order. The siblings count:
// replicas with equal clocks can still hold different siblings (one merged
// a last-write-wins tenant's data under another policy, say), and they must
// look different to be reconciled. A dot names one value, so dots suffice.
func appendDigestEntry(buf []byte, key string, o *pb.Object) []byte {
	clock := dvvpb.ClockToProto(dvvpb.ClockFromProto(o.GetClock()))
	buf = binary.AppendUvarint(buf, uint64(len(key)))
	buf = append(buf, key...)
	buf = binary.AppendUvarint(buf, uint64(len(clock)))
	for _, c := range clock {
		buf = binary.AppendUvarint(buf, uint64(len(c.GetActor())))
		buf = append(buf, c.GetActor()...)
		buf = binary.BigEndian.AppendUint64(buf, c.GetCounter())
	}
	buf = binary.AppendUvarint(buf, uint64(len(o.GetSiblings())))
	for _, s := range o.GetSiblings() {
		buf = binary.AppendUvarint(buf, uint64(len(s.GetDot().GetActor())))
		buf = append(buf, s.GetDot().GetActor()...)
		buf = binary.BigEndian.AppendUint64(buf, s.GetDot().GetCounter())
	}
	return buf
}

// PurgeTombstones deletes every purge-eligible key of tenant's arc under
// tombstonesBefore and returns how many it deleted. Each key is read again
// under its stripe lock right before its deletion is staged, so a write
// that lands in between (a new value, a newer tombstone) is never lost.
// The caller decides that purging the arc is safe (see the package note).
func (e *Engine) PurgeTombstones(tenant string, a ring.Arc, tombstonesBefore int64) (uint64, error) {
	if tombstonesBefore <= 0 {
		return 0, nil
	}
	var (
		after *Position
		total uint64
	)
	for {
		items, done, err := e.Scan(tenant, a, after, purgePage, true)
		if err != nil {
			return total, err
		}
		var keys []string
		for _, it := range items {
			if PurgeEligible(it.Object, tombstonesBefore) {
				keys = append(keys, it.Key)
			}
		}
		n, err := e.purgeKeys(tenant, keys, tombstonesBefore)
		total += n
		if err != nil {
			return total, err
		}
		if done || len(items) == 0 {
			return total, nil
		}
		last := items[len(items)-1]
		after = &Position{Hash: last.Hash, Key: last.Key}
	}
}

// purgeKeys deletes those of keys that are still eligible, in one batch.
func (e *Engine) purgeKeys(tenant string, keys []string, tombstonesBefore int64) (uint64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	if err := e.acquire(); err != nil {
		return 0, err
	}
	defer e.mu.RUnlock()

	hashes := make([]uint64, len(keys))
	for i, k := range keys {
		hashes[i] = keyspace.Hash(tenant, k)
	}
	defer e.lockAll(hashes)()

	b := e.db.NewBatch()
	defer func() { _ = b.Close() }()
	var n uint64
	for i, key := range keys {
		k := dataKey(tenant, hashes[i], key)
		cur, found, err := e.get(k)
		if err != nil {
			return 0, err
		}
		if !found || !PurgeEligible(cur, tombstonesBefore) {
			continue
		}
		if err := b.Delete(k, nil); err != nil {
			return 0, errors.Wrap(err, "engine: stage tombstone purge")
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	// A purge lost in a crash only comes back as eligible tombstones, which
	// the next round purges again: no fsync needed beyond Options.Sync.
	if err := b.Commit(e.writeOpts); err != nil {
		return 0, errors.Wrapf(err, "engine: purge tombstones of tenant %q", tenant)
	}
	e.keys.Add(-int64(n))
	return n, nil
}
