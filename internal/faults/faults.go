// Package faults injects message faults into PairDB's endpoints for tests:
// requests dropped (lost on the wire), delayed (so replies reorder) and
// duplicated, per subject, from a seeded random source so a failing run
// can be replayed.
package faults

import (
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// Rule applies to requests whose subject contains Match ("" matches all).
type Rule struct {
	Match string
	// Drop, Duplicate, LoseReply and DelayP are probabilities in [0, 1].
	// LoseReply handles the request and loses its reply.
	Drop      float64
	Duplicate float64
	LoseReply float64
	DelayP    float64
	// MaxDelay bounds a delay (uniform in (MinDelay, MaxDelay]).
	MaxDelay time.Duration
	MinDelay time.Duration
	// Hold, when set, holds every matching request until the channel
	// closes, as a paused process holds the messages sent to it; Seen (if
	// set) receives each held request's subject, without blocking.
	Hold chan struct{}
	Seen chan<- string
	// Limit > 0 applies the rule to that many matching requests only.
	Limit int
}

// Injector implements bus.Faults. Safe for concurrent use.
type Injector struct {
	mu    sync.Mutex
	rng   *rand.Rand
	rules []Rule
	used  []int   // per rule: matching requests it applied to
	marks []*byte // per rule: nil, or the marker of a rule Add returned a remover for
	stats Stats
}

// Stats counts what was injected.
type Stats struct{ Dropped, Duplicated, RepliesLost, Delayed, Held int }

// New returns an injector with no rules, seeded for reproducibility.
func New(seed uint64) *Injector {
	return &Injector{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Set replaces the rules.
func (i *Injector) Set(rules ...Rule) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.rules = rules
	i.used = make([]int, len(rules))
	i.marks = make([]*byte, len(rules))
}

// Add appends a rule and returns a function that removes it again (rules
// set meanwhile are kept).
func (i *Injector) Add(r Rule) (remove func()) {
	i.mu.Lock()
	defer i.mu.Unlock()
	// A marker of its own finds the rule wherever later Adds and removals
	// moved it.
	mark := new(byte)
	i.rules = append(i.rules, r)
	i.used = append(i.used, 0)
	i.marks = append(i.marks, mark)
	return func() {
		i.mu.Lock()
		defer i.mu.Unlock()
		for n, m := range i.marks {
			if m == mark {
				i.rules = append(i.rules[:n:n], i.rules[n+1:]...)
				i.used = append(i.used[:n:n], i.used[n+1:]...)
				i.marks = append(i.marks[:n:n], i.marks[n+1:]...)
				return
			}
		}
	}
}

// Clear removes every rule: the network heals.
func (i *Injector) Clear() { i.Set() }

// Stats returns what was injected so far.
func (i *Injector) Stats() Stats {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.stats
}

// Fault is what to do to one request: drop it (no reply, not handled, as
// if lost on the wire), delay it, hold it until a channel closes (a paused
// process that resumes), handle it twice (a duplicate delivery; the sender
// sees one reply), or handle it and lose its reply (the sender cannot tell
// whether it took effect).
type Fault struct {
	Drop      bool
	Delay     time.Duration
	Hold      <-chan struct{}
	Duplicate bool
	LoseReply bool
}

// Inject decides the fate of one request.
func (i *Injector) Inject(subject string) Fault {
	i.mu.Lock()
	defer i.mu.Unlock()
	var f Fault
	for n, r := range i.rules {
		if r.Match != "" && !strings.Contains(subject, r.Match) {
			continue
		}
		if r.Limit > 0 {
			if i.used[n] >= r.Limit {
				continue
			}
			i.used[n]++
		}
		if r.Hold != nil {
			i.stats.Held++
			f.Hold = r.Hold
			if r.Seen != nil {
				select {
				case r.Seen <- subject:
				default:
				}
			}
		}
		switch {
		case i.rng.Float64() < r.Drop:
			i.stats.Dropped++
			return Fault{Drop: true}
		case i.rng.Float64() < r.Duplicate:
			i.stats.Duplicated++
			f.Duplicate = true
		case r.LoseReply > 0 && i.rng.Float64() < r.LoseReply: // no draw when unused: seeded runs replay as before
			i.stats.RepliesLost++
			f.LoseReply = true
		}
		if r.MaxDelay > 0 && i.rng.Float64() < r.DelayP {
			i.stats.Delayed++
			f.Delay = r.MinDelay
			if span := r.MaxDelay - r.MinDelay; span > 0 {
				f.Delay += time.Duration(1 + i.rng.Int64N(int64(span)))
			}
		}
	}
	return f
}

// Middleware wraps an endpoint's handler with the injector, for a part's
// config (coordinator.Config.Middleware, storagenode.Config.Middleware):
// the part's own code has no fault branch. A held or delayed request is
// handed to the endpoint only when released, so its deadline starts then,
// as a paused process picks a message up only when it runs again; a
// duplicate is handled first, its answer thrown away, then the real one.
func (i *Injector) Middleware(_ string, next micro.Handler) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		f := i.Inject(r.Subject())
		if f.Drop {
			return
		}
		deliver := func() {
			if f.Duplicate {
				done := make(chan struct{})
				next.Handle(&quiet{Request: r, done: done})
				<-done
			}
			if f.LoseReply {
				next.Handle(&quiet{Request: r})
				return
			}
			next.Handle(r)
		}
		if f.Hold == nil && f.Delay == 0 {
			deliver()
			return
		}
		go func() {
			if f.Hold != nil {
				<-f.Hold
			}
			time.Sleep(f.Delay)
			deliver()
		}()
	})
}

// quiet is a delivery whose answer is lost; done, when set, is closed when
// the handler answers.
type quiet struct {
	micro.Request
	done chan struct{}
	once sync.Once
}

func (q *quiet) answered() {
	if q.done != nil {
		q.once.Do(func() { close(q.done) })
	}
}

func (q *quiet) Respond([]byte, ...micro.RespondOpt) error { q.answered(); return nil }

func (q *quiet) RespondJSON(any, ...micro.RespondOpt) error { q.answered(); return nil }

func (q *quiet) Error(string, string, []byte, ...micro.RespondOpt) error { q.answered(); return nil }
