package bus

import (
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// fuzzRequests are the request bodies the servers decode with Unmarshal:
// the coordinator's KV and tenant endpoints, the storage node endpoints, and
// the range transfer and node admin requests of the membership schema.
func fuzzRequests() []proto.Message {
	return []proto.Message{
		&pb.PutRequest{}, &pb.GetRequest{}, &pb.DeleteRequest{},
		&pb.CreateTenantRequest{}, &pb.GetTenantRequest{}, &pb.UpdateTenantRequest{},
		&pb.DeleteTenantRequest{}, &pb.ListTenantsRequest{},
		&pb.ApplyRequest{}, &pb.MergeRequest{}, &pb.ReadRequest{},
		&pb.ScanRequest{}, &pb.DigestRequest{},
		&pb.AddNodesRequest{}, &pb.RemoveNodeRequest{}, &pb.ListNodesRequest{},
		&pb.GetMigrationRequest{}, &pb.ListMigrationsRequest{},
	}
}

// fuzzResponses are the reply bodies Request decodes.
func fuzzResponses() []proto.Message {
	return []proto.Message{
		&pb.PutResponse{}, &pb.GetResponse{}, &pb.DeleteResponse{},
		&pb.TenantResponse{}, &pb.ListTenantsResponse{},
		&pb.ApplyResponse{}, &pb.MergeResponse{}, &pb.ReadResponse{},
		&pb.ScanResponse{}, &pb.DigestResponse{},
		&pb.NodeChangeResponse{}, &pb.ListNodesResponse{},
		&pb.MigrationResponse{}, &pb.ListMigrationsResponse{},
	}
}

var fuzzClock = []*pb.ClockEntry{{Actor: "node-1", Counter: 3}, {Actor: "node-2", Counter: 1}}

// fuzzSeedRequests are well-formed examples of every request type.
func fuzzSeedRequests() []proto.Message {
	obj := &pb.Object{
		Siblings: []*pb.StoredSibling{{Value: []byte("v"), Dot: &pb.Dot{Actor: "node-1", Counter: 3}, TimestampMs: 1700000000000}},
		Clock:    fuzzClock,
	}
	return []proto.Message{
		&pb.PutRequest{Key: "k", Value: []byte("value\x00\xff"), Consistency: "QUORUM", IdempotencyKey: "idem-1", VectorClock: fuzzClock},
		&pb.GetRequest{Key: "user/42", Consistency: "ONE"},
		&pb.DeleteRequest{Key: "k", Consistency: "ALL", IdempotencyKey: "idem-2", VectorClock: fuzzClock},
		&pb.CreateTenantRequest{TenantId: "acme", ReplicationFactor: 3},
		&pb.GetTenantRequest{TenantId: "acme"},
		&pb.UpdateTenantRequest{TenantId: "acme", MaxSiblings: proto.Uint32(0), ConflictPolicy: proto.String("LAST_WRITE_WINS"), ExpectedVersion: 4},
		&pb.DeleteTenantRequest{TenantId: "acme"},
		&pb.ListTenantsRequest{},
		&pb.ApplyRequest{TenantId: "acme", Key: "k", Value: []byte("v"), Context: fuzzClock,
			Policy: pb.ConflictPolicy_LAST_WRITE_WINS, MaxSiblings: 8, Epoch: 7},
		&pb.MergeRequest{TenantId: "acme", Key: "k", Object: obj, Policy: pb.ConflictPolicy_SIBLINGS, Epoch: 7},
		&pb.ReadRequest{TenantId: "acme", Key: "k", Epoch: 7},
		&pb.ScanRequest{TenantId: "acme", Range: &pb.HashRange{Start: 1 << 63, End: 5}, AfterHash: 9,
			AfterKey: "k", HasAfter: true, Limit: 100, Epoch: 7},
		&pb.DigestRequest{TenantId: "acme", Range: &pb.HashRange{}, Epoch: 7},
		&pb.AddNodesRequest{NodeIds: []string{"node-4", "node-5"}},
		&pb.RemoveNodeRequest{NodeId: "node-2", Force: true},
		&pb.GetMigrationRequest{MigrationId: "m-1"},
	}
}

// FuzzUnmarshal feeds one body to every request type in one encoding (the
// first byte chooses: even is protobuf, odd is JSON). Decoding never panics,
// a failure is always a typed INVALID_ARGUMENT, the decoded message is no
// larger than a constant factor of its input, and it survives a round trip.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range fuzzSeedRequests() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(Proto), b)
		j, err := Marshal(JSON, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(JSON), j)
	}
	for _, b := range [][]byte{
		nil,
		{0x0a},                         // field 1, length-delimited, no length
		{0x0a, 0xff, 0xff, 0xff, 0x0f}, // a 4 GiB length over a 5-byte body
		{0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, // overlong varint length
		{0x0a, 0x02, 0xc3, 0x28}, // invalid UTF-8 in a string field
		{0x7a, 0x00},             // unknown field 15, empty
		{0x1a, 0x03, 0x1a, 0x01}, // MergeRequest.object truncated inside
	} {
		f.Add(byte(Proto), b)
	}
	for _, s := range []string{
		"", "{}", "null", "[]", `{"key":`, `{"key":"\ud800"}`, `{"unknown":1}`,
		`{"key":"k","key":"k"}`, `{"epoch":"18446744073709551616"}`, `{"epoch":1e19}`,
		`{"policy":"NOT_A_POLICY"}`, `{"policy":99}`, `{"object":{"siblings":[{"dot":{"counter":"-1"}}]}}`,
		`{"value":"not base64!"}`, `{"vector_clock":[{"actor":"a","counter":1},{}]}`, `{"vectorClock":null}`,
	} {
		f.Add(byte(JSON), []byte(s))
	}
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		enc := Encoding(which % 2)
		for _, m := range fuzzRequests() {
			err := Unmarshal(enc, data, m)
			if err != nil {
				var e *status.Error
				if !errors.As(err, &e) || status.CodeOf(err) != pb.ErrorCode_INVALID_ARGUMENT {
					t.Fatalf("%T: error %v (%T) is not a typed INVALID_ARGUMENT", m, err, err)
				}
				continue
			}
			// A decoded message holds no more than its input describes: no
			// allocation is sized by a length field alone. Protobuf re-encodes
			// within a few bytes of the input (an empty sub-message or an
			// unpacked value gains a tag); protojson text is never much
			// shorter than the protobuf it denotes.
			if n, limit := proto.Size(m), 2*len(data)+64; n > limit {
				t.Fatalf("%T: %d-byte body decoded to %d bytes (limit %d)", m, len(data), n, limit)
			}
			out, err := Marshal(enc, m)
			if err != nil {
				t.Fatalf("%T: re-encode a decoded message: %v", m, err)
			}
			again := m.ProtoReflect().New().Interface()
			if err := Unmarshal(enc, out, again); err != nil {
				t.Fatalf("%T: decode a re-encoded message: %v", m, err)
			}
			if !proto.Equal(m, again) {
				t.Fatalf("%T: round trip changed the message:\n%v\n%v", m, m, again)
			}
		}
	})
}

// FuzzDecodeReply feeds a reply body and service error headers to every
// response type Request decodes. It never panics and a failure is always a
// typed error with a real code: INTERNAL for a body that does not decode,
// else the code the reply carries.
func FuzzDecodeReply(f *testing.F) {
	ok := &pb.PutResponse{Key: "k", VectorClock: fuzzClock, ReplicaCount: 3, Consistency: "QUORUM"}
	failed := &pb.GetResponse{Error: &pb.Error{Code: pb.ErrorCode_KEY_NOT_FOUND, Message: "no such key"}}
	read := &pb.ReadResponse{Found: true, Object: &pb.Object{Clock: fuzzClock}, Epoch: 2}
	scan := &pb.ScanResponse{Items: []*pb.ScanItem{{Key: "k", Hash: 42, Object: &pb.Object{Clock: fuzzClock}}}, Done: true}
	for _, m := range []proto.Message{ok, failed, read, scan, &pb.ListTenantsResponse{}} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "", "")
	}
	f.Add([]byte(nil), "UNAVAILABLE", "too many requests in flight")
	f.Add([]byte(nil), "NOT_A_CODE", "x")
	f.Add([]byte(nil), "0", "")
	f.Add([]byte{0x7a, 0x02, 0x08, 0x00}, "QUORUM_NOT_REACHED", "error field present with code 0")
	f.Add([]byte{0x7a, 0x03, 0x08, 0xe7, 0x07}, "", "error code 999, outside the enum")
	f.Add([]byte{0x7a, 0xff, 0xff, 0xff, 0xff, 0x0f}, "", "huge length")
	f.Fuzz(func(t *testing.T, body []byte, code, desc string) {
		for _, resp := range fuzzResponses() {
			msg := &nats.Msg{Data: body, Header: nats.Header{}}
			if code != "" {
				msg.Header.Set(micro.ErrorCodeHeader, code)
				msg.Header.Set(micro.ErrorHeader, desc)
			}
			err := decodeReply("pairdb.v1.test", msg, resp)
			if err == nil {
				continue
			}
			var e *status.Error
			if !errors.As(err, &e) {
				t.Fatalf("%T: error %v (%T) is not a *status.Error", resp, err, err)
			}
			if e.Code == pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
				t.Fatalf("%T: error %v has no code", resp, err)
			}
			if proto.Unmarshal(body, resp.ProtoReflect().New().Interface()) != nil && e.Code != pb.ErrorCode_INTERNAL {
				t.Fatalf("%T: undecodable reply gave %v, want INTERNAL", resp, err)
			}
		}
	})
}
