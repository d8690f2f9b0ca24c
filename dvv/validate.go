package dvv

import (
	"bytes"

	"github.com/cockroachdb/errors"
)

// Bounds on what an object or a context may hold. Objects and contexts come
// from other processes, so every one is checked against these before it is
// merged or minted from (Validate, ValidateClock).
const (
	// MaxCounter is the highest counter a dot may have. Counters are minted
	// one at a time from 1, so no honest clock comes near it; the headroom
	// above it means that max(...)+1 never wraps, in Update or in a
	// replica's dot sequence.
	MaxCounter = 1 << 62
	// MaxActorBytes bounds an actor name (incarnations are 16 hex
	// characters).
	MaxActorBytes = 64
	// MaxClockEntries bounds the actors of one clock: one per storage-node
	// incarnation that ever wrote the key.
	MaxClockEntries = 1024
)

// ValidateClock checks a version vector against the bounds above: every
// actor named and at most MaxActorBytes long, every counter in
// [1, MaxCounter], at most MaxClockEntries entries.
func ValidateClock(v VV) error {
	if len(v) > MaxClockEntries {
		return errors.Newf("clock has %d actors; at most %d are allowed", len(v), MaxClockEntries)
	}
	for a, c := range v {
		if err := validateDot(Dot{Actor: a, Counter: c}); err != nil {
			return errors.Wrap(err, "clock entry")
		}
	}
	return nil
}

func validateDot(d Dot) error {
	switch {
	case d.Actor == "" || len(d.Actor) > MaxActorBytes:
		return errors.Newf("actor name of %d bytes (1 to %d allowed)", len(d.Actor), MaxActorBytes)
	case d.Counter == 0 || d.Counter > MaxCounter:
		return errors.Newf("counter %d of actor %q is outside 1 to %d", d.Counter, d.Actor, uint64(MaxCounter))
	}
	return nil
}

// Validate checks that o is an object some replica could have produced, as
// merging relies on: it holds at least one sibling (a clock alone would
// erase every sibling it covers wherever it is merged, without leaving a
// tombstone), every sibling has a valid dot that its clock covers and that
// no other sibling shares, a tombstone carries no value, and the clock is
// within bounds (ValidateClock).
func Validate(o Object) error {
	if len(o.Siblings) == 0 {
		return errors.New("object has no siblings: an object is never a clock alone")
	}
	if err := ValidateClock(o.Clock); err != nil {
		return err
	}
	for _, s := range o.Siblings {
		if err := validateDot(s.Dot); err != nil {
			return errors.Wrap(err, "sibling dot")
		}
		if !o.Clock.Covers(s.Dot) {
			return errors.Newf("sibling dot (%q, %d) is not covered by the object's clock", s.Dot.Actor, s.Dot.Counter)
		}
		if s.Tombstone && len(s.Value) > 0 {
			return errors.Newf("tombstone (%q, %d) carries a value", s.Dot.Actor, s.Dot.Counter)
		}
	}
	if distinct := len(distinctDots(o.Siblings)); distinct != len(o.Siblings) {
		return errors.Newf("object has %d siblings but %d distinct dots", len(o.Siblings), distinct)
	}
	return nil
}

// distinctDots is the set of dots of ss.
func distinctDots(ss []Sibling) map[Dot]struct{} {
	out := make(map[Dot]struct{}, len(ss))
	for _, s := range ss {
		out[s.Dot] = struct{}{}
	}
	return out
}

// OriginDot returns the dot of the sibling written by request origin, if o
// holds one.
func (o Object) OriginDot(origin []byte) (Dot, bool) {
	if len(origin) == 0 {
		return Dot{}, false
	}
	for _, s := range o.Siblings {
		if bytes.Equal(s.Origin, origin) {
			return s.Dot, true
		}
	}
	return Dot{}, false
}
