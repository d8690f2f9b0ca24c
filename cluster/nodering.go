package cluster

import (
	"context"
	"sync"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/jetstream/ringlog"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode"
)

// NodeRing is a storage node's view of the ring log: it follows the log
// but never writes it, and has what the node must record appended by the
// coordinators, asking on the node's own member subjects
// (bus.Subjects.Member, served in coordinator/members.go). A node's NATS
// user may read the ring log and send those requests, nothing more of the
// control plane (deploy/nats).
type NodeRing struct {
	*ringlog.Follower
	nc       *nats.Conn
	subjects bus.Subjects

	mu sync.Mutex
	// incarnation is the one this process registered last: progress
	// reports name it.
	incarnation string
}

var _ storagenode.Membership = (*NodeRing)(nil)

// OpenNodeRing follows the ring log on nc until Close, waiting (until ctx
// ends) for a coordinator to have created it.
func OpenNodeRing(ctx context.Context, nc *nats.Conn, cfg RingConfig) (*NodeRing, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, errors.Wrap(err, "open JetStream")
	}
	log, err := ringlog.Attach(ctx, js, ringlog.Config{
		Subjects: cfg.Subjects, Replicas: cfg.StreamReplicas, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	f, err := log.Follow(ctx)
	if err != nil {
		return nil, err
	}
	return &NodeRing{Follower: f, nc: nc, subjects: cfg.Subjects}, nil
}

// Close stops following.
func (r *NodeRing) Close() { r.Follower.Stop() }

// ask sends one member request of node id and returns the coordinator's
// answer.
func (r *NodeRing) ask(ctx context.Context, id, op string, req proto.Message) (*pb.MemberResponse, error) {
	resp := new(pb.MemberResponse)
	if err := bus.Request(ctx, r.nc, r.subjects.Member(id, op), req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Register asks a coordinator to record (id, incarnation), then waits until
// this fold shows it.
func (r *NodeRing) Register(ctx context.Context, id, incarnation string) error {
	r.mu.Lock()
	r.incarnation = incarnation
	r.mu.Unlock()
	resp, err := r.ask(ctx, id, bus.OpRegister, &pb.RegisterNodeRequest{Incarnation: incarnation})
	if err != nil {
		return err
	}
	return r.WaitFor(ctx, resp.GetSeq())
}

// ReportTransferDone asks a coordinator to append done if the log is still
// at expectedSeq.
func (r *NodeRing) ReportTransferDone(ctx context.Context, expectedSeq uint64, incarnation string, done *pb.TransferDone) (uint64, error) {
	resp, err := r.ask(ctx, done.GetNodeId(), bus.OpTransferDone, &pb.TransferDoneRequest{
		Incarnation: incarnation, MigrationId: done.GetMigrationId(), Keys: done.GetKeys(), ExpectedSeq: expectedSeq,
	})
	if err != nil {
		return 0, err
	}
	return resp.GetSeq(), nil
}

// ReportRefilled asks a coordinator to record that node id (incarnation)
// is refilled, as of the ring at basisSeq, and returns the event's sequence.
func (r *NodeRing) ReportRefilled(ctx context.Context, id, incarnation string, basisSeq, keys uint64) (uint64, error) {
	resp, err := r.ask(ctx, id, bus.OpRefilled, &pb.RefilledRequest{Incarnation: incarnation, BasisSeq: basisSeq, Keys: keys})
	if err != nil {
		return 0, err
	}
	return resp.GetSeq(), nil
}

// PublishProgress sends a coordinator the node's progress report, under the
// incarnation this process registered.
func (r *NodeRing) PublishProgress(ctx context.Context, p *pb.MigrationProgress) error {
	r.mu.Lock()
	inc := r.incarnation
	r.mu.Unlock()
	_, err := r.ask(ctx, p.GetNodeId(), bus.OpProgress, &pb.ProgressRequest{Incarnation: inc, Progress: p})
	return err
}
