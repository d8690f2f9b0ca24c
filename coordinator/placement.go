package coordinator

import (
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

// joint is the quorum a write must meet: W in the current set and, during
// a change, W in the next one too.
func (p placement) joint() quorum.Joint { return quorum.Joint{Cur: p.cur, Next: p.next} }
