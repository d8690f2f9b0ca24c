// Package dvvpb converts between the pure dvv types and their wire form.
package dvvpb

import (
	"slices"
	"strings"

	"github.com/pairdb/pairdb/dvv"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// ClockFromProto turns wire clock entries into a version vector.
func ClockFromProto(es []*pb.ClockEntry) dvv.VV {
	v := make(dvv.VV, len(es))
	for _, e := range es {
		if e.GetCounter() > v[e.GetActor()] {
			v[e.GetActor()] = e.GetCounter()
		}
	}
	return v
}

// ClockToProto turns a version vector into wire entries sorted by actor, so
// equal clocks encode identically.
func ClockToProto(v dvv.VV) []*pb.ClockEntry {
	out := make([]*pb.ClockEntry, 0, len(v))
	for a, c := range v {
		if c > 0 {
			out = append(out, &pb.ClockEntry{Actor: a, Counter: c})
		}
	}
	sortEntries(out)
	return out
}

// ObjectFromProto decodes a wire object; nil gives the empty object.
func ObjectFromProto(o *pb.Object) dvv.Object {
	out := dvv.Object{Clock: ClockFromProto(o.GetClock())}
	for _, s := range o.GetSiblings() {
		out.Siblings = append(out.Siblings, dvv.Sibling{
			Value:       s.GetValue(),
			Tombstone:   s.GetTombstone(),
			Dot:         dvv.Dot{Actor: s.GetDot().GetActor(), Counter: s.GetDot().GetCounter()},
			TimestampMs: s.GetTimestampMs(),
			Origin:      s.GetOrigin(),
		})
	}
	return out
}

// ObjectToProto encodes an object for the wire or for storage.
func ObjectToProto(o dvv.Object) *pb.Object {
	out := &pb.Object{Clock: ClockToProto(o.Clock)}
	for _, s := range o.Siblings {
		out.Siblings = append(out.Siblings, &pb.StoredSibling{
			Value:       s.Value,
			Tombstone:   s.Tombstone,
			Dot:         &pb.Dot{Actor: s.Dot.Actor, Counter: s.Dot.Counter},
			TimestampMs: s.TimestampMs,
			Origin:      s.Origin,
		})
	}
	return out
}

// PolicyFromProto maps the wire policy; unspecified means siblings.
func PolicyFromProto(p pb.ConflictPolicy) dvv.Policy {
	if p == pb.ConflictPolicy_LAST_WRITE_WINS {
		return dvv.LastWriteWins
	}
	return dvv.Siblings
}

// sortEntries sorts by actor in O(n log n): a clock decoded from the wire
// may hold any number of actors.
func sortEntries(es []*pb.ClockEntry) {
	slices.SortFunc(es, func(a, b *pb.ClockEntry) int { return strings.Compare(a.Actor, b.Actor) })
}
