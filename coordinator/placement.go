package coordinator

import (
	"fmt"
	"slices"

	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
)

// maxSends bounds the replica calls of one write: the union of two replica
// sets of at most MaxReplicationFactor nodes, resent under each newer ring.
const maxSends = 2 * tenant.MaxReplicationFactor * (maxEpochRetries + 1)

// placement is where one key lives at one ring epoch: the current replica
// set and the next (during a change; equal otherwise). Writes go to both
// and must meet W in each. Reads need R of the current set's N, from its
// serving members: a replica being refilled (it lost its data) takes
// writes but is never read, and no other node stands in for it.
type placement struct {
	cur, next, all []string
	serving        []string
}

func placeFor(st *membership.State, t *pb.Tenant, hash uint64) (placement, error) {
	rc, rn := st.TenantRF(t.GetTenantId())
	if rc == 0 {
		return placement{}, status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "the ring log has no tenant %q", t.GetTenantId())
	}
	cur, next := st.ReplicaSets(t.GetTenantId(), hash)
	if len(cur) < int(rc) || len(next) < int(rn) {
		return placement{}, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"tenant %q needs %d replicas but the ring has %d storage nodes", t.GetTenantId(), max(rc, rn), st.Current().Size())
	}
	p := placement{cur: cur, next: next, all: slices.Clone(cur)}
	for _, n := range cur {
		if st.Serving(n) {
			p.serving = append(p.serving, n)
		}
	}
	for _, n := range next {
		if !slices.Contains(p.all, n) {
			p.all = append(p.all, n)
		}
	}
	return p, nil
}

func (p placement) changing() bool { return !slices.Equal(p.cur, p.next) }

// outcome decides a write: won when both sets have W acks, lost when either
// can no longer get them.
func (p placement) outcome(l quorum.Level, acked, failed map[string]bool) quorum.Outcome {
	a := setOutcome(p.cur, l, acked, failed)
	if !p.changing() {
		return a
	}
	b := setOutcome(p.next, l, acked, failed)
	switch {
	case a == quorum.Lost || b == quorum.Lost:
		return quorum.Lost
	case a == quorum.Won && b == quorum.Won:
		return quorum.Won
	}
	return quorum.Pending
}

func setOutcome(set []string, l quorum.Level, acked, failed map[string]bool) quorum.Outcome {
	t := quorum.NewTally(quorum.Required(l, len(set)), len(set))
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

// need describes what level l requires, for error messages.
func (p placement) need(l quorum.Level) string {
	s := fmt.Sprintf("%d of %d", quorum.Required(l, len(p.cur)), len(p.cur))
	if p.changing() {
		s += fmt.Sprintf(" in the current and %d of %d in the next replica set", quorum.Required(l, len(p.next)), len(p.next))
	}
	return s
}
