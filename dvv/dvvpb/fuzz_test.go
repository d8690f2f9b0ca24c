package dvvpb_test

import (
	"bytes"
	"fmt"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// FuzzObjectFromProto decodes arbitrary stored or wire objects. Whatever
// protobuf accepts, conversion never panics; merging an object with itself
// gives the naive normal form (siblings sorted by dot, the first of each dot
// kept) and is idempotent from there; and the normal form survives a wire
// round trip and encodes canonically.
func FuzzObjectFromProto(f *testing.F) {
	for _, o := range []*pb.Object{
		{},
		{Clock: []*pb.ClockEntry{{Actor: "a", Counter: 1}}, Siblings: []*pb.StoredSibling{
			{Value: []byte("v"), Dot: &pb.Dot{Actor: "a", Counter: 1}, TimestampMs: 10}}},
		// Two concurrent siblings and an actor with no sibling left.
		{Clock: []*pb.ClockEntry{{Actor: "b", Counter: 2}, {Actor: "a", Counter: 3}, {Actor: "c", Counter: 9}},
			Siblings: []*pb.StoredSibling{
				{Value: []byte("x"), Dot: &pb.Dot{Actor: "b", Counter: 2}},
				{Tombstone: true, Dot: &pb.Dot{Actor: "a", Counter: 3}, TimestampMs: -1}}},
		// Malformed: duplicate dots with different values, a dot outside the
		// clock, a missing dot, duplicate and zero clock entries.
		{Clock: []*pb.ClockEntry{{Actor: "a", Counter: 1}, {Actor: "a", Counter: 5}, {Actor: "z"}, {}},
			Siblings: []*pb.StoredSibling{
				{Value: []byte("first"), Dot: &pb.Dot{Actor: "a", Counter: 1}},
				{Value: []byte("second"), Dot: &pb.Dot{Actor: "a", Counter: 1}},
				{Value: []byte("outside"), Dot: &pb.Dot{Actor: "q", Counter: 7}},
				{Value: []byte("no dot")}}},
	} {
		b, err := proto.Marshal(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // sibling with a 4 GiB length
	f.Add([]byte{0x12, 0x02, 0x10, 0x01})             // clock entry without an actor
	f.Add([]byte{0x0a, 0x00, 0x0a, 0x00, 0x0a, 0x00}) // three empty siblings
	f.Fuzz(func(t *testing.T, data []byte) {
		var in pb.Object
		if proto.Unmarshal(data, &in) != nil {
			return
		}
		o := dvvpb.ObjectFromProto(&in)

		for _, p := range []dvv.Policy{dvv.Siblings, dvv.LastWriteWins} {
			m := dvv.Merge(o, o, p)
			if !dvv.Equal(dvv.Merge(m, m, p), m) {
				t.Fatalf("policy %d: merge is not idempotent on %+v", p, m)
			}
			if p == dvv.LastWriteWins && len(m.Siblings) > 1 {
				t.Fatalf("last-write-wins kept %d siblings", len(m.Siblings))
			}
		}
		m := dvv.Merge(o, o, dvv.Siblings)
		if want := naiveNormal(o); !dvv.Equal(m, want) {
			t.Fatalf("merge with itself:\n got %+v\nwant %+v", m, want)
		}

		wire := dvvpb.ObjectToProto(m)
		enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(wire)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		// The output describes no more than the input did: a sibling gains
		// at most an empty dot, duplicates and zero counters are dropped.
		if limit := 2*len(data) + 8; len(enc) > limit {
			t.Fatalf("%d-byte object re-encoded to %d bytes (limit %d)", len(data), len(enc), limit)
		}
		var back pb.Object
		if err := proto.Unmarshal(enc, &back); err != nil {
			t.Fatalf("decode re-encoded object: %v", err)
		}
		rt := dvvpb.ObjectFromProto(&back)
		if !dvv.Equal(rt, m) {
			t.Fatalf("round trip changed the object:\n got %+v\nwant %+v", rt, m)
		}
		enc2, err := proto.MarshalOptions{Deterministic: true}.Marshal(dvvpb.ObjectToProto(rt))
		if err != nil {
			t.Fatalf("encode again: %v", err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("equal objects encode differently:\n%x\n%x", enc, enc2)
		}
	})
}

// naiveNormal is the reference normal form: for each dot, its first sibling
// in input order, sorted by dot; the clock as decoded.
func naiveNormal(o dvv.Object) dvv.Object {
	out := dvv.Object{Clock: o.Clock}
	seen := map[dvv.Dot]bool{}
	for _, s := range o.Siblings {
		if !seen[s.Dot] {
			seen[s.Dot] = true
			out.Siblings = append(out.Siblings, s)
		}
	}
	sort.SliceStable(out.Siblings, func(i, j int) bool { return out.Siblings[i].Dot.Less(out.Siblings[j].Dot) })
	return out
}

// BenchmarkLargeObject converts and merges an object with tens of
// thousands of actors and siblings (about what fits in one NATS message).
// With an insertion sort in ClockToProto and a linear scan per sibling in
// Merge this took over ten seconds an operation; it is now linear-ish. Speed
// lives here, not in a timed test: compare runs with benchstat.
func BenchmarkLargeObject(b *testing.B) {
	const n = 50000
	var o pb.Object
	for i := range n {
		// Actors in scrambled order, each with one sibling at its counter.
		a := fmt.Sprintf("n%05d", (i*7919)%n)
		o.Clock = append(o.Clock, &pb.ClockEntry{Actor: a, Counter: uint64(i + 1)})
		o.Siblings = append(o.Siblings, &pb.StoredSibling{Dot: &pb.Dot{Actor: a, Counter: uint64(i + 1)}})
	}
	for b.Loop() {
		x := dvvpb.ObjectFromProto(&o)
		m := dvv.Merge(x, x, dvv.Siblings)
		wire := dvvpb.ObjectToProto(m)
		if len(m.Siblings) != n || len(wire.GetClock()) != n {
			b.Fatalf("got %d siblings and %d clock entries, want %d", len(m.Siblings), len(wire.GetClock()), n)
		}
	}
}
