package bus_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// BenchmarkCodecRoundTrip encodes and decodes the messages of the hot
// path, a client put and a replica's merge of a three-replica object, in
// both encodings. Compare runs with benchstat.
func BenchmarkCodecRoundTrip(b *testing.B) {
	value := make([]byte, 128)
	clock := []*pb.ClockEntry{{Actor: "inc-aaaaaaaaaaaa", Counter: 41}, {Actor: "inc-bbbbbbbbbbbb", Counter: 7}, {Actor: "inc-cccccccccccc", Counter: 19}}
	msgs := map[string]func() (in, out proto.Message){
		"put": func() (proto.Message, proto.Message) {
			return &pb.PutRequest{Key: "user:0000000001", Value: value, Consistency: "quorum", VectorClock: clock, IdempotencyKey: "0123456789abcdef0123456789abcdef"},
				new(pb.PutRequest)
		},
		"merge": func() (proto.Message, proto.Message) {
			return &pb.MergeRequest{TenantId: "bench", Key: "user:0000000001", Epoch: 12, Object: &pb.Object{
					Clock:    clock,
					Siblings: []*pb.StoredSibling{{Value: value, Dot: &pb.Dot{Actor: "inc-aaaaaaaaaaaa", Counter: 41}, TimestampMs: 1764000000000}},
				}},
				new(pb.MergeRequest)
		},
	}
	for name, mk := range msgs {
		for encName, enc := range map[string]bus.Encoding{"proto": bus.Proto, "json": bus.JSON} {
			b.Run(name+"/"+encName, func(b *testing.B) {
				in, out := mk()
				b.ReportAllocs()
				for b.Loop() {
					data, err := bus.Marshal(enc, in)
					if err != nil {
						b.Fatal(err)
					}
					if err := bus.Unmarshal(enc, data, out); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
