// Package status is PairDB's typed error: a code from the wire schema that
// a program can branch on, and a message a person can act on. Every part
// returns it, and the transport (bus) carries it in replies. It does no
// I/O and knows no transport: bus registers how NATS failures classify.
package status

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/errors"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Error is a typed PairDB error. The cause, when there is one, stays
// reachable through errors.Is / errors.As.
type Error struct {
	Code    pb.ErrorCode
	Message string
	// RetryAfter, when set, is how long the caller should wait before it
	// sends the request again (RATE_LIMIT_EXCEEDED says it).
	RetryAfter time.Duration
	cause      error
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

// Classifier maps an error it recognizes to a code.
type Classifier func(error) (pb.ErrorCode, bool)

var (
	classifiersMu sync.RWMutex
	classifiers   []Classifier
)

// RegisterClassifier teaches CodeOf the errors of a layer below PairDB's
// (bus registers NATS's at init).
func RegisterClassifier(c Classifier) {
	classifiersMu.Lock()
	defer classifiersMu.Unlock()
	classifiers = append(classifiers, c)
}

// CodeOf classifies any error: a typed error keeps its code, a context's
// deadline is DEADLINE_EXCEEDED and its cancellation UNAVAILABLE, a
// registered classifier names the rest it knows, and anything else is
// INTERNAL.
func CodeOf(err error) pb.ErrorCode {
	var e *Error
	switch {
	case err == nil:
		return pb.ErrorCode_ERROR_CODE_UNSPECIFIED
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.DeadlineExceeded):
		return pb.ErrorCode_DEADLINE_EXCEEDED
	case errors.Is(err, context.Canceled):
		return pb.ErrorCode_UNAVAILABLE
	}
	classifiersMu.RLock()
	defer classifiersMu.RUnlock()
	for _, c := range classifiers {
		if code, ok := c(err); ok {
			return code
		}
	}
	return pb.ErrorCode_INTERNAL
}

// Is reports whether err carries the given code.
func Is(err error, code pb.ErrorCode) bool { return err != nil && CodeOf(err) == code }

// ToProto renders an error for a response body; nil for nil.
func ToProto(err error) *pb.Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return &pb.Error{Code: e.Code, Message: e.Message, RetryAfterMs: retryAfterMs(e.RetryAfter)}
	}
	return &pb.Error{Code: CodeOf(err), Message: err.Error()}
}

// FromProto turns a response body's error back into a typed error; nil when
// the response carries none.
func FromProto(e *pb.Error) error {
	if e == nil || e.GetCode() == pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil
	}
	return &Error{Code: e.GetCode(), Message: e.GetMessage(), RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond}
}

// RetryAfterOf is how long err asks its caller to wait before a retry (0
// when it does not say).
func RetryAfterOf(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// retryAfterMs rounds d up to whole milliseconds, so a wait never reads as
// none.
func retryAfterMs(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min((d+time.Millisecond-1)/time.Millisecond, 1<<31))
}
