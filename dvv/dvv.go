// Package dvv implements dotted version vectors: the per-key version model of
// PairDB (DESIGN.md §5). It is pure: no I/O, no clocks, nothing of ours.
//
// An Object is a set of siblings, each created by one event named by a Dot,
// plus a version vector (VV) that covers every dot the object has seen. A
// sibling is dropped only when the other side has seen its dot and no longer
// holds it, so concurrent writes are never lost by accident.
package dvv

import (
	"bytes"
	"slices"
)

// Dot names one write event: the actor (a storage node incarnation) and that
// actor's counter for the key.
type Dot struct {
	Actor   string
	Counter uint64
}

// Less orders dots by actor, then counter; it is the canonical sibling order.
func (d Dot) Less(o Dot) bool {
	if d.Actor != o.Actor {
		return d.Actor < o.Actor
	}
	return d.Counter < o.Counter
}

// VV is a version vector: actor → highest counter seen. A nil VV is empty.
type VV map[string]uint64

// Covers reports whether the event d is included in v.
func (v VV) Covers(d Dot) bool { return v[d.Actor] >= d.Counter }

// Descends reports whether v has seen everything o has (v ≥ o pointwise).
func (v VV) Descends(o VV) bool {
	for a, c := range o {
		if v[a] < c {
			return false
		}
	}
	return true
}

// Equal reports whether both vectors hold the same counters (a zero entry
// counts as absent).
func (v VV) Equal(o VV) bool { return v.Descends(o) && o.Descends(v) }

// Join returns the pointwise maximum of v and o as a new vector.
func (v VV) Join(o VV) VV {
	out := make(VV, max(len(v), len(o)))
	for a, c := range v {
		if c > 0 {
			out[a] = c
		}
	}
	for a, c := range o {
		if c > out[a] {
			out[a] = c
		}
	}
	return out
}

// Clone returns an independent copy.
func (v VV) Clone() VV { return v.Join(nil) }

// Sibling is one value (or tombstone) of a key.
type Sibling struct {
	Value     []byte
	Tombstone bool
	Dot       Dot
	// TimestampMs is the minting replica's wall clock; it only breaks ties
	// under LastWriteWins and is shown to clients.
	TimestampMs int64
	// Origin names the request that wrote the sibling (opaque; empty when
	// the write carried no idempotency key). It travels with the dot.
	Origin []byte
}

// Object is everything a replica holds for one key.
type Object struct {
	// Siblings are kept sorted by Dot (canonical form), at most one per dot.
	Siblings []Sibling
	Clock    VV
}

// Policy decides what concurrent siblings become.
type Policy int

const (
	// Siblings keeps every concurrent value; the client resolves them.
	Siblings Policy = iota
	// LastWriteWins keeps one winner by (timestamp, actor, counter): the
	// highest timestamp wins, whatever the contexts say. Filtering by
	// causality first and then picking the latest is not associative when
	// clocks are skewed (a causally later write with an older timestamp can
	// make every value vanish, depending on merge order), so LWW is a plain
	// maximum over all siblings, which is a lattice join. To keep causal
	// follow-ups winning, Update stamps a new value later than every
	// sibling the minting replica holds.
	LastWriteWins
)

// Empty reports whether the object holds nothing (never written here).
func (o Object) Empty() bool { return len(o.Siblings) == 0 && len(o.Clock) == 0 }

// Live returns the siblings that are values, not tombstones.
func (o Object) Live() []Sibling {
	var out []Sibling
	for _, s := range o.Siblings {
		if !s.Tombstone {
			out = append(out, s)
		}
	}
	return out
}

// Update mints a new sibling at actor, as the coordinating replica does for
// a put or delete with causal context ctx: siblings covered by ctx are
// superseded, the new sibling gets dot (actor, max(Clock[actor], ctx[actor])+1),
// and the clock becomes Clock ⊔ ctx ⊔ dot. The input object is not modified.
//
// The counter must also pass ctx: a context can be ahead of this replica
// (its copy was purged after a delete), and a dot the context already covers
// would be treated as seen, so other replicas and clients holding that
// context would drop the new write.
func Update(o Object, ctx VV, actor string, value []byte, tombstone bool, tsMs int64, p Policy) Object {
	dot := Dot{Actor: actor, Counter: max(o.Clock[actor], ctx[actor]) + 1}
	out := Object{Clock: o.Clock.Join(ctx)}
	out.Clock[actor] = dot.Counter
	for _, s := range o.Siblings {
		if p == LastWriteWins {
			// The new value supersedes everything held here, so it must
			// also win on time even if this replica's clock is behind.
			tsMs = max(tsMs, s.TimestampMs+1)
			continue
		}
		if !ctx.Covers(s.Dot) {
			out.Siblings = append(out.Siblings, s)
		}
	}
	out.Siblings = append(out.Siblings, Sibling{Value: value, Tombstone: tombstone, Dot: dot, TimestampMs: tsMs})
	return out.normalize(p)
}

// Merge combines two replicas' objects. A sibling survives unless the other
// side's clock covers its dot and the other side no longer holds it. Merge is
// commutative, associative and idempotent, so it may be replayed in any order.
func Merge(a, b Object, p Policy) Object {
	out := Object{Clock: a.Clock.Join(b.Clock)}
	keep := func(from, other Object) {
		holds := other.holder()
		for _, s := range from.Siblings {
			// Under LastWriteWins every sibling competes on time (see the
			// policy's comment); normalize keeps the latest.
			if p == LastWriteWins || !other.Clock.Covers(s.Dot) || holds(s.Dot) {
				out.Siblings = append(out.Siblings, s)
			}
		}
	}
	keep(a, b)
	keep(b, a)
	return out.normalize(p)
}

// Equal reports whether two objects are the same version: equal clocks and
// the same siblings.
func Equal(a, b Object) bool {
	if !a.Clock.Equal(b.Clock) || len(a.Siblings) != len(b.Siblings) {
		return false
	}
	as, bs := sorted(a.Siblings), sorted(b.Siblings)
	for i := range as {
		if !sameSibling(as[i], bs[i]) {
			return false
		}
	}
	return true
}

// HasOrigin reports whether a sibling written by request origin is held.
func (o Object) HasOrigin(origin []byte) bool {
	if len(origin) == 0 {
		return false
	}
	for _, s := range o.Siblings {
		if bytes.Equal(s.Origin, origin) {
			return true
		}
	}
	return false
}

// Behind reports whether replica r is missing something merged m has, so it
// needs repair. It is false when r already equals Merge(r, m).
func Behind(r, m Object, p Policy) bool { return !Equal(r, Merge(r, m, p)) }

func (o Object) holds(d Dot) bool {
	for _, s := range o.Siblings {
		if s.Dot == d {
			return true
		}
	}
	return false
}

// holder returns holds for the few siblings a key normally has and a set
// lookup for more, so merging large (or hostile) objects stays linear
// instead of quadratic in the sibling count.
func (o Object) holder() func(Dot) bool {
	if len(o.Siblings) <= 8 {
		return o.holds
	}
	set := make(map[Dot]struct{}, len(o.Siblings))
	for _, s := range o.Siblings {
		set[s.Dot] = struct{}{}
	}
	return func(d Dot) bool { _, ok := set[d]; return ok }
}

// normalize sorts siblings by dot, drops duplicate dots and applies the
// policy, so equal versions have identical representations.
func (o Object) normalize(p Policy) Object {
	o.Siblings = sorted(o.Siblings)
	o.Siblings = slices.CompactFunc(o.Siblings, func(x, y Sibling) bool { return x.Dot == y.Dot })
	if p == LastWriteWins && len(o.Siblings) > 1 {
		w := o.Siblings[0]
		for _, s := range o.Siblings[1:] {
			if wins(s, w) {
				w = s
			}
		}
		o.Siblings = []Sibling{w}
	}
	return o
}

// wins orders siblings for LastWriteWins: later timestamp, then larger dot.
func wins(s, over Sibling) bool {
	if s.TimestampMs != over.TimestampMs {
		return s.TimestampMs > over.TimestampMs
	}
	return over.Dot.Less(s.Dot)
}

func sorted(ss []Sibling) []Sibling {
	out := slices.Clone(ss)
	SortSiblings(out)
	return out
}

// Compare orders dots like Less: -1, 0 or +1.
func (d Dot) Compare(o Dot) int {
	switch {
	case d.Less(o):
		return -1
	case o.Less(d):
		return 1
	}
	return 0
}

// SortSiblings puts siblings in the canonical order (by dot), in place.
func SortSiblings(ss []Sibling) {
	slices.SortStableFunc(ss, func(x, y Sibling) int { return x.Dot.Compare(y.Dot) })
}

func sameSibling(x, y Sibling) bool {
	return x.Dot == y.Dot && x.Tombstone == y.Tombstone && x.TimestampMs == y.TimestampMs && bytes.Equal(x.Value, y.Value)
}
