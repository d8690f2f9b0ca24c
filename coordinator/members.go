package coordinator

import (
	"context"
	"regexp"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Storage nodes write nothing to the control plane themselves: they ask the
// coordinators on <prefix>.v1.member.<node>.<op> (bus.Subjects.Member), and
// a coordinator checks the request against its fold of the ring log before
// it appends. The node is the subject's token, which NATS permissions bind
// to the node's own credentials (deploy/nats), so a node speaks only for
// itself: it cannot register or report for another node, and cannot
// append a change, a tenant or anything else to the ring log. Every request
// names the asking process's incarnation, so a process that lost its disk
// (or an old one still running) cannot speak for the current one.

// maxMemberAttempts bounds the appends one request loses to other writers.
const maxMemberAttempts = 10

// migrationIDRule is what a migration id may hold: it becomes a subject token
// of the progress stream (<prefix>.v1.events.migrations.<id>.<node>).
var migrationIDRule = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// memberEndpoints serves the membership requests, one op each, on every
// node's member subject.
func (s *Service) memberEndpoints(srv *bus.Server, svc *bus.Service) *bus.Group {
	sub := s.cfg.Subjects
	g := &bus.Group{Server: srv, Service: svc, Prefix: "member", Subject: func(op string) string { return sub.Member("*", op) }}
	bus.Handle(g, bus.OpRegister, s.registerNode)
	bus.Handle(g, bus.OpTransferDone, s.transferDone)
	bus.Handle(g, bus.OpRefilled, s.refilled)
	bus.Handle(g, bus.OpProgress, s.nodeProgress)
	return g
}

// member reads the asking node from the subject and checks the incarnation
// it names.
func (s *Service) member(subject, incarnation string) (string, error) {
	id, ok := s.cfg.Subjects.MemberOf(subject)
	if !ok {
		return "", status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "%q is not a member subject", subject)
	}
	if err := keyspace.ValidateTenantID(id); err != nil {
		return "", status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad node id in %q", subject)
	}
	// Incarnations are hex ids (storagenode/engine); the tenant id
	// rule bounds their length and keeps them printable.
	if err := keyspace.ValidateTenantID(incarnation); err != nil {
		return "", status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "node %s: bad incarnation", id)
	}
	return id, nil
}

// current checks that the log knows node id under incarnation.
func current(nodes map[string]membership.Node, id, incarnation string) error {
	n, ok := nodes[id]
	switch {
	case !ok:
		return status.Errorf(pb.ErrorCode_NODE_NOT_FOUND, "node %s has not registered", id)
	case n.Incarnation != incarnation:
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"node %s runs incarnation %s in the ring log, not %s: a process of another incarnation may not speak for it", id, n.Incarnation, incarnation)
	}
	return nil
}

// registerNode appends NodeRegistered for the asking node unless the log
// already knows its incarnation. A new incarnation of a member makes it
// refilling (it lost its data): a node can do that to itself only.
func (s *Service) registerNode(ctx context.Context, subject string, req *pb.RegisterNodeRequest) (*pb.MemberResponse, error) {
	id, err := s.member(subject, req.GetIncarnation())
	if err != nil {
		return nil, err
	}
	return s.appendFor(ctx, "register node "+id, func(st *membership.State) (*pb.RingEvent, error) {
		if n, ok := st.Nodes[id]; ok && n.Incarnation == req.GetIncarnation() {
			return nil, nil
		}
		return &pb.RingEvent{Event: &pb.RingEvent_Registered{
			Registered: &pb.NodeRegistered{NodeId: id, Incarnation: req.GetIncarnation()},
		}}, nil
	}, func(seq uint64) {
		s.log.Info("storage node registered", zap.String("node", id), zap.String("incarnation", req.GetIncarnation()),
			zap.Uint64("seq", seq))
	})
}

// appendFor appends the event decide makes of the current fold, deciding
// again after each append lost to another writer (at most
// maxMemberAttempts times). decide answers nil when the log already holds
// what is asked (the answer is then the fold's sequence); appended is
// called with the event's sequence.
func (s *Service) appendFor(ctx context.Context, what string, decide func(*membership.State) (*pb.RingEvent, error),
	appended func(seq uint64)) (*pb.MemberResponse, error) {
	for attempt := 0; ; attempt++ {
		st := s.cfg.Membership.State()
		ev, err := decide(st)
		if err != nil {
			return nil, err
		}
		if ev == nil {
			return &pb.MemberResponse{Seq: st.Seq}, nil
		}
		seq, err := s.cfg.Membership.Append(ctx, st.Seq, ev)
		if err == nil {
			appended(seq)
			// Answered once this coordinator's fold shows it too.
			if err := s.cfg.Membership.WaitFor(ctx, seq); err != nil {
				return nil, err
			}
			return &pb.MemberResponse{Seq: seq}, nil
		}
		if !status.Is(err, pb.ErrorCode_VERSION_CONFLICT) || attempt >= maxMemberAttempts {
			return nil, status.Wrap(status.CodeOf(err), err, "%s", what)
		}
		if err := s.cfg.Membership.WaitFor(ctx, st.Seq+1); err != nil {
			return nil, err
		}
	}
}

// transferDone appends TransferDone for the asking node, conditional on the
// log still being at the sequence the node decided on: the node computed
// its transfer from that fold, and any event since may have moved what it
// gains (exactly as when nodes appended themselves). The coordinator judges
// with its own fold at that same sequence.
func (s *Service) transferDone(ctx context.Context, subject string, req *pb.TransferDoneRequest) (*pb.MemberResponse, error) {
	id, err := s.member(subject, req.GetIncarnation())
	if err != nil {
		return nil, err
	}
	// The node may have folded further than this coordinator.
	if err := s.cfg.Membership.WaitFor(ctx, req.GetExpectedSeq()); err != nil {
		return nil, err
	}
	st := s.cfg.Membership.State()
	if st.Seq != req.GetExpectedSeq() {
		return nil, status.Errorf(pb.ErrorCode_VERSION_CONFLICT,
			"the ring log moved past sequence %d (now %d); fold and decide again", req.GetExpectedSeq(), st.Seq)
	}
	if err := current(st.Nodes, id, req.GetIncarnation()); err != nil {
		return nil, err
	}
	c := st.Change
	switch {
	case c == nil || c.ID != req.GetMigrationId():
		return nil, status.Errorf(pb.ErrorCode_MIGRATION_NOT_FOUND, "migration %q is not running", req.GetMigrationId())
	case !c.Targets[id]:
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "node %s is no target of migration %s", id, c.ID)
	}
	if _, done := c.Done[id]; done {
		return &pb.MemberResponse{Seq: st.Seq}, nil
	}
	seq, err := s.cfg.Membership.Append(ctx, st.Seq, &pb.RingEvent{Event: &pb.RingEvent_TransferDone{
		TransferDone: &pb.TransferDone{MigrationId: c.ID, NodeId: id, Keys: req.GetKeys()},
	}})
	if err != nil {
		return nil, err
	}
	return &pb.MemberResponse{Seq: seq}, nil
}

// refilled appends RefillDone for the asking node: it is refilling under
// the incarnation it names, and its refill covered the ring as folded at
// basis_seq, which must still be the last fold to have moved data between
// nodes (the fold checks that again; a refill it skips is redone).
func (s *Service) refilled(ctx context.Context, subject string, req *pb.RefilledRequest) (*pb.MemberResponse, error) {
	id, err := s.member(subject, req.GetIncarnation())
	if err != nil {
		return nil, err
	}
	// The node may have folded further than this coordinator.
	if err := s.cfg.Membership.WaitFor(ctx, req.GetBasisSeq()); err != nil {
		return nil, err
	}
	return s.appendFor(ctx, "record the refill of node "+id, func(st *membership.State) (*pb.RingEvent, error) {
		if err := current(st.Nodes, id, req.GetIncarnation()); err != nil {
			return nil, err
		}
		switch {
		case !st.Nodes[id].Refilling:
			return nil, nil
		case req.GetBasisSeq() < st.HoldersSeq:
			return nil, status.Errorf(pb.ErrorCode_VERSION_CONFLICT,
				"node %s refilled the ring as of sequence %d, but data moved between nodes at %d: refill again", id, req.GetBasisSeq(), st.HoldersSeq)
		}
		return &pb.RingEvent{Event: &pb.RingEvent_RefillDone{
			RefillDone: &pb.RefillDone{NodeId: id, Incarnation: req.GetIncarnation(), BasisSeq: req.GetBasisSeq(), Keys: req.GetKeys()},
		}}, nil
	}, func(seq uint64) {
		s.log.Info("storage node refilled", zap.String("node", id), zap.Uint64("keys", req.GetKeys()), zap.Uint64("seq", seq))
	})
}

// nodeProgress records the asking node's progress in a migration (or any
// other long task a node reports by migration id). It is written under the
// node's own id only, so a node can misreport nothing but itself.
func (s *Service) nodeProgress(ctx context.Context, subject string, req *pb.ProgressRequest) (*pb.MemberResponse, error) {
	id, err := s.member(subject, req.GetIncarnation())
	if err != nil {
		return nil, err
	}
	p := req.GetProgress()
	switch {
	case p == nil:
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "progress request without progress")
	case p.GetNodeId() != "" && p.GetNodeId() != id:
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "node %s cannot report progress of node %s", id, p.GetNodeId())
	case !migrationIDRule.MatchString(p.GetMigrationId()):
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "bad migration id %q (want %s)", p.GetMigrationId(), migrationIDRule)
	}
	if err := current(s.cfg.Membership.State().Nodes, id, req.GetIncarnation()); err != nil {
		return nil, err
	}
	p = proto.Clone(p).(*pb.MigrationProgress)
	p.NodeId = id
	if err := s.cfg.Membership.PublishProgress(ctx, p); err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "record progress of node %s", id)
	}
	return &pb.MemberResponse{}, nil
}
