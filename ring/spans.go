package ring

import (
	"math"
	"slices"
)

// Span is a stretch [Lo, Hi] of the hash line (no wrap) whose every hash
// has the same set of n replicas: the unit a walk of the key space in hash
// order visits, one replica set at a time.
type Span struct {
	Lo, Hi uint64
	// Replicas is the set, sorted (preference order differs inside a span
	// and does not matter to a reader of all of them).
	Replicas []string
}

// Arc is the span as an arc, (Lo-1, Hi]; a span from 0 starts at the top
// of the ring, so the arc does not wrap past anything but 0.
func (s Span) Arc() Arc {
	if s.Lo == 0 {
		return Arc{Start: math.MaxUint64, End: s.Hi}
	}
	return Arc{Start: s.Lo - 1, End: s.Hi}
}

// Spans cuts the hash line 0..MaxUint64 into spans of r with n replicas:
// adjacent stretches with the same set merged, so a ring whose every arc
// has the same replicas (n at least its size) is one span. Empty for an
// empty ring.
func Spans(r *Ring, n int) []Span {
	if len(r.points) == 0 || n <= 0 {
		return nil
	}
	setAt := func(h uint64) []string {
		s := r.Preference(h, n)
		slices.Sort(s)
		return s
	}
	var out []Span
	add := func(lo, hi uint64, set []string) {
		if k := len(out) - 1; k >= 0 && slices.Equal(out[k].Replicas, set) {
			out[k].Hi = hi
			return
		}
		out = append(out, Span{Lo: lo, Hi: hi, Replicas: set})
	}
	lo := uint64(0)
	for i, p := range r.points {
		if i > 0 && p.pos == r.points[i-1].pos {
			continue
		}
		add(lo, p.pos, setAt(p.pos))
		if p.pos == math.MaxUint64 {
			return out
		}
		lo = p.pos + 1
	}
	// Past the highest point the ring wraps to the lowest one's set.
	add(lo, math.MaxUint64, setAt(r.points[0].pos))
	return out
}

// SpanOf is the index of the span of spans (as Spans returns them) that
// holds h.
func SpanOf(spans []Span, h uint64) int {
	i, _ := slices.BinarySearchFunc(spans, h, func(s Span, h uint64) int {
		if s.Hi < h {
			return -1
		}
		return 1
	})
	return i
}
