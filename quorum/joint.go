package quorum

import (
	"fmt"
	"slices"
)

// Joint is the joint quorum of a membership change (DESIGN.md §4): while
// the ring moves, a key has a current replica set and a next one, and a
// write is acknowledged only when each set on its own holds the level's
// share of its replicas. Requiring both is what keeps a write readable on
// either side of the cutover. Outside a change Next equals Cur (or is
// empty), and the rule is the single-set one.
//
// A node in both sets counts in both: its one ack serves each set, its
// one failure costs each set.
type Joint struct {
	Cur, Next []string
}

// Changing reports whether the two sets differ (an empty Next is no
// change).
func (j Joint) Changing() bool {
	return len(j.Next) > 0 && !slices.Equal(j.Cur, j.Next)
}

// Outcome decides a write at level l from the nodes that acked and those
// that failed: Won when both sets have their required acks, Lost when
// either can no longer reach them, else Pending. A node in acked counts as
// an ack even if it is also in failed.
func (j Joint) Outcome(l Level, acked, failed map[string]bool) Outcome {
	cur := setOutcome(j.Cur, l, acked, failed)
	if !j.Changing() {
		return cur
	}
	next := setOutcome(j.Next, l, acked, failed)
	switch {
	case cur == Lost || next == Lost:
		return Lost
	case cur == Won && next == Won:
		return Won
	}
	return Pending
}

// setOutcome is the tally of one replica set.
func setOutcome(set []string, l Level, acked, failed map[string]bool) Outcome {
	t := NewTally(Required(l, len(set)), len(set))
	for _, n := range set {
		switch {
		case acked[n]:
			t.Ack()
		case failed[n]:
			t.Fail()
		}
	}
	return t.Outcome()
}

// Need says what level l requires of the sets, for error messages: "2 of
// 3", and during a change "2 of 3 in the current and 2 of 3 in the next
// replica set".
func (j Joint) Need(l Level) string {
	s := fmt.Sprintf("%d of %d", Required(l, len(j.Cur)), len(j.Cur))
	if j.Changing() {
		s += fmt.Sprintf(" in the current and %d of %d in the next replica set", Required(l, len(j.Next)), len(j.Next))
	}
	return s
}
