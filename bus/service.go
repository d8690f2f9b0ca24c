package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"maps"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Service is a NATS micro service: it speaks the protocol of nats.go's micro
// package (PING, INFO and STATS on $SRV.*, error headers), so `nats micro
// ls|info|stats|ping` work against it, but it is not built on micro.Service,
// for two reasons.
//
// Statistics. micro counts a request, its processing time and its error
// when the handler returns. Endpoint handlers return at once and answer
// later from a Limiter goroutine (a handler that blocked would serialise its
// endpoint), so micro saw every request as taking microseconds and none as
// failing. Here a request is counted when its reply is sent, with the time
// from its arrival and the error it carried.
//
// Shutdown. micro's Stop only starts draining and returns; Stop here waits,
// bounded by its context, until every request the server delivered before
// the unsubscribe has been handed to its handler, so closing the connection
// afterwards loses none.
type Service struct {
	nc      *nats.Conn
	cfg     micro.Config
	id      string
	started time.Time
	queue   string

	mu        sync.Mutex
	endpoints []*endpoint
	verbs     []*nats.Subscription
	stopped   bool
}

type endpoint struct {
	name, subject string
	sub           *nats.Subscription
	stats         micro.EndpointStats // guarded by Service.mu
}

var serviceName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// AddService registers a service on nc. Of cfg it uses Name, Version,
// Description, Metadata, QueueGroup (default micro.DefaultQueueGroup) and
// ErrorHandler (called with a nil Service for asynchronous errors, such as
// a slow consumer, on the service's subscriptions).
func AddService(nc *nats.Conn, cfg micro.Config) (*Service, error) {
	if !serviceName.MatchString(cfg.Name) || cfg.Version == "" {
		return nil, errors.Newf("micro service %q: a name of letters, digits, '-' and '_' and a version are required", cfg.Name)
	}
	s := &Service{nc: nc, cfg: cfg, id: newServiceID(), started: time.Now().UTC(), queue: cfg.QueueGroup}
	if s.queue == "" {
		s.queue = micro.DefaultQueueGroup
	}
	s.cfg.Metadata = maps.Clone(cfg.Metadata)
	if s.cfg.Metadata == nil {
		s.cfg.Metadata = map[string]string{}
	}
	if cfg.ErrorHandler != nil {
		s.chainErrorHandler()
	}
	for verb, body := range map[micro.Verb]func() any{
		micro.PingVerb:  func() any { return micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType} },
		micro.InfoVerb:  func() any { return s.Info() },
		micro.StatsVerb: func() any { return s.Stats() },
	} {
		for _, scope := range [][2]string{{"", ""}, {cfg.Name, ""}, {cfg.Name, s.id}} {
			subject, err := micro.ControlSubject(verb, scope[0], scope[1])
			if err == nil {
				err = s.addVerb(subject, body)
			}
			if err != nil {
				return nil, errors.CombineErrors(errors.Wrapf(err, "micro service %s: %s", cfg.Name, verb), s.Stop(context.Background()))
			}
		}
	}
	return s, nil
}

// newServiceID names one instance of a service, as micro's ids do.
func newServiceID() string {
	var b [11]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Service) addVerb(subject string, body func() any) error {
	sub, err := s.nc.Subscribe(subject, func(m *nats.Msg) {
		data, err := json.Marshal(body())
		if err == nil {
			_ = m.Respond(data)
		}
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.verbs = append(s.verbs, sub)
	s.mu.Unlock()
	return nil
}

// chainErrorHandler reports asynchronous errors on the service's own
// subscriptions to cfg.ErrorHandler and passes every error on to the handler
// the connection had before.
func (s *Service) chainErrorHandler() {
	prev := s.nc.ErrorHandler()
	s.nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if ep := s.owner(sub); ep != nil {
			s.mu.Lock()
			ep.stats.NumErrors++
			ep.stats.LastError = err.Error()
			s.mu.Unlock()
			s.cfg.ErrorHandler(nil, &micro.NATSError{Subject: sub.Subject, Description: err.Error()})
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
}

func (s *Service) owner(sub *nats.Subscription) *endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.endpoints {
		if sub != nil && ep.sub == sub {
			return ep
		}
	}
	return nil
}

// AddEndpoint serves subject with h in the service's queue group. The
// request h gets is counted in the statistics when it is answered: through
// its Respond or Error, or by a bus.Endpoint handler's reply.
func (s *Service) AddEndpoint(name, subject string, h micro.Handler) error {
	ep := &endpoint{name: name, subject: subject}
	ep.stats = micro.EndpointStats{Name: name, Subject: subject, QueueGroup: s.queue}
	sub, err := s.nc.QueueSubscribe(subject, s.queue, func(m *nats.Msg) {
		h.Handle(&request{msg: m, svc: s, ep: ep, start: time.Now()})
	})
	if err != nil {
		return errors.Wrapf(err, "add endpoint %s on %s", name, subject)
	}
	s.mu.Lock()
	ep.sub = sub
	s.endpoints = append(s.endpoints, ep)
	s.mu.Unlock()
	return nil
}

// record counts one answered request of ep.
func (s *Service) record(ep *endpoint, took time.Duration, errText string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &ep.stats
	st.NumRequests++
	st.ProcessingTime += took
	st.AverageProcessingTime = st.ProcessingTime / time.Duration(st.NumRequests)
	if errText != "" {
		st.NumErrors++
		st.LastError = errText
	}
}

func (s *Service) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: s.cfg.Name, ID: s.id, Version: s.cfg.Version, Metadata: maps.Clone(s.cfg.Metadata)}
}

// Info is what `nats micro info` shows.
func (s *Service) Info() micro.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := micro.Info{ServiceIdentity: s.identity(), Type: micro.InfoResponseType, Description: s.cfg.Description,
		Endpoints: make([]micro.EndpointInfo, 0, len(s.endpoints))}
	for _, ep := range s.endpoints {
		info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: ep.name, Subject: ep.subject, QueueGroup: s.queue})
	}
	return info
}

// Stats is what `nats micro stats` shows.
func (s *Service) Stats() micro.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := micro.Stats{ServiceIdentity: s.identity(), Type: micro.StatsResponseType, Started: s.started,
		Endpoints: make([]*micro.EndpointStats, 0, len(s.endpoints))}
	for _, ep := range s.endpoints {
		c := ep.stats
		st.Endpoints = append(st.Endpoints, &c)
	}
	return st
}

// Stop stops intake and waits, bounded by ctx, until every request the
// server delivered before the unsubscribe has been handed to its handler.
// Handlers may still be running when it returns (see Limiter.Drain). A ctx
// without deadline gets DefaultTimeout. It may be called more than once.
func (s *Service) Stop(ctx context.Context) error {
	ctx, cancel := WithDefaultTimeout(ctx)
	defer cancel()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	verbs := s.verbs
	subs := make([]*nats.Subscription, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		subs = append(subs, ep.sub)
	}
	s.mu.Unlock()
	if s.nc.IsClosed() {
		return nil
	}
	for _, sub := range verbs {
		_ = sub.Unsubscribe()
	}
	for _, sub := range subs {
		if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			return errors.Wrapf(err, "drain %s", sub.Subject)
		}
	}
	// After the flush the server has processed the unsubscribes: nothing new
	// arrives, and what it sent before sits in the subscriptions' queues
	// until their callbacks took it, which ends the drain.
	if err := s.nc.FlushWithContext(ctx); err != nil {
		return errors.Wrap(err, "flush unsubscribes")
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for _, sub := range subs {
		for sub.IsValid() && !s.nc.IsClosed() {
			select {
			case <-ctx.Done():
				return errors.Wrap(ctx.Err(), "waiting for subscriptions to drain")
			case <-tick.C:
			}
		}
	}
	return nil
}

// request is one request to an endpoint of a Service. It is answered once:
// by Respond, Error, or a bus.Endpoint reply, which also records it.
type request struct {
	msg      *nats.Msg
	svc      *Service
	ep       *endpoint
	start    time.Time
	answered atomic.Bool
}

var _ micro.Request = (*request)(nil)

// finish records the request as answered, with errText ("CODE: message")
// when the answer is an error; only the first call counts.
func (r *request) finish(errText string) {
	if r.answered.CompareAndSwap(false, true) {
		r.svc.record(r.ep, time.Since(r.start), errText)
	}
}

func (r *request) Respond(data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data}
	for _, o := range opts {
		o(m)
	}
	r.finish("")
	return r.msg.RespondMsg(m)
}

func (r *request) RespondJSON(v any, opts ...micro.RespondOpt) error {
	data, err := json.Marshal(v)
	if err != nil {
		return errors.Wrap(err, "encode the response")
	}
	return r.Respond(data, opts...)
}

func (r *request) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Data: data, Header: nats.Header{}}
	for _, o := range opts {
		o(m)
	}
	m.Header.Set(micro.ErrorHeader, description)
	m.Header.Set(micro.ErrorCodeHeader, code)
	r.finish(code + ": " + description)
	return r.msg.RespondMsg(m)
}

func (r *request) Data() []byte { return r.msg.Data }

func (r *request) Headers() micro.Headers { return micro.Headers(r.msg.Header) }

func (r *request) Subject() string { return r.msg.Subject }

func (r *request) Reply() string { return r.msg.Reply }
