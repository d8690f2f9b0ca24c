package ring

import (
	"slices"
)

// Arc is the ring interval (Start, End]: hashes h with Start < h <= End,
// wrapping past the top when Start >= End (Start == End is the whole ring).
// One half-open convention everywhere: a hash equal to a point belongs to
// that point's arc, as in Preference.
type Arc struct {
	Start, End uint64
}

// Contains reports whether h lies in the arc.
func (a Arc) Contains(h uint64) bool {
	switch {
	case a.Start < a.End:
		return h > a.Start && h <= a.End
	case a.Start > a.End:
		return h > a.Start || h <= a.End
	}
	return true
}

// Move is an arc whose replica set differs between two placements.
type Move struct {
	Arc Arc
	// From is the replica set before, To after (preference order).
	From, To []string
}

// Gainers are the nodes that become replicas of the arc.
func (m Move) Gainers() []string { return minus(m.To, m.From) }

// Targets are the nodes of To that must catch up with From before the
// cutover. Usually the gainers: each pulls from enough of From to hold
// every write on a majority of it, and with one node swapped such a write
// is then on a majority of To. When the set shrinks (a lower replication
// factor, To a prefix of From) nobody gains, yet a write on a majority of
// From can miss most of To (on the last three of five, it is on one of the
// first three), so every node of To catches up.
func (m Move) Targets() []string {
	if len(m.To) < len(m.From) {
		return slices.Clone(m.To)
	}
	return m.Gainers()
}

// Losers are the nodes that stop being replicas of the arc.
func (m Move) Losers() []string { return minus(m.From, m.To) }

// Diff compares the replica sets of every arc between placement (from, n)
// and (to, m): the full preference lists of n and m replicas, not just the
// primary owner, so a node that joins as a second or third replica is found
// too. It returns the arcs whose sets differ, adjacent arcs with equal sets
// merged.
func Diff(from *Ring, n int, to *Ring, m int) []Move {
	bounds := boundaries(from, to)
	if len(bounds) == 0 {
		return nil
	}
	var out []Move
	for i, end := range bounds {
		start := bounds[(i+len(bounds)-1)%len(bounds)]
		// Every hash in (start, end] has the same first point at or after it
		// in both rings (no point of either ring lies strictly inside), so
		// the preference lists at end hold for the whole arc.
		a, b := from.Preference(end, n), to.Preference(end, m)
		if slices.Equal(a, b) {
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].Arc.End == start && slices.Equal(out[k].From, a) && slices.Equal(out[k].To, b) {
			out[k].Arc.End = end
			continue
		}
		out = append(out, Move{Arc: Arc{Start: start, End: end}, From: a, To: b})
	}
	// The first and last arcs meet at the wrap point; merge them too.
	if len(out) > 1 {
		first, last := out[0], out[len(out)-1]
		if last.Arc.End == first.Arc.Start && slices.Equal(first.From, last.From) && slices.Equal(first.To, last.To) {
			out[0].Arc.Start = last.Arc.Start
			out = out[:len(out)-1]
		}
	}
	return out
}

// boundaries are the distinct point positions of both rings, sorted.
func boundaries(a, b *Ring) []uint64 {
	out := make([]uint64, 0, len(a.points)+len(b.points))
	for _, p := range a.points {
		out = append(out, p.pos)
	}
	for _, p := range b.points {
		out = append(out, p.pos)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
