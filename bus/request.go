package bus

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// DefaultTimeout bounds a request whose context carries no deadline: no call
// in PairDB waits forever.
const DefaultTimeout = 5 * time.Second

// WithDefaultTimeout returns ctx unchanged when it has a deadline, else a
// child with DefaultTimeout.
func WithDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// Request sends req to subject as protobuf and decodes the reply into resp.
// A reply carrying an error becomes a typed *status.Error; "no responders" becomes
// UNAVAILABLE (still matching nats.ErrNoResponders), a missed deadline
// DEADLINE_EXCEEDED.
func Request(ctx context.Context, nc *nats.Conn, subject string, req, resp proto.Message) error {
	ctx, cancel := WithDefaultTimeout(ctx)
	defer cancel()
	data, err := proto.Marshal(req)
	if err != nil {
		// A generated message fails to encode only for what it holds: a
		// string field (a key, a tenant) that is not valid UTF-8.
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "cannot encode the request for %s (keys and other text fields must be valid UTF-8)", subject)
	}
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return classifyRequestError(subject, err)
	}
	return decodeReply(subject, msg, resp)
}

func classifyRequestError(subject string, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "nothing is serving %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return status.Wrap(pb.ErrorCode_DEADLINE_EXCEEDED, err, "no reply from %s before the deadline", subject)
	}
	return status.Wrap(status.CodeOf(err), err, "request to %s", subject)
}

func decodeReply(subject string, msg *nats.Msg, resp proto.Message) error {
	if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
		// The server's "no responders" status, which nats.go's Request
		// turns into an error itself; a Mux sees it raw when the sender
		// shares its connection.
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, nats.ErrNoResponders, "nothing is serving %s", subject)
	}
	if err := proto.Unmarshal(msg.Data, resp); err != nil {
		return status.Wrap(pb.ErrorCode_INTERNAL, err, "malformed reply from %s", subject)
	}
	if e := getError(resp); e != nil {
		return errors.Mark(status.FromProto(e), errReplied)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		c := pb.ErrorCode(pb.ErrorCode_value[code])
		if c == pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
			c = pb.ErrorCode_INTERNAL
		}
		return errors.Mark(&status.Error{Code: c, Message: msg.Header.Get("Nats-Service-Error")}, errReplied)
	}
	return nil
}

// PartOptions are the connection options every long-running part
// (coordinator, storage node) uses: reconnect forever, and never replay a
// publish after a reconnect. nats.go otherwise keeps what is published while
// it reconnects (8 MB by default) and sends it once it is back, long after
// the sender gave up on it: a request answered "outcome unknown" could then
// take effect after the answer. With no reconnect buffer such a publish
// fails at once (nats.ErrReconnectBufExceeded), which callers treat as not
// sent; what was buffered but unsent when the connection broke is dropped by
// nats.go itself.
//
// inbox is the part's inbox prefix (CoordinatorInbox, NodeInbox(id)): its
// replies, JetStream's included, arrive under it, where its NATS user alone
// may subscribe. Empty keeps nats.go's _INBOX.
func PartOptions(name, inbox string) []nats.Option {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1)}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	return opts
}
