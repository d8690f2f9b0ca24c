package bus

import (
	"context"
	"fmt"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Error is a typed PairDB error: a code a program can branch on and a
// message a person can act on. The cause, when there is one, stays
// reachable through errors.Is / errors.As.
type Error struct {
	Code    pb.ErrorCode
	Message string
	cause   error
}

func (e *Error) Error() string {
	return e.Code.String() + ": " + e.Message
}

// Unwrap exposes the cause.
func (e *Error) Unwrap() error { return e.cause }

// Errorf builds a typed error.
func Errorf(code pb.ErrorCode, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap builds a typed error around a cause; the message names what failed
// and the cause's text is appended.
func Wrap(code pb.ErrorCode, cause error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return &Error{Code: code, Message: msg, cause: cause}
}

// CodeOf classifies any error: a typed error keeps its code, NATS and
// context failures map to UNAVAILABLE / DEADLINE_EXCEEDED, the rest is
// INTERNAL.
func CodeOf(err error) pb.ErrorCode {
	var e *Error
	switch {
	case err == nil:
		return pb.ErrorCode_ERROR_CODE_UNSPECIFIED
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return pb.ErrorCode_DEADLINE_EXCEEDED
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, context.Canceled):
		return pb.ErrorCode_UNAVAILABLE
	}
	return pb.ErrorCode_INTERNAL
}

// errReplied marks an error the remote part answered with (a typed error in
// its reply), as opposed to a transport failure around the request.
var errReplied = errors.New("answered by the remote part")

// IsReply reports whether err is a typed error the other part answered
// with: it handled the request and said no. Anything else (no reply by the
// deadline, a lost connection, a reply that could not be decoded) leaves
// open whether the request took effect.
func IsReply(err error) bool { return errors.Is(err, errReplied) }

// Is reports whether err carries the given code.
func Is(err error, code pb.ErrorCode) bool { return err != nil && CodeOf(err) == code }

// ToProto renders an error for a response body; nil for nil.
func ToProto(err error) *pb.Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return &pb.Error{Code: e.Code, Message: e.Message}
	}
	return &pb.Error{Code: CodeOf(err), Message: err.Error()}
}

// FromProto turns a response body's error back into a typed error; nil when
// the response carries none.
func FromProto(e *pb.Error) error {
	if e == nil || e.GetCode() == pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil
	}
	return &Error{Code: e.GetCode(), Message: e.GetMessage()}
}
