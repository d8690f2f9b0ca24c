package bus

import (
	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// NATS failures classify as UNAVAILABLE (nobody answered, the connection
// is gone) or DEADLINE_EXCEEDED (no answer in time), wherever they surface.
func init() {
	status.RegisterClassifier(func(err error) (pb.ErrorCode, bool) {
		switch {
		case errors.Is(err, nats.ErrTimeout):
			return pb.ErrorCode_DEADLINE_EXCEEDED, true
		case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed),
			errors.Is(err, nats.ErrConnectionDraining):
			return pb.ErrorCode_UNAVAILABLE, true
		}
		return 0, false
	})
}

// errReplied marks an error the remote part answered with (a typed error in
// its reply), as opposed to a transport failure around the request.
var errReplied = errors.New("answered by the remote part")

// IsReply reports whether err is a typed error the other part answered
// with: it handled the request and said no. Anything else (no reply by the
// deadline, a lost connection, a reply that could not be decoded) leaves
// open whether the request took effect.
func IsReply(err error) bool { return errors.Is(err, errReplied) }
