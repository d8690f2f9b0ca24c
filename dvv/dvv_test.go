package dvv

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The property tests drive a simulation of three replicas (actors a, b, c)
// that take puts and deletes with the contexts clients read, and merge with
// each other, so every object tested is one a real cluster could hold. Next
// to the real objects runs a naive model: each replica's causal history as a
// set of write ids, and for every write the set its writer's context had
// seen. The model knows nothing of dots or vectors.
//
// Under LastWriteWins the model also tracks, per replica, the writes whose
// values it has received (minted there or merged in, transitively; a context
// carries no values): the replica must hold exactly the greatest of them by
// (timestamp, actor, counter), whatever the causal order and however skewed
// the clocks.

type set map[int]bool

func union(sets ...set) set {
	out := set{}
	for _, s := range sets {
		maps.Copy(out, s)
	}
	return out
}

// write is one put or delete the simulation made.
type write struct {
	sib  Sibling
	seen set // the writer's context, as write ids
}

// read is what a client got from one replica: the context it will write
// with, and the model's view of what that context covers.
type read struct {
	from  int
	clock VV
	sibs  []Sibling
	hist  set
}

type sim struct {
	t      *testing.T
	rng    *rand.Rand
	policy Policy
	// skew draws timestamps at random, as unsynchronised wall clocks do.
	// Otherwise a write's timestamp exceeds every timestamp its context saw
	// (a hybrid logical clock) and is coarse, so concurrent writes tie and
	// the (actor, counter) tie-break is exercised.
	skew   bool
	actors []string
	reps   []Object
	hist   []set // per replica: every write it has seen (its clock)
	recv   []set // per replica: every write whose value reached it
	writes []write
	byDot  map[Dot]int
	reads  []read
	// pool holds past replica states: older versions of the same universe,
	// which the merge laws must handle as well as the latest ones.
	pool []Object
	step int
}

func newSim(t *testing.T, seed uint64, p Policy, skew bool) *sim {
	return &sim{
		t: t, rng: rand.New(rand.NewPCG(seed, 99)), policy: p, skew: skew,
		actors: []string{"a", "b", "c"},
		reps:   make([]Object, 3),
		hist:   []set{{}, {}, {}},
		recv:   []set{{}, {}, {}},
		byDot:  map[Dot]int{},
	}
}

func (s *sim) run(steps int) {
	for ; s.step < steps; s.step++ {
		i := s.rng.IntN(len(s.reps))
		switch r := s.rng.IntN(10); {
		case r < 4:
			s.write(i)
		case r < 6:
			s.reads = append(s.reads, s.read(i))
		default:
			j := (i + 1 + s.rng.IntN(len(s.reps)-1)) % len(s.reps)
			s.reps[i] = Merge(s.reps[i], s.reps[j], s.policy)
			s.hist[i] = union(s.hist[i], s.hist[j])
			s.recv[i] = union(s.recv[i], s.recv[j])
		}
		s.check(i)
		if s.rng.IntN(4) == 0 {
			s.pool = append(s.pool, s.reps[i])
		}
	}
}

func (s *sim) read(i int) read {
	return read{from: i, clock: s.reps[i].Clock.Clone(), sibs: slices.Clone(s.reps[i].Siblings), hist: union(s.hist[i])}
}

// write does a put or delete at replica i with no context, a stale context
// read earlier from any replica, or a fresh read of i.
func (s *sim) write(i int) {
	var ctx read
	switch r := s.rng.IntN(10); {
	case r < 2:
		ctx = read{from: -1, hist: set{}}
	case r < 5 && len(s.reads) > 0:
		ctx = s.reads[s.rng.IntN(len(s.reads))]
	default:
		ctx = s.read(i)
	}
	id := len(s.writes)
	var ts int64
	if s.skew {
		ts = s.rng.Int64N(50)
	} else {
		// Coarse wall time makes concurrent writes tie on timestamp.
		ts = int64(s.step / 5)
		for w := range ctx.hist {
			ts = max(ts, s.writes[w].sib.TimestampMs+1)
		}
	}
	value, tomb := []byte(fmt.Sprintf("w%d", id)), s.rng.IntN(6) == 0
	if tomb {
		value = nil
	}
	before := s.reps[i]
	beforeCopy := deepCopy(before)
	ctxCopy := maps.Clone(ctx.clock)

	after := Update(before, ctx.clock, s.actors[i], value, tomb, ts, s.policy)

	require.Equal(s.t, beforeCopy, before, "Update modified its input object")
	require.Equal(s.t, ctxCopy, ctx.clock, "Update modified its context")
	dot := Dot{Actor: s.actors[i], Counter: after.Clock[s.actors[i]]}
	require.Equal(s.t, before.Clock[s.actors[i]]+1, dot.Counter)
	// Record the sibling as Update minted it: under LastWriteWins its
	// timestamp may exceed ts.
	k := slices.IndexFunc(after.Siblings, func(x Sibling) bool { return x.Dot == dot })
	require.GreaterOrEqual(s.t, k, 0, "step %d: new write %v missing from %v", s.step, dot, after.Siblings)
	sib := after.Siblings[k]
	require.Equal(s.t, string(value), string(sib.Value))
	require.Equal(s.t, tomb, sib.Tombstone)
	wantTs := ts
	if s.policy == LastWriteWins {
		// The new value replaces everything held here and is stamped
		// later than all of it, so it wins locally whatever ts says.
		for _, x := range before.Siblings {
			wantTs = max(wantTs, x.TimestampMs+1)
		}
		require.Len(s.t, after.Siblings, 1, "step %d: LastWriteWins keeps only the new write", s.step)
	}
	require.Equal(s.t, wantTs, sib.TimestampMs, "step %d: minted timestamp (given %d, before %v)", s.step, ts, before.Siblings)
	s.writes = append(s.writes, write{sib: sib, seen: ctx.hist})
	s.byDot[dot] = id

	// Writing with the context of a read of this very replica supersedes
	// exactly the siblings that read returned: siblings that arrived since
	// stay, and the new one is added.
	if ctx.from == i && s.policy == Siblings {
		want := slices.DeleteFunc(slices.Clone(before.Siblings), func(x Sibling) bool {
			return slices.ContainsFunc(ctx.sibs, func(y Sibling) bool { return x.Dot == y.Dot })
		})
		want = append(want, s.writes[id].sib)
		require.True(s.t, Equal(Object{Siblings: want, Clock: after.Clock}, after),
			"step %d: read %v, before %v, after %v", s.step, ctx.sibs, before.Siblings, after.Siblings)
	}
	s.reps[i] = after
	s.hist[i] = union(s.hist[i], ctx.hist, set{id: true})
	s.recv[i] = union(s.recv[i], set{id: true})
}

// maximal is the model's answer for which writes must survive under
// Siblings: those no write in h had seen.
func (s *sim) maximal(h set) set {
	out := union(h)
	for w := range h {
		for x := range s.writes[w].seen {
			delete(out, x)
		}
	}
	return out
}

// winner is the model's LastWriteWins answer: the write in h with the
// greatest (timestamp, actor, counter), causality notwithstanding.
func (s *sim) winner(h set) int {
	best := -1
	for w := range h {
		if best < 0 {
			best = w
			continue
		}
		x, b := s.writes[w].sib, s.writes[best].sib
		if cmp.Or(cmp.Compare(x.TimestampMs, b.TimestampMs), strings.Compare(x.Dot.Actor, b.Dot.Actor),
			cmp.Compare(x.Dot.Counter, b.Dot.Counter)) > 0 {
			best = w
		}
	}
	return best
}

func (s *sim) ids(o Object) set {
	out := set{}
	for _, sib := range o.Siblings {
		id, ok := s.byDot[sib.Dot]
		require.True(s.t, ok, "sibling with unknown dot %v", sib.Dot)
		require.True(s.t, sameSibling(s.writes[id].sib, sib), "dot %v names another write", sib.Dot)
		out[id] = true
	}
	return out
}

// check compares replica i with the model: its clock covers exactly the
// writes it has seen, and its siblings are what the policy must keep.
func (s *sim) check(i int) {
	o, h := s.reps[i], s.hist[i]
	require.Subset(s.t, h, s.recv[i], "model: values arrive with their history")
	want := VV{}
	for w := range h {
		d := s.writes[w].sib.Dot
		want[d.Actor] = max(want[d.Actor], d.Counter)
	}
	require.True(s.t, want.Equal(o.Clock), "step %d replica %d: clock %v, model %v", s.step, i, o.Clock, want)
	switch {
	case s.policy == Siblings:
		require.Equal(s.t, s.maximal(h), s.ids(o), "step %d replica %d", s.step, i)
	case len(s.recv[i]) == 0:
		require.Empty(s.t, o.Siblings)
	default:
		require.Equal(s.t, set{s.winner(s.recv[i]): true}, s.ids(o), "step %d replica %d", s.step, i)
	}
}

// all is every state the simulation produced, plus the empty object.
func (s *sim) all() []Object {
	return append(append([]Object{{}}, s.pool...), s.reps...)
}

// mergeAll merges objects in a random tree shape, not just a left fold.
func mergeAll(rng *rand.Rand, objs []Object, p Policy) Object {
	objs = slices.Clone(objs)
	for len(objs) > 1 {
		i := rng.IntN(len(objs))
		j := (i + 1 + rng.IntN(len(objs)-1)) % len(objs)
		objs[i] = Merge(objs[i], objs[j], p)
		objs = slices.Delete(objs, j, j+1)
	}
	return objs[0]
}

func deepCopy(o Object) Object {
	out := Object{Siblings: slices.Clone(o.Siblings), Clock: maps.Clone(o.Clock)}
	for i := range out.Siblings {
		out.Siblings[i].Value = slices.Clone(out.Siblings[i].Value)
	}
	return out
}

func TestMergeLaws(t *testing.T) {
	for _, c := range []struct {
		name   string
		policy Policy
		skew   bool
	}{{"siblings", Siblings, false}, {"lww", LastWriteWins, false}, {"lww-skewed-clocks", LastWriteWins, true}} {
		t.Run(c.name, func(t *testing.T) {
			for seed := range uint64(60) {
				s := newSim(t, seed, c.policy, c.skew)
				s.run(150)
				objs := s.all()
				for range 200 {
					a, b, x := objs[s.rng.IntN(len(objs))], objs[s.rng.IntN(len(objs))], objs[s.rng.IntN(len(objs))]
					ab := Merge(a, b, c.policy)
					require.True(t, Equal(ab, Merge(b, a, c.policy)), "commutative: %v %v", a, b)
					require.True(t, Equal(a, Merge(a, a, c.policy)), "idempotent: %v", a)
					require.True(t, Equal(a, Merge(a, Object{}, c.policy)), "empty is the identity: %v", a)
					require.True(t, Equal(ab, Merge(ab, b, c.policy)), "absorbs what it merged")
					// Associative under every policy, skewed clocks included.
					require.True(t, Equal(Merge(ab, x, c.policy), Merge(a, Merge(b, x, c.policy), c.policy)),
						"associative: %v %v %v", a, b, x)
					if c.policy == LastWriteWins && !ab.Empty() {
						// The join keeps the greatest sibling of either side.
						ids := union(s.ids(a), s.ids(b))
						require.Equal(t, set{s.winner(ids): true}, s.ids(ab), "%v ⊔ %v", a, b)
					}
				}
			}
		})
	}
}

// TestNoConcurrentWriteDropped merges every replica and checks that the
// live siblings are exactly the writes no later write had seen, minus
// deletes. Every simulation step already checked each replica the same way.
func TestNoConcurrentWriteDropped(t *testing.T) {
	for seed := range uint64(100) {
		s := newSim(t, seed, Siblings, false)
		s.run(200)
		final := mergeAll(s.rng, s.reps, Siblings)
		want := set{}
		for w := range s.maximal(union(s.hist...)) {
			if !s.writes[w].sib.Tombstone {
				want[w] = true
			}
		}
		require.Equal(t, want, s.ids(Object{Siblings: final.Live()}), "seed %d", seed)
		require.True(t, Equal(final, mergeAll(s.rng, s.all(), Siblings)), "old states change nothing")
	}
}

// TestLastWriteWinsDeterministic checks that LastWriteWins converges on the
// write with the greatest (timestamp, actor, counter) ever minted, whatever
// the merge order, including old states, with causal or skewed clocks.
func TestLastWriteWinsDeterministic(t *testing.T) {
	for _, skew := range []bool{false, true} {
		for seed := range uint64(100) {
			s := newSim(t, seed, LastWriteWins, skew)
			s.run(200)
			every := set{}
			for w := range s.writes {
				every[w] = true
			}
			final := mergeAll(s.rng, s.reps, LastWriteWins)
			require.Len(t, final.Siblings, 1)
			require.Equal(t, set{s.winner(every): true}, s.ids(final), "skew %v seed %d", skew, seed)
			require.True(t, final.Clock.Equal(mergeAll(s.rng, s.reps, Siblings).Clock), "the clock is the join")
			for range 5 {
				objs := s.all()
				s.rng.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
				require.True(t, Equal(final, mergeAll(s.rng, objs, LastWriteWins)), "skew %v seed %d", skew, seed)
			}
		}
	}
}

// TestLastWriteWinsSkewedClocks is the case that made causal filtering
// non-associative: a holds x (ts 10), b holds y (ts 20), c holds z (ts 5)
// written with b's context. With filtering, (a⊔b)⊔c kept z, a⊔(b⊔c) kept x,
// and merging those two kept nothing. Now every order keeps y: z, though
// causally later, has the older timestamp and c never held y to outstamp it.
func TestLastWriteWinsSkewedClocks(t *testing.T) {
	a := put(Object{}, nil, "a", "x", 10, LastWriteWins)
	b := put(Object{}, nil, "b", "y", 20, LastWriteWins)
	c := put(Object{}, b.Clock, "c", "z", 5, LastWriteWins)
	require.Equal(t, int64(5), c.Siblings[0].TimestampMs, "c held nothing to outstamp")
	left := Merge(Merge(a, b, LastWriteWins), c, LastWriteWins)
	right := Merge(a, Merge(b, c, LastWriteWins), LastWriteWins)
	want := VV{"a": 1, "b": 1, "c": 1}
	for _, m := range []Object{left, right, Merge(left, right, LastWriteWins), Merge(Merge(a, c, LastWriteWins), b, LastWriteWins)} {
		require.Equal(t, []string{"y"}, values(m.Siblings))
		require.Equal(t, want, m.Clock)
	}
	// Written where y is held, the follow-up is stamped past y and wins.
	atB := put(b, b.Clock, "b", "z", 5, LastWriteWins)
	require.Equal(t, int64(21), atB.Siblings[0].TimestampMs)
	require.Equal(t, []string{"z"}, values(Merge(Merge(a, atB, LastWriteWins), b, LastWriteWins).Siblings))
}

func put(o Object, ctx VV, actor, value string, ts int64, p Policy) Object {
	return Update(o, ctx, actor, []byte(value), false, ts, p)
}

func values(ss []Sibling) []string {
	var out []string
	for _, s := range ss {
		out = append(out, string(s.Value))
	}
	return out
}

func TestUpdateSupersedesExactlyWhatItSaw(t *testing.T) {
	// Two concurrent puts at a, a read, then a third concurrent put arrives
	// from b. Writing with the read's clock replaces the two it saw only.
	o := put(Object{}, nil, "a", "x", 1, Siblings)
	o = put(o, nil, "a", "y", 2, Siblings)
	seen := o.Clock.Clone()
	o = Merge(o, put(Object{}, nil, "b", "z", 3, Siblings), Siblings)
	require.Equal(t, []string{"x", "y", "z"}, values(o.Live()))

	o = put(o, seen, "a", "w", 4, Siblings)
	require.Equal(t, []string{"w", "z"}, values(o.Live()))
	require.Equal(t, VV{"a": 3, "b": 1}, o.Clock)

	// A write with no context is concurrent with everything.
	o = put(o, nil, "a", "v", 5, Siblings)
	require.Equal(t, []string{"w", "v", "z"}, values(o.Live()))
}

func TestLastWriteWinsTies(t *testing.T) {
	x := put(Object{}, nil, "a", "x", 7, LastWriteWins)
	y := put(Object{}, nil, "b", "y", 7, LastWriteWins)
	z := put(Object{}, nil, "c", "z", 6, LastWriteWins)
	for _, m := range []Object{
		Merge(x, y, LastWriteWins), Merge(y, x, LastWriteWins),
		Merge(Merge(z, y, LastWriteWins), x, LastWriteWins),
		Merge(Merge(x, z, LastWriteWins), y, LastWriteWins),
	} {
		require.Equal(t, []string{"y"}, values(m.Siblings), "equal timestamps: the larger actor wins")
	}
	// Equal timestamp and actor: the larger counter wins. (a, 2) is minted
	// concurrently with x by a replica whose copy was purged.
	x2 := put(Object{}, x.Clock, "a", "x2", 7, LastWriteWins)
	require.Equal(t, Dot{"a", 2}, x2.Siblings[0].Dot)
	for _, m := range []Object{Merge(x, x2, LastWriteWins), Merge(x2, x, LastWriteWins)} {
		require.Equal(t, []string{"x2"}, values(m.Siblings), "equal timestamps and actors: the larger counter wins")
	}
	// The newest timestamp wins even if its write saw nothing.
	w := put(x, nil, "a", "w", 8, LastWriteWins)
	require.Equal(t, []string{"w"}, values(Merge(y, w, LastWriteWins).Siblings))
	// A put with an older timestamp where x is held replaces x and is
	// stamped just past it, even without a context.
	atB := Merge(Object{}, x, LastWriteWins)
	late := put(atB, nil, "b", "late", 1, LastWriteWins)
	require.Equal(t, []Sibling{{Value: []byte("late"), Dot: Dot{"b", 1}, TimestampMs: 8}}, late.Siblings)
	require.Equal(t, VV{"a": 1, "b": 1}, late.Clock)
	require.Equal(t, []string{"late"}, values(Merge(x, late, LastWriteWins).Siblings))
	// A newer timestamp is kept as given.
	require.Equal(t, int64(30), put(atB, nil, "b", "new", 30, LastWriteWins).Siblings[0].TimestampMs)
}

func TestTombstones(t *testing.T) {
	for _, p := range []Policy{Siblings, LastWriteWins} {
		o := put(Object{}, nil, "a", "x", 1, p)
		del := Update(o, o.Clock, "a", nil, true, 2, p)
		require.Empty(t, del.Live(), "delete with context")
		require.Len(t, del.Siblings, 1, "the tombstone is kept until purged")
		require.False(t, del.Empty())
	}

	// A delete and a put that both saw x are concurrent: the put survives.
	o := put(Object{}, nil, "a", "x", 1, Siblings)
	ctx := o.Clock.Clone()
	atA := Update(o, ctx, "a", nil, true, 2, Siblings)
	atB := put(o, ctx, "b", "y", 2, Siblings)
	for _, m := range []Object{Merge(atA, atB, Siblings), Merge(atB, atA, Siblings)} {
		require.Equal(t, []string{"y"}, values(m.Live()))
		require.Len(t, m.Siblings, 2, "the tombstone stays beside y")
	}
	// So does a put written without any context.
	blind := put(Object{}, nil, "c", "z", 0, Siblings)
	require.Equal(t, []string{"z"}, values(Merge(atA, blind, Siblings).Live()))
}

func TestBehind(t *testing.T) {
	a := put(Object{}, nil, "a", "x", 1, Siblings)
	b := put(a, a.Clock, "b", "y", 2, Siblings) // supersedes x
	c := put(Object{}, nil, "c", "z", 3, Siblings)
	m := Merge(Merge(a, b, Siblings), c, Siblings)

	require.False(t, Behind(m, m, Siblings), "up to date")
	require.False(t, Behind(Merge(m, put(m, nil, "a", "v", 4, Siblings), Siblings), m, Siblings), "ahead of m")
	require.True(t, Behind(Object{}, m, Siblings), "missing")
	require.True(t, Behind(a, m, Siblings), "holds x, which y superseded")
	require.True(t, Behind(b, m, Siblings), "lacks z")
	require.False(t, Behind(Merge(b, c, Siblings), m, Siblings))
}

func TestUpdateDoesNotMutateInput(t *testing.T) {
	for _, p := range []Policy{Siblings, LastWriteWins} {
		o := put(Object{}, nil, "a", "x", 1, Siblings)
		o = Merge(o, put(Object{}, nil, "b", "y", 2, Siblings), Siblings)
		ctx := VV{"a": 1, "c": 7}
		oCopy, ctxCopy := deepCopy(o), ctx.Clone()
		got := Update(o, ctx, "a", []byte("z"), false, 3, p)
		require.Equal(t, oCopy, o)
		require.Equal(t, ctxCopy, ctx)
		got.Clock["a"] = 100
		got.Siblings[0].TimestampMs = 100
		require.Equal(t, oCopy, o, "the result shares no clock or sibling array with the input")

		m := Merge(o, got, p)
		m.Clock["b"] = 100
		require.Equal(t, oCopy, o)
	}
}

// TestUpdateContextAheadOfLocalClock: a client may hold a context from
// before this replica lost its copy of the key (tombstones are purged after
// a grace period, DESIGN.md §5). The new dot must lie beyond that context;
// reusing (r, 1) would mint an event the context already "saw", so the
// replica still holding the old tombstone, or any client with that context,
// would silently drop the new write.
func TestUpdateContextAheadOfLocalClock(t *testing.T) {
	stale := Object{Siblings: []Sibling{{Tombstone: true, Dot: Dot{"r", 4}, TimestampMs: 1}}, Clock: VV{"r": 4}}
	ctx := stale.Clock.Clone()
	got := put(Object{}, ctx, "r", "v", 2, Siblings) // r purged its copy

	require.False(t, ctx.Covers(got.Siblings[0].Dot), "new dot %v is already covered by the context", got.Siblings[0].Dot)
	require.True(t, got.Clock.Descends(ctx), "clock %v must be Clock ⊔ ctx ⊔ dot", got.Clock)
	merged := Merge(stale, got, Siblings)
	require.Equal(t, []string{"v"}, values(merged.Live()))
	// Another client with the same old context writes elsewhere: it never
	// saw v, so v must survive as a sibling.
	other := put(merged, ctx, "s", "w", 3, Siblings)
	require.Equal(t, []string{"v", "w"}, values(other.Live()))
}

func benchObjects() (Object, Object) {
	// Three concurrent siblings on each side, from disjoint actors so the
	// two objects are consistent with each other.
	var a, b Object
	for i, actor := range []string{"a", "a", "b"} {
		a = put(a, nil, actor, "value-a", int64(i), Siblings)
	}
	for i, actor := range []string{"c", "c", "d"} {
		b = put(b, nil, actor, "value-b", int64(i), Siblings)
	}
	return a, b
}

func BenchmarkMerge(b *testing.B) {
	x, y := benchObjects()
	for b.Loop() {
		_ = Merge(x, y, Siblings)
	}
}

func BenchmarkUpdate(b *testing.B) {
	x, _ := benchObjects()
	value := []byte("value")
	for b.Loop() {
		_ = Update(x, x.Clock, "a", value, false, 1, Siblings)
	}
}
