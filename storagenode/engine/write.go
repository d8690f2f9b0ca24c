package engine

import (
	"time"

	"github.com/cockroachdb/errors"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Write is one version for Mint to create at this replica, as the
// coordinating replica of a put or delete.
type Write struct {
	Tenant, Key string
	// Context is the causal context: siblings it covers are superseded.
	Context   dvv.VV
	Value     []byte
	Tombstone bool
	Policy    dvv.Policy
	// MaxSiblings > 0 refuses a write that would leave more siblings
	// (TOO_MANY_SIBLINGS); nothing is stored.
	MaxSiblings int
	// MaxObjectBytes > 0 refuses a write whose stored object would encode
	// to more bytes (VALUE_TOO_LARGE); the engine's own ceiling
	// (Options.MaxObjectBytes) applies either way.
	MaxObjectBytes int
	// NowMs stamps the new sibling (LastWriteWins and clients read it).
	NowMs int64
	// Origin names the request. If this replica minted it before (the
	// stored object holds its sibling, or an origin record names it),
	// nothing is minted: see Minted.Existing.
	Origin []byte
	// RecordOrigin keeps an origin record beside the data, in the same
	// batch, so the write is recognised even after its sibling is gone.
	RecordOrigin bool
	// Deadline: nothing is minted at or after it (zero: no deadline). It is
	// checked before the key is read and again right before the version is
	// forwarded and committed, so a refusal (EXPIRED) means nothing left
	// this replica.
	Deadline time.Time
	// Forward, when set, gets the object to be committed before the
	// commit, under the key's lock, so the other replicas' fsyncs run
	// alongside this one's. That is safe because the new dot's counter was
	// reserved durably before it was handed out (see dotCounter): a crash
	// before the local commit loses this copy, never reuses the dot for
	// another value. Forward must not block long and must not touch the
	// engine. fresh is false when the origin was already minted here:
	// Forward then gets the stored object (the other replicas may still
	// lack it), which may be newer than that write. encoded is obj as a
	// pb.Object in protobuf, the very bytes the commit stores, so the
	// forward need not encode it again (nil for a stored object).
	Forward func(obj dvv.Object, encoded []byte, fresh bool)
}

// Minted is what Mint did.
type Minted struct {
	// Object is what is stored now.
	Object dvv.Object
	// Existing reports that the write's origin was minted here before:
	// nothing new was minted.
	Existing bool
	// Record is the origin record of the earlier mint, when Existing and
	// this replica kept one.
	Record *pb.OriginRecord
}

// Mint creates a new version of (w.Tenant, w.Key): siblings covered by
// w.Context are superseded and the value (or a tombstone) is added with this
// incarnation's next dot. The returned object is what was committed.
//
// Errors say what happened: EXPIRED, INVALID_ARGUMENT, TOO_MANY_SIBLINGS and
// VALUE_TOO_LARGE mean nothing was minted or forwarded. A failed commit after
// the version was forwarded is OUTCOME_UNKNOWN: the forwarded copies may
// stand. Any other error means nothing left this replica.
func (e *Engine) Mint(w Write) (Minted, error) {
	if err := e.checkWrite(w); err != nil {
		return Minted{}, err
	}
	if err := e.acquire(); err != nil {
		return Minted{}, err
	}
	defer e.mu.RUnlock()

	h := keyspace.Hash(w.Tenant, w.Key)
	k := dataKey(w.Tenant, h, w.Key)
	l := e.lock(h)
	l.Lock()
	defer l.Unlock()

	cur, found, err := e.get(k)
	if err != nil {
		return Minted{}, err
	}
	if len(w.Origin) > 0 {
		rec, err := e.originRecord(w.Tenant, w.Origin)
		if err != nil {
			return Minted{}, err
		}
		if rec != nil || cur.HasOrigin(w.Origin) {
			if w.Forward != nil && len(cur.Siblings) > 0 {
				w.Forward(cur, nil, false)
			}
			return Minted{Object: cur, Existing: true, Record: rec}, nil
		}
	}
	next, v, records, err := e.next(w, cur)
	if err != nil {
		return Minted{}, err
	}
	// The last check before anything leaves this replica: past it, the
	// version exists (forwarded, committed) and the outcome is the
	// coordinator's to learn, not refused.
	if err := e.checkDeadline(w.Deadline, "mint"); err != nil {
		return Minted{}, err
	}
	if w.Forward != nil {
		w.Forward(next, v, true)
	}
	if err := e.commit(k, v, records...); err != nil {
		if w.Forward != nil {
			return Minted{}, status.Wrap(pb.ErrorCode_OUTCOME_UNKNOWN, err,
				"key %q of tenant %q: the version was passed on to other replicas but not committed here", w.Key, w.Tenant)
		}
		return Minted{}, err
	}
	if !found {
		e.keys.Add(1)
	}
	return Minted{Object: next}, nil
}

// checkWrite refuses a write that cannot be minted, before any lock.
func (e *Engine) checkWrite(w Write) error {
	if err := validate(w.Tenant, w.Key); err != nil {
		return err
	}
	if err := e.validateClock(w.Context); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad context for key %q of tenant %q", w.Key, w.Tenant)
	}
	if w.Tombstone && len(w.Value) > 0 {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "a tombstone carries no value")
	}
	return e.checkDeadline(w.Deadline, "mint")
}

// next is the object w makes of cur, encoded, with the origin record to
// store beside it; refused past the tenant's sibling and size limits.
func (e *Engine) next(w Write, cur dvv.Object) (dvv.Object, []byte, []record, error) {
	// The counter comes from the node-wide sequence, never reused across
	// keys or restarts, so a key rewritten after its tombstone was purged
	// is not covered by that tombstone's clock elsewhere (see purge.go).
	next, err := e.mint(dvv.Update(cur, w.Context, e.incarnation, w.Value, w.Tombstone, w.NowMs, w.Policy))
	if err != nil {
		return dvv.Object{}, nil, nil, err
	}
	dot := dvv.Dot{Actor: e.incarnation, Counter: next.Clock[e.incarnation]}
	if len(w.Origin) > 0 {
		for i := range next.Siblings {
			if next.Siblings[i].Dot == dot {
				next.Siblings[i].Origin = w.Origin
			}
		}
	}
	if w.MaxSiblings > 0 && len(next.Siblings) > w.MaxSiblings {
		return dvv.Object{}, nil, nil, status.Errorf(pb.ErrorCode_TOO_MANY_SIBLINGS,
			"key %q of tenant %q would have %d siblings, over the tenant's limit of %d; "+
				"read the key and write with its context to resolve the siblings",
			w.Key, w.Tenant, len(next.Siblings), w.MaxSiblings)
	}
	v, err := proto.Marshal(dvvpb.ObjectToProto(next))
	if err != nil {
		return dvv.Object{}, nil, nil, errors.Wrap(err, "engine: encode object")
	}
	if limit := e.objectLimit(w.MaxObjectBytes); len(v) > limit {
		return dvv.Object{}, nil, nil, status.Errorf(pb.ErrorCode_VALUE_TOO_LARGE,
			"key %q of tenant %q would store %d bytes with its siblings and clock, over the limit of %d; "+
				"read the key and write with its context to resolve the siblings, or write a smaller value",
			w.Key, w.Tenant, len(v), limit)
	}
	var records []record
	if w.RecordOrigin && len(w.Origin) > 0 {
		r, err := originEntry(w.Tenant, w.Origin, dot, next.Clock, w.NowMs)
		if err != nil {
			return dvv.Object{}, nil, nil, err
		}
		records = append(records, r)
	}
	return next, v, records, nil
}

// Apply mints a version as Mint does, with no deadline, forward or origin
// record: the form tests and tools use.
func (e *Engine) Apply(tenant, key string, causal dvv.VV, value []byte, tombstone bool,
	policy dvv.Policy, maxSiblings int, nowMs int64, origin []byte) (dvv.Object, error) {
	m, err := e.Mint(Write{Tenant: tenant, Key: key, Context: causal, Value: value, Tombstone: tombstone,
		Policy: policy, MaxSiblings: maxSiblings, NowMs: nowMs, Origin: origin})
	return m.Object, err
}

// MergeOptions qualify a Merge.
type MergeOptions struct {
	// Deadline: the object is not taken in at or after it (EXPIRED); zero
	// means none.
	Deadline time.Time
	// Minted says the object is exactly what a replica minted for a write
	// (a forward, a coordinator's fan-out, a hint of either): origin
	// records are kept for the siblings with an origin it adds here, with
	// the object's clock as the write's context.
	Minted bool
}

// Merge folds a replicated object into (tenant, key) with no options.
func (e *Engine) Merge(tenant, key string, obj dvv.Object, policy dvv.Policy) (dvv.Object, bool, error) {
	return e.MergeWith(tenant, key, obj, policy, MergeOptions{})
}

// MergeWith folds a replicated object into (tenant, key). It writes only
// when the merge changes what is stored, so replays cost a read. Merges are
// never refused for the sibling cap: replicas must converge, and the cap is
// enforced where versions are minted. Objects no replica could have made
// (Validate) are refused with INVALID_ARGUMENT and nothing is stored.
func (e *Engine) MergeWith(tenant, key string, obj dvv.Object, policy dvv.Policy, opts MergeOptions) (dvv.Object, bool, error) {
	if err := validate(tenant, key); err != nil {
		return dvv.Object{}, false, err
	}
	if err := e.Validate(obj); err != nil {
		return dvv.Object{}, false, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err,
			"cannot merge into key %q of tenant %q", key, tenant)
	}
	if err := e.checkDeadline(opts.Deadline, "merge"); err != nil {
		return dvv.Object{}, false, err
	}
	if err := e.acquire(); err != nil {
		return dvv.Object{}, false, err
	}
	defer e.mu.RUnlock()

	h := keyspace.Hash(tenant, key)
	k := dataKey(tenant, h, key)
	l := e.lock(h)
	l.Lock()
	defer l.Unlock()

	cur, found, err := e.get(k)
	if err != nil {
		return dvv.Object{}, false, err
	}
	merged := dvv.Merge(cur, obj, policy)
	if dvv.Equal(cur, merged) {
		return cur, false, nil
	}
	v, err := proto.Marshal(dvvpb.ObjectToProto(merged))
	if err != nil {
		return dvv.Object{}, false, errors.Wrap(err, "engine: encode object")
	}
	var records []record
	if opts.Minted {
		if records, err = gainedOrigins(tenant, cur, obj, e.now().UnixMilli()); err != nil {
			return dvv.Object{}, false, err
		}
	}
	if err := e.checkDeadline(opts.Deadline, "merge"); err != nil {
		return dvv.Object{}, false, err
	}
	if err := e.commit(k, v, records...); err != nil {
		return dvv.Object{}, false, err
	}
	if !found {
		e.keys.Add(1)
	}
	return merged, true, nil
}

// Validate checks an object another replica sent before it is merged:
// dvv.Validate, and no dot of this incarnation that it never minted (a
// clock claiming one would make this replica's next writes look already
// seen and superseded everywhere that clock went).
func (e *Engine) Validate(o dvv.Object) error {
	if err := dvv.Validate(o); err != nil {
		return err
	}
	return e.validateSelf(o.Clock)
}

func (e *Engine) validateClock(v dvv.VV) error {
	if err := dvv.ValidateClock(v); err != nil {
		return err
	}
	return e.validateSelf(v)
}

func (e *Engine) validateSelf(v dvv.VV) error {
	if c, ok := v[e.incarnation]; ok {
		if top := e.dots.minted(); c > top {
			return errors.Newf("clock claims dot %d of this replica (%s), which has minted no dot above %d",
				c, e.incarnation, top)
		}
	}
	return nil
}

// checkDeadline refuses work at or past deadline (zero: none) with EXPIRED.
func (e *Engine) checkDeadline(deadline time.Time, what string) error {
	if deadline.IsZero() {
		return nil
	}
	if now := e.now(); !now.Before(deadline) {
		return status.Errorf(pb.ErrorCode_EXPIRED, "%s: the request's deadline passed %s ago; nothing was done",
			what, now.Sub(deadline).Round(time.Millisecond))
	}
	return nil
}

// objectLimit is the bound on a stored object for a write asking for limit.
func (e *Engine) objectLimit(limit int) int {
	if limit <= 0 || limit > e.maxObjectBytes {
		return e.maxObjectBytes
	}
	return limit
}
