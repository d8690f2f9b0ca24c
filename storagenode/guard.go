package storagenode

import (
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
	"github.com/pairdb/pairdb/tenant"
)

// The node's second fence. NATS permissions decide who may send to a
// node's subjects; the node still checks every request as if anyone could,
// so that a bug or a leaked credential cannot make it store what no replica
// could have produced, mint from a forged clock, or send messages where the
// sender chooses. A refusal is a typed error, counted per reason
// (pairdb_node_refused_total), and nothing is stored.

// maxDeadlineAhead bounds how far in the future a request's deadline may
// lie, by this node's clock. Coordinators set deadlines a replica timeout
// (seconds) ahead; one further out means the sender's clock runs ahead of
// this node's by more than any configured skew bound, or the deadline is
// made up, and either way it would stop fencing late messages.
const maxDeadlineAhead = time.Minute

// maxForwards bounds the replicas one apply may be passed on to: both
// replica sets of a change at the largest replication factor.
const maxForwards = 2 * tenant.MaxReplicationFactor

// Refusal reasons (the label of pairdb_node_refused_total).
const (
	refusedDeadline = "deadline"
	refusedActor    = "unknown_actor"
	refusedForward  = "forward"
	refusedReplica  = "not_a_replica"
	refusedTenant   = "tenant"
)

// deadlineOf reads a request's deadline: zero for none, unless required.
func (n *Node) deadlineOf(op string, unixMs int64, required bool) (time.Time, error) {
	if unixMs == 0 {
		if required {
			n.met.refused(refusedDeadline)
			return time.Time{}, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "%s needs deadline_unix_ms", op)
		}
		return time.Time{}, nil
	}
	d := time.UnixMilli(unixMs)
	if ahead := time.Until(d); ahead > maxDeadlineAhead {
		n.met.refused(refusedDeadline)
		n.log.Warn("refused a request whose deadline lies too far ahead: the sender's clock is ahead of this node's, or the deadline is forged",
			zap.String("op", op), zap.Duration("ahead", ahead))
		return time.Time{}, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"%s: deadline is %s ahead of node %s's clock (at most %s allowed): check the clocks of the sender and this node",
			op, ahead.Round(time.Millisecond), n.cfg.ID, maxDeadlineAhead)
	}
	return d, nil
}

// knownActors checks that every actor of a clock is a storage-node
// incarnation the ring log has registered (static mode: no check).
func (n *Node) knownActors(v dvv.VV) error {
	if n.mem == nil || len(v) == 0 {
		return nil
	}
	incs := n.mem.State().Incarnations
	for a := range v {
		if _, ok := incs[a]; !ok {
			n.met.refused(refusedActor)
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"clock names actor %q, which is no storage-node incarnation the ring log knows", a)
		}
	}
	return nil
}

// checkApplyTargets checks, under the node's ring, that this node and every
// forward are replicas of the key (among the first MaxReplicationFactor
// nodes of its preference list in the current or the next ring), that no
// forward repeats, and that every reply subject is an inbox.
func (n *Node) checkApplyTargets(req *pb.ApplyRequest) error {
	fs := req.GetForwards()
	if len(fs) > maxForwards {
		n.met.refused(refusedForward)
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "apply names %d forwards; at most %d replicas exist", len(fs), maxForwards)
	}
	seen := make([]string, 0, len(fs))
	for _, f := range fs {
		id := f.GetNodeId()
		switch {
		case keyspace.ValidateTenantID(id) != nil:
			n.met.refused(refusedForward)
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "invalid forward node id %q", id)
		case id == n.cfg.ID || slices.Contains(seen, id):
			n.met.refused(refusedForward)
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "forward to %s repeats a replica", id)
		case !n.replySubject(f.GetReply()):
			n.met.refused(refusedForward)
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"forward to %s answers on %q, which is not an inbox under %q", id, f.GetReply(), n.cfg.ReplyPrefix)
		}
		seen = append(seen, id)
	}
	if n.mem == nil {
		return nil
	}
	st := n.mem.State()
	h := keyspace.Hash(req.GetTenantId(), req.GetKey())
	replicas := st.Current().Preference(h, tenant.MaxReplicationFactor)
	for _, id := range st.Next().Preference(h, tenant.MaxReplicationFactor) {
		if !slices.Contains(replicas, id) {
			replicas = append(replicas, id)
		}
	}
	if !slices.Contains(replicas, n.cfg.ID) {
		n.met.refused(refusedReplica)
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"node %s is no replica of key %q of tenant %q at epoch %d", n.cfg.ID, req.GetKey(), req.GetTenantId(), st.Epoch)
	}
	for _, id := range seen {
		if !slices.Contains(replicas, id) {
			n.met.refused(refusedForward)
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"forward to %s: no replica of key %q of tenant %q at epoch %d", id, req.GetKey(), req.GetTenantId(), st.Epoch)
		}
	}
	return nil
}

// replySubject reports whether s is a literal subject under the inbox
// prefix replies to forwarded writes must use.
func (n *Node) replySubject(s string) bool {
	rest, ok := strings.CutPrefix(s, n.cfg.ReplyPrefix)
	return ok && rest != "" && !strings.ContainsAny(s, "*> \t\r\n") && !strings.Contains(s, "..") && !strings.HasSuffix(s, ".")
}

// mergeBatch is engine.MergeBatch behind the actor check every merge path
// (hints, transfers, anti-entropy) goes through; the engine validates the
// objects themselves.
func (n *Node) mergeBatch(tenant string, items []engine.MergeItem, p dvv.Policy) (int, error) {
	if n.mem != nil {
		if t, ok := n.mem.State().Tenants[tenant]; ok && t.Deleted {
			// A deleted tenant's data is garbage: dropped, and the hint or
			// transfer page that carried it counts as settled.
			n.met.refused(refusedTenant)
			return 0, nil
		}
	}
	for _, it := range items {
		if err := n.knownActors(it.Object.Clock); err != nil {
			return 0, status.Wrap(status.CodeOf(err), err, "key %q of tenant %q", it.Key, tenant)
		}
	}
	return n.eng.MergeBatch(tenant, items, p)
}
