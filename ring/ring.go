// Package ring is PairDB's placement (DESIGN.md §4): a consistent-hash ring
// of physical nodes, each owning V virtual points, and the preference list of
// a key hash. It is pure: no I/O, no clocks, nothing else of ours, so every
// coordinator and storage node that folds the same ring events computes the
// same placement.
package ring

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// DefaultVirtualNodes is V when New is given none. With 150 points a node's
// share of the hash space deviates from fair by roughly 1/sqrt(150) ≈ 8%
// (one standard deviation); see the spread tests for measured numbers.
const DefaultVirtualNodes = 150

// point is one virtual node: a position on the 64-bit circle and the index
// of its physical node in Ring.owners. An index instead of the id keeps a
// point at 16 bytes, so lookups touch fewer cache lines.
type point struct {
	pos   uint64
	owner int32
}

// Ring is one epoch's placement. It is immutable after New, so it is safe
// for concurrent use without locks.
type Ring struct {
	epoch  uint64
	owners []string // the nodes that own points, sorted
	points []point  // sorted by (pos, owner)
}

// New builds the ring at an epoch from the nodes that own points (which
// nodes those are is membership's to say: its node states). vnodes <= 0
// means DefaultVirtualNodes. Duplicate ids count once.
func New(epoch uint64, vnodes int, owners []string) *Ring {
	return build(epoch, vnodes, owners, pointPos)
}

// build is New with the point hash as an argument, so tests can force
// colliding positions that xxHash64 will not produce on demand.
func build(epoch uint64, vnodes int, owners []string, pos func(id string, v int) uint64) *Ring {
	if vnodes <= 0 {
		vnodes = DefaultVirtualNodes
	}
	r := &Ring{epoch: epoch, owners: slices.Compact(slices.Sorted(slices.Values(owners)))}
	r.points = make([]point, 0, len(r.owners)*vnodes)
	for i, id := range r.owners {
		for v := range vnodes {
			r.points = append(r.points, point{pos: pos(id, v), owner: int32(i)})
		}
	}
	// Two points may share a position (different nodes, or in principle
	// two vnodes of one node). Both are kept and ordered by owner, and owners
	// are sorted by ID, so the tie-break is by node id and identical on
	// every process.
	slices.SortFunc(r.points, func(a, b point) int {
		if c := cmp.Compare(a.pos, b.pos); c != 0 {
			return c
		}
		return cmp.Compare(a.owner, b.owner)
	})
	return r
}

// pointPos is the position of virtual node v of node id: xxHash64 over
// uvarint(len(id)) ‖ id ‖ uvarint(v). The length prefix keeps ("ab", 1) and
// ("a", …) from ever sharing an input. The encoding and algorithm are fixed
// and documented, so positions are stable across processes and releases;
// changing them moves data, so never do it without a migration.
func pointPos(id string, v int) uint64 {
	var buf [binary.MaxVarintLen64]byte
	d := xxhash.New()
	n := binary.PutUvarint(buf[:], uint64(len(id)))
	_, _ = d.Write(buf[:n])
	_, _ = d.WriteString(id)
	n = binary.PutUvarint(buf[:], uint64(v))
	_, _ = d.Write(buf[:n])
	return d.Sum64()
}

// Epoch is the ring stream position this ring was folded up to.
func (r *Ring) Epoch() uint64 { return r.epoch }

// Owners returns the nodes that own points, sorted. The slice is a copy.
func (r *Ring) Owners() []string { return slices.Clone(r.owners) }

// Owns reports whether node id owns points on this ring.
func (r *Ring) Owns(id string) bool {
	_, ok := slices.BinarySearch(r.owners, id)
	return ok
}

// Size is the number of distinct nodes that own points.
func (r *Ring) Size() int { return len(r.owners) }

// Preference returns the first n distinct nodes clockwise from hash: the
// first point whose position is >= hash (wrapping to the lowest point), then
// onward. Fewer than n nodes on the ring → all of them; n <= 0 or an empty
// ring → nil. Arcs are (previous point, point]: a key hash equal to a point
// position belongs to that point.
//
// The only allocation is the result. Duplicates are found by a linear scan
// of the result, which beats a set for the small n replication uses.
func (r *Ring) Preference(hash uint64, n int) []string {
	want := min(n, len(r.owners))
	if want <= 0 {
		return nil
	}
	// The first point at or after hash; with equal positions this is the
	// first of them, so ties resolve by owner as New sorted them.
	i, _ := slices.BinarySearchFunc(r.points, hash, func(p point, h uint64) int { return cmp.Compare(p.pos, h) })
	out := make([]string, 0, want)
	// Every owner has at least one point, so one lap always finds want
	// distinct nodes; the bound only guards the loop.
	for k := 0; k < len(r.points) && len(out) < want; k++ {
		if i == len(r.points) {
			i = 0 // past the highest point: wrap to the lowest
		}
		id := r.owners[r.points[i].owner]
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
		i++
	}
	return out
}

// Holder lets a running service swap rings atomically: readers Load the
// current ring and use it for a whole request, so one request never mixes
// two epochs. It does not order epochs; whoever calls Store (the ring event
// follower) decides which ring is newest.
type Holder struct {
	p atomic.Pointer[Ring]
}

// NewHolder returns a Holder holding r.
func NewHolder(r *Ring) *Holder {
	h := &Holder{}
	h.p.Store(r)
	return h
}

// Load returns the ring last stored; nil if none was.
func (h *Holder) Load() *Ring { return h.p.Load() }

// Store makes r the ring later Loads return.
func (h *Holder) Store(r *Ring) { h.p.Store(r) }
