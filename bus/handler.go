package bus

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Limiter bounds how many requests run at once and owns their goroutines,
// so a shutdown can wait for every in-flight request.
//
// Micro endpoints call their handler from one goroutine per subscription;
// anything that blocks (a quorum wait, an fsync) must run elsewhere or it
// serialises the endpoint. The Limiter runs each request on its own
// goroutine, up to a cap; past the cap the request is refused at once with
// UNAVAILABLE rather than queued without bound.
//
// Finished goroutines wait a moment for the next request instead of
// exiting: a fresh goroutine starts with a small stack and grows it on
// every request that goes deep (Pebble, protobuf), which showed up as several
// percent of a storage node's CPU.
type Limiter struct {
	sem     chan struct{}
	idle    chan func() // unbuffered: a send succeeds only if a worker waits
	quit    chan struct{}
	mu      sync.Mutex
	wg      sync.WaitGroup // requests
	workers sync.WaitGroup // goroutines, idle or not
	live    atomic.Int64   // the same, readable
	closing bool
}

// replyHeadroom is room kept in a reply message for its headers.
const replyHeadroom = 4 << 10

// workerIdle is how long a finished worker waits for more work.
const workerIdle = time.Second

// NewLimiter allows up to n concurrent requests.
func NewLimiter(n int) *Limiter {
	return &Limiter{sem: make(chan struct{}, max(n, 1)), idle: make(chan func()), quit: make(chan struct{})}
}

// Go runs fn on a new goroutine if a slot is free and the limiter is not
// draining; false means the request was refused.
func (l *Limiter) Go(fn func()) bool {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return false
	}
	select {
	case l.sem <- struct{}{}:
	default:
		l.mu.Unlock()
		return false
	}
	// Add under the lock: Drain's Wait never races with an Add at zero.
	l.wg.Add(1)
	l.mu.Unlock()
	select {
	case l.idle <- fn:
	default:
		// Added before fn can finish, so before Drain's wait for requests
		// ends and it starts waiting for workers.
		l.workers.Add(1)
		l.live.Add(1)
		go l.worker(fn)
	}
	return true
}

// worker runs fn, then whatever Go hands it until it has been idle for
// workerIdle or the limiter drains. The slot and wg count requests, not
// workers.
func (l *Limiter) worker(fn func()) {
	defer func() {
		l.live.Add(-1)
		l.workers.Done()
	}()
	timer := time.NewTimer(workerIdle)
	defer timer.Stop()
	for {
		l.run(fn)
		timer.Reset(workerIdle)
		select {
		case fn = <-l.idle:
		case <-timer.C:
			return
		case <-l.quit:
			return
		}
	}
}

func (l *Limiter) run(fn func()) {
	defer func() { <-l.sem; l.wg.Done() }()
	fn()
}

// Drain refuses new work and blocks until every started request has
// finished and its goroutine exited, or ctx ends. It may be called more
// than once.
func (l *Limiter) Drain(ctx context.Context) error {
	l.mu.Lock()
	if !l.closing {
		l.closing = true
		close(l.quit)
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		// No request is left, so no worker can be started any more.
		l.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Workers reports how many goroutines the limiter has, busy or idle.
func (l *Limiter) Workers() int { return int(l.live.Load()) }

// Draining reports whether Drain has begun.
func (l *Limiter) Draining() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// Server is what the endpoints of one service share.
type Server struct {
	// Conn publishes replies. They leave from a limiter goroutine after the
	// handler returned; a Service's statistics count them when they are sent
	// (see Service).
	Conn    *nats.Conn
	Limiter *Limiter
	// Timeout bounds one request.
	Timeout time.Duration
	Log     *zap.Logger
	// Observe, when set, is called once per request just before its reply is
	// sent, with the endpoint name and the error code ("" on success).
	Observe func(endpoint string, start time.Time, code string)
	// Middleware, when set, wraps every endpoint's handler (by endpoint
	// name): fault injection in tests (internal/faults), or tracing.
	// Handlers answer through the micro.Request they are given, so a
	// wrapper may hold, repeat or silence a request.
	Middleware Middleware
}

// Middleware wraps the handler of the named endpoint.
type Middleware func(endpoint string, next micro.Handler) micro.Handler

// HandlerFunc serves one decoded request. subject is the subject the request
// arrived on (the KV endpoints read the tenant from it). A nil response with
// a nil error is a bug and answered INTERNAL.
type HandlerFunc[Req, Resp proto.Message] func(ctx context.Context, subject string, req Req) (Resp, error)

// Endpoint adapts fn to a micro handler: it decodes the body (protobuf, or
// JSON when asked), runs fn under the limiter with a deadline, and answers
// in the request's encoding. Failures are answered with the typed error in
// the body's `error` field and in the Nats-Service-Error(-Code) headers.
func Endpoint[Req, Resp proto.Message](s *Server, name string, newReq func() Req, newResp func() Resp,
	fn HandlerFunc[Req, Resp]) micro.Handler {
	var h micro.Handler = micro.HandlerFunc(func(r micro.Request) {
		start := time.Now()
		enc := requestEncoding(r)
		ok := s.Limiter.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
			defer cancel()
			req := newReq()
			if err := Unmarshal(enc, r.Data(), req); err != nil {
				s.reply(name, start, r, enc, newResp(), err)
				return
			}
			resp, err := fn(ctx, r.Subject(), req)
			if err == nil && isNil(resp) {
				err = status.Errorf(pb.ErrorCode_INTERNAL, "handler for %s returned no response", r.Subject())
			}
			if isNil(resp) {
				resp = newResp()
			}
			s.reply(name, start, r, enc, resp, err)
		})
		if !ok {
			msg := "too many requests in flight on this server; retry with backoff"
			if s.Limiter.Draining() {
				msg = "this server is shutting down; retry elsewhere"
			}
			s.reply(name, start, r, enc, newResp(), status.Errorf(pb.ErrorCode_UNAVAILABLE, "%s", msg))
		}
	})
	if s.Middleware != nil {
		h = s.Middleware(name, h)
	}
	return h
}

func requestEncoding(r micro.Request) Encoding {
	if h := r.Headers(); h != nil {
		return EncodingOf(nats.Header(h))
	}
	return Proto
}

func isNil(m proto.Message) bool { return m == nil || !m.ProtoReflect().IsValid() }

func (s *Server) reply(name string, start time.Time, r micro.Request, enc Encoding, resp proto.Message, err error) {
	msg := &nats.Msg{Subject: r.Reply(), Header: nats.Header{}}
	if enc == JSON {
		msg.Header.Set(HeaderContentType, ContentTypeJSON)
	}
	code := ""
	if err != nil {
		pe := status.ToProto(err)
		code = pe.GetCode().String()
		if serr := setError(resp, pe); serr != nil {
			s.Log.Error("cannot set error on response", zap.Error(serr))
		}
		// Header values must be one line.
		msg.Header.Set(micro.ErrorHeader, strings.ReplaceAll(pe.GetMessage(), "\n", " "))
		msg.Header.Set(micro.ErrorCodeHeader, code)
		if ms := pe.GetRetryAfterMs(); ms > 0 {
			msg.Header.Set(HeaderRetryAfterMs, strconv.FormatUint(uint64(ms), 10))
		}
	}
	body, merr := Marshal(enc, resp)
	if merr == nil && err == nil && len(body) > int(s.Conn.MaxPayload())-replyHeadroom {
		// Too big for one message: the publish would fail and the
		// requester would wait for its deadline with no word. Say why.
		s.Log.Warn("reply over the NATS max_payload; answered with an error instead",
			zap.String("subject", r.Subject()), zap.Int("bytes", len(body)), zap.Int64("max_payload", s.Conn.MaxPayload()))
		proto.Reset(resp)
		s.reply(name, start, r, enc, resp, status.Errorf(pb.ErrorCode_VALUE_TOO_LARGE,
			"the answer is %d bytes, over this NATS server's max_payload of %d: read it as protobuf rather than JSON, "+
				"or resolve the key's siblings (read it, then write with its context)", len(body), s.Conn.MaxPayload()))
		return
	}
	if merr != nil {
		s.Log.Error("encode response", zap.String("subject", r.Subject()), zap.Error(merr))
		code = pb.ErrorCode_INTERNAL.String()
		msg.Header.Set(micro.ErrorHeader, "cannot encode response")
		msg.Header.Set(micro.ErrorCodeHeader, code)
		body = nil
	}
	msg.Data = body
	// Observed before the reply leaves, so whoever got the reply also sees
	// it counted.
	if s.Observe != nil {
		s.Observe(name, start, code)
	}
	if req, ok := r.(*request); ok {
		errText := ""
		if code != "" {
			errText = code + ": " + msg.Header.Get(micro.ErrorHeader)
		}
		req.finish(errText)
	}
	if msg.Subject == "" {
		s.Log.Debug("request without reply subject", zap.String("subject", r.Subject()))
	} else if perr := r.Respond(msg.Data, micro.WithHeaders(micro.Headers(msg.Header))); perr != nil {
		s.Log.Debug("reply failed", zap.String("subject", r.Subject()), zap.Error(perr))
	}
}
