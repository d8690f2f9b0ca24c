package bus

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Service is a micro service whose Stop waits until its subscriptions have
// drained, so a request the server already delivered is answered, not lost.
//
// micro's own Stop only starts draining (it sends the unsubscribes and
// returns); closing the connection right after drops the requests still on
// the wire or in the client's buffers, and their senders wait out their
// deadline. The Service counts the subscriptions micro creates and waits for
// the connection to release them.
type Service struct {
	micro.Service
	nc   *nats.Conn
	base int
	subs int
}

// AddService registers a micro service on nc.
func AddService(nc *nats.Conn, cfg micro.Config) (*Service, error) {
	base := nc.NumSubscriptions()
	svc, err := micro.AddService(nc, cfg)
	if err != nil {
		return nil, errors.Wrapf(err, "register micro service %s", cfg.Name)
	}
	return &Service{Service: svc, nc: nc, base: base, subs: nc.NumSubscriptions() - base}, nil
}

// AddEndpoint adds an endpoint and counts its subscription. Endpoints must
// be added before the connection makes other subscriptions.
func (s *Service) AddEndpoint(name string, h micro.Handler, opts ...micro.EndpointOpt) error {
	if err := s.Service.AddEndpoint(name, h, opts...); err != nil {
		return errors.Wrapf(err, "add endpoint %s", name)
	}
	s.subs = s.nc.NumSubscriptions() - s.base
	return nil
}

// Stop stops intake and waits, bounded by ctx, until every request the
// server delivered before the unsubscribe has been handed to its handler.
// Handlers may still be running when it returns (see Limiter.Drain). A ctx
// without deadline gets DefaultTimeout.
func (s *Service) Stop(ctx context.Context) error {
	ctx, cancel := WithDefaultTimeout(ctx)
	defer cancel()
	before := s.nc.NumSubscriptions()
	if err := s.Service.Stop(); err != nil {
		return errors.Wrap(err, "stop micro service")
	}
	if s.nc.IsClosed() {
		return nil
	}
	// After the flush the server has processed the unsubscribes: nothing new
	// arrives, and what it sent before sits in the subscriptions' queues.
	if err := s.nc.FlushWithContext(ctx); err != nil {
		return errors.Wrap(err, "flush unsubscribes")
	}
	target := before - s.subs
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for s.nc.NumSubscriptions() > target && !s.nc.IsClosed() {
		select {
		case <-ctx.Done():
			return errors.Wrap(ctx.Err(), "waiting for subscriptions to drain")
		case <-tick.C:
		}
	}
	return nil
}
