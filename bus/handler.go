package bus

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Limiter bounds how many requests run at once and owns their goroutines,
// so a shutdown can wait for every in-flight request.
//
// Micro endpoints call their handler from one goroutine per subscription;
// anything that blocks (a quorum wait, an fsync) must run elsewhere or it
// serialises the endpoint. The Limiter runs each request on its own
// goroutine, up to a cap; past the cap the request is refused at once with
// UNAVAILABLE rather than queued without bound.
type Limiter struct {
	sem chan struct{}
	wg  sync.WaitGroup
}

// NewLimiter allows up to n concurrent requests.
func NewLimiter(n int) *Limiter { return &Limiter{sem: make(chan struct{}, max(n, 1))} }

// Go runs fn on a new goroutine if a slot is free; false means overloaded.
func (l *Limiter) Go(fn func()) bool {
	select {
	case l.sem <- struct{}{}:
	default:
		return false
	}
	l.wg.Add(1)
	go func() {
		defer func() { <-l.sem; l.wg.Done() }()
		fn()
	}()
	return true
}

// Wait blocks until every started request has finished or ctx ends.
func (l *Limiter) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HandlerFunc serves one decoded request. subject is the subject the request
// arrived on (the KV endpoints read the tenant from it). A nil response with
// a nil error is a bug and answered INTERNAL.
type HandlerFunc[Req, Resp proto.Message] func(ctx context.Context, subject string, req Req) (Resp, error)

// Endpoint adapts fn to a micro handler: it decodes the body (protobuf, or
// JSON when asked), runs fn under the limiter with a deadline, and answers
// in the request's encoding. Failures are answered with the typed error in
// the body's `error` field and in the Nats-Service-Error(-Code) headers.
func Endpoint[Req, Resp proto.Message](l *Limiter, timeout time.Duration, log *zap.Logger,
	newReq func() Req, newResp func() Resp, fn HandlerFunc[Req, Resp]) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		enc := EncodingOf(nil)
		if h := r.Headers(); h != nil {
			enc = EncodingOf(map[string][]string(h))
		}
		started := l.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			req := newReq()
			if err := Unmarshal(enc, r.Data(), req); err != nil {
				reply(log, r, enc, newResp(), err)
				return
			}
			resp, err := fn(ctx, r.Subject(), req)
			if err == nil && isNil(resp) {
				err = Errorf(pb.ErrorCode_INTERNAL, "handler for %s returned no response", r.Subject())
			}
			if isNil(resp) {
				resp = newResp()
			}
			reply(log, r, enc, resp, err)
		})
		if !started {
			reply(log, r, enc, newResp(), Errorf(pb.ErrorCode_UNAVAILABLE,
				"too many requests in flight on this server; retry with backoff"))
		}
	})
}

func isNil(m proto.Message) bool { return m == nil || !m.ProtoReflect().IsValid() }

func reply(log *zap.Logger, r micro.Request, enc Encoding, resp proto.Message, err error) {
	var opts []micro.RespondOpt
	if enc == JSON {
		opts = append(opts, micro.WithHeaders(micro.Headers{HeaderContentType: []string{ContentTypeJSON}}))
	}
	if err != nil {
		pe := ToProto(err)
		if serr := setError(resp, pe); serr != nil {
			log.Error("cannot set error on response", zap.Error(serr))
		}
		body, merr := Marshal(enc, resp)
		if merr != nil {
			log.Error("encode error response", zap.Error(merr))
		}
		// Header values must be one line.
		desc := strings.ReplaceAll(pe.GetMessage(), "\n", " ")
		if rerr := r.Error(pe.GetCode().String(), desc, body, opts...); rerr != nil {
			log.Debug("reply failed", zap.String("subject", r.Subject()), zap.Error(rerr))
		}
		return
	}
	body, merr := Marshal(enc, resp)
	if merr != nil {
		log.Error("encode response", zap.Error(merr))
		_ = r.Error(pb.ErrorCode_INTERNAL.String(), "cannot encode response", nil, opts...)
		return
	}
	if rerr := r.Respond(body, opts...); rerr != nil {
		log.Debug("reply failed", zap.String("subject", r.Subject()), zap.Error(rerr))
	}
}
