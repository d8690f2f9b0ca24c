package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"

	"github.com/pairdb/pairdb/bus"
)

// Coordinators tell each other they are alive, so each knows its share of
// a tenant's rate limit (ratelimit.go): every presenceInterval each
// publishes its instance id on events.coordinators, and counts the ids it
// heard within presenceExpiry, itself included. A coordinator that stops
// cleanly says so ("bye"), and the others stop counting it at once; one that
// dies is dropped after presenceExpiry.
const (
	presenceInterval = time.Second
	presenceExpiry   = 3 * presenceInterval
	presenceBye      = "bye "
)

type presence struct {
	nc      *nats.Conn
	subject string
	id      string
	sub     *nats.Subscription
	stop    chan struct{}
	done    chan struct{}

	mu   sync.Mutex
	seen map[string]time.Time
}

func startPresence(nc *nats.Conn, subjects bus.Subjects) (*presence, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	p := &presence{nc: nc, subject: subjects.Events(bus.EventsCoordinators), id: hex.EncodeToString(b[:]),
		stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]time.Time{}}
	sub, err := nc.Subscribe(p.subject, p.heard)
	if err != nil {
		return nil, errors.Wrap(err, "subscribe to coordinator presence")
	}
	p.sub = sub
	go p.announce()
	return p, nil
}

func (p *presence) heard(m *nats.Msg) {
	id := string(m.Data)
	p.mu.Lock()
	defer p.mu.Unlock()
	if gone, ok := strings.CutPrefix(id, presenceBye); ok {
		delete(p.seen, gone)
		return
	}
	if len(id) <= 64 && len(p.seen) < 4096 { // bounded whatever is published
		p.seen[id] = time.Now()
	}
}

func (p *presence) announce() {
	defer close(p.done)
	t := time.NewTicker(presenceInterval)
	defer t.Stop()
	for {
		_ = p.nc.Publish(p.subject, []byte(p.id))
		select {
		case <-t.C:
		case <-p.stop:
			_ = p.nc.Publish(p.subject, []byte(presenceBye+p.id))
			return
		}
	}
}

// count is the live coordinators: those heard within presenceExpiry, and
// this one.
func (p *presence) count() int {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 1
	for id, at := range p.seen {
		switch {
		case now.Sub(at) > presenceExpiry:
			delete(p.seen, id)
		case id != p.id:
			n++
		}
	}
	return n
}

func (p *presence) close() {
	close(p.stop)
	<-p.done
	_ = p.sub.Unsubscribe()
}

// LiveCoordinators is how many coordinators this one counts as alive,
// itself included: the divisor of its share of each tenant's rate limits.
func (s *Service) LiveCoordinators() int { return s.presence.count() }
