package bus

import (
	"bytes"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Encoding is the wire encoding of a message body.
type Encoding int

const (
	// Proto is binary protobuf, the default.
	Proto Encoding = iota
	// JSON is protojson with the proto field names (snake_case), chosen by
	// the request header Content-Type: application/json.
	JSON
)

const (
	// HeaderContentType selects the encoding of a request and its reply.
	HeaderContentType = "Content-Type"
	// ContentTypeJSON is the value that selects JSON.
	ContentTypeJSON = "application/json"
	// HeaderRetryAfterMs is set on an error reply that says when to retry
	// (RATE_LIMIT_EXCEEDED), in milliseconds, as the body's retry_after_ms.
	HeaderRetryAfterMs = "Pairdb-Retry-After-Ms"
)

var (
	jsonOut = protojson.MarshalOptions{UseProtoNames: true}
	jsonIn  = protojson.UnmarshalOptions{}
)

// EncodingOf reads the encoding a request asked for.
func EncodingOf(h nats.Header) Encoding {
	if h != nil && h.Get(HeaderContentType) == ContentTypeJSON {
		return JSON
	}
	return Proto
}

// Marshal encodes m.
func Marshal(enc Encoding, m proto.Message) ([]byte, error) {
	if enc == JSON {
		return jsonOut.Marshal(m)
	}
	return proto.Marshal(m)
}

// Unmarshal decodes data into m; a malformed body is INVALID_ARGUMENT.
func Unmarshal(enc Encoding, data []byte, m proto.Message) error {
	var err error
	if enc == JSON {
		if len(data) == 0 {
			data = []byte("{}")
		}
		err = jsonIn.Unmarshal(data, m)
	} else {
		err = proto.Unmarshal(data, m)
	}
	if err != nil {
		if enc == JSON {
			e := status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "malformed JSON request body")
			if strings.Contains(err.Error(), "bytes field") {
				// protojson says only "invalid value for bytes field".
				e.(*status.Error).Message += hintBase64
			}
			return e
		}
		e := status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "malformed protobuf request body")
		if looksLikeJSON(data) {
			e.(*status.Error).Message += hintContentType
		}
		return e
	}
	return nil
}

// Hints appended to decoding errors for the two mistakes people make by
// hand with `nats req`.
const (
	hintBase64      = ` (bytes fields such as value are base64 in JSON: "aGVsbG8=" for hello)`
	hintContentType = " (to send JSON, add the header " + HeaderContentType + ": " + ContentTypeJSON + ")"
)

// looksLikeJSON reports whether a body that failed to decode as protobuf
// starts like a JSON object or array. '{' and '[' open deprecated protobuf
// groups, which no PairDB message uses, so this guess costs nothing.
func looksLikeJSON(data []byte) bool {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	return len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[')
}

// setError stores e in the message's `error` field (every PairDB response
// has one at the same name), so handlers need no per-type plumbing.
func setError(m proto.Message, e *pb.Error) error {
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("error")
	if fd == nil || fd.Message() == nil {
		return errors.Newf("%s has no error field", r.Descriptor().FullName())
	}
	r.Set(fd, protoreflect.ValueOfMessage(e.ProtoReflect()))
	return nil
}

// getError reads the `error` field of a response.
func getError(m proto.Message) *pb.Error {
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("error")
	if fd == nil || !r.Has(fd) {
		return nil
	}
	e, _ := r.Get(fd).Message().Interface().(*pb.Error)
	return e
}
