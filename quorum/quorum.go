// Package quorum is the pure arithmetic of consistency levels: how many
// replies a level needs, a tally that says when a fan-out is won or lost,
// and the joint quorum of a membership change's two replica sets (Joint).
package quorum

import (
	"strings"

	"github.com/cockroachdb/errors"
)

// Level is a consistency level.
type Level int

const (
	// One needs a single replica.
	One Level = iota + 1
	// Quorum needs a majority: n/2 + 1.
	Quorum
	// All needs every replica.
	All
)

// ParseLevel reads "one", "quorum" or "all" in any case.
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "one":
		return One, nil
	case "quorum":
		return Quorum, nil
	case "all":
		return All, nil
	}
	return 0, errors.Newf("unknown consistency level %q: use one, quorum or all", s)
}

func (l Level) String() string {
	switch l {
	case One:
		return "one"
	case Quorum:
		return "quorum"
	case All:
		return "all"
	}
	return "invalid"
}

// Required is how many of n replicas must answer for level l.
func Required(l Level, n int) int {
	switch {
	case n <= 0:
		return 0
	case l == One:
		return 1
	case l == All:
		return n
	}
	return n/2 + 1
}

// Outcome is the state of a tally.
type Outcome int

const (
	// Pending means not yet decided.
	Pending Outcome = iota
	// Won means enough acks arrived.
	Won
	// Lost means too many replicas failed for the need to be met.
	Lost
)

func (o Outcome) String() string {
	return [...]string{"pending", "won", "lost"}[o]
}

// Tally counts replies of a fan-out to total replicas that needs need acks.
// It is not safe for concurrent use; the gatherer owns it.
type Tally struct {
	need, total, acks, fails int
}

// NewTally starts a tally.
func NewTally(need, total int) *Tally { return &Tally{need: need, total: total} }

// Ack records a success and returns the outcome so far.
func (t *Tally) Ack() Outcome { t.acks++; return t.Outcome() }

// Fail records a failure and returns the outcome so far.
func (t *Tally) Fail() Outcome { t.fails++; return t.Outcome() }

// Acks is the number of successes recorded.
func (t *Tally) Acks() int { return t.acks }

// Outcome reports Won once need acks are in, Lost once the remaining
// replicas cannot make up the difference, else Pending.
func (t *Tally) Outcome() Outcome {
	switch {
	case t.acks >= t.need:
		return Won
	case t.total-t.fails < t.need:
		return Lost
	}
	return Pending
}
