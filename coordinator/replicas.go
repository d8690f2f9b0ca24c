package coordinator

import (
	"context"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
)

// callNode sends one request to one storage node, bounded by the replica
// timeout (and by ctx). "No responders" marks the node down at once.
func (s *Service) callNode(ctx context.Context, node, op string, req, resp proto.Message) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReplicaTimeout)
	defer cancel()
	err := bus.Request(ctx, s.nc, s.cfg.Subjects.Node(node, op), req, resp)
	if errors.Is(err, nats.ErrNoResponders) {
		s.liveness.markDown(node)
	}
	return err
}

// retryElsewhere reports whether a failed apply may be tried on the next
// replica: transport trouble yes, a verdict about the request itself no.
func retryElsewhere(err error) bool {
	switch status.CodeOf(err) {
	case pb.ErrorCode_INVALID_ARGUMENT, pb.ErrorCode_TOO_MANY_SIBLINGS, pb.ErrorCode_VALUE_TOO_LARGE:
		return false
	}
	return true
}

// policyOf maps the tenant's conflict policy to the wire enum.
func policyOf(t *pb.Tenant) pb.ConflictPolicy {
	if t.GetConflictPolicy() == tenant.PolicyLastWriteWins {
		return pb.ConflictPolicy_LAST_WRITE_WINS
	}
	return pb.ConflictPolicy_SIBLINGS
}
