package storagenode

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
	"github.com/pairdb/pairdb/storagenode/heal"
	"github.com/pairdb/pairdb/storagenode/transfer"
)

// The node's background work lives in sub-packages that do not know the
// Node: transfer (range moves, refills, cleanup) and heal (hint replay,
// anti-entropy). This file hands them what they need as the small
// interfaces they declare.

// store is the node's merge path as the workers see it: data that arrives
// without a request of its own goes through the same tenant, policy and
// actor checks as a merge request (tenants.go, guard.go).
type store struct{ n *Node }

func (s store) LocalTenant(tenant string) (uint64, bool, error) { return s.n.localTenant(tenant) }

func (s store) PolicyOf(tenant string, sent pb.ConflictPolicy) pb.ConflictPolicy {
	return s.n.policyOf(tenant, sent)
}

func (s store) MergeBatch(tenant string, items []engine.MergeItem, p dvv.Policy) (int, error) {
	return s.n.mergeBatch(tenant, items, p)
}

// request sends req to endpoint op of node over the node's connection.
func (n *Node) request(ctx context.Context, node, op string, req, resp proto.Message) error {
	return bus.Request(ctx, n.nc, n.cfg.Subjects.Node(node, op), req, resp)
}

// newMover builds the membership driver's data mover.
func (n *Node) newMover() *transfer.Mover {
	return transfer.New(transfer.Config{
		ID:           n.cfg.ID,
		PageSize:     n.cfg.TransferPageSize,
		CleanupGrace: n.cfg.CleanupGrace,
		Engine:       n.eng,
		Store:        store{n},
		Ring:         n.mem,
		Request:      n.request,
		Placement:    &n.placeMu,
		Prepare:      n.prepare,
		Logger:       n.log,
		Metrics:      n.xferMet,
		PageHook:     n.cfg.transferHook,
	})
}

// newAntiEntropy builds the anti-entropy worker (membership mode only).
func (n *Node) newAntiEntropy() *heal.AntiEntropy {
	return heal.NewAntiEntropy(heal.AntiEntropyConfig{
		ID:        n.cfg.ID,
		Interval:  n.cfg.AntiEntropyInterval,
		Rate:      n.cfg.AntiEntropyRate,
		EpochWait: n.cfg.EpochWait,
		PageSize:  n.cfg.TransferPageSize,
		Engine:    n.eng,
		Store:     store{n},
		Ring:      n.mem,
		Request:   n.request,
		Placement: n.placeMu.RLocker(),
		Logger:    n.log,
		Metrics:   n.healMet,
	})
}

// startHints starts draining n's hints when the node has an inbox.
func (n *Node) startHints() {
	if n.cfg.Hints == nil {
		return
	}
	n.hints = heal.StartHints(heal.HintsConfig{
		Inbox:       n.cfg.Hints,
		Rate:        n.cfg.HintRate,
		Batch:       n.cfg.HintBatch,
		Store:       store{n},
		Ring:        n.mem, // nil in static mode
		GainedSince: n.gainedSince,
		Placement:   n.placeMu.RLocker(),
		Logger:      n.log,
		Metrics:     n.healMet,
	})
}

// repair serves RepairRequest (heal.AntiEntropy.Repair); a node without
// membership has no replicas to compare with.
func (n *Node) repair(_ context.Context, _ string, req *pb.RepairRequest) (*pb.RepairResponse, error) {
	if n.ae == nil {
		return nil, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"node %s runs without membership (static mode): it knows no replicas to compare with", n.cfg.ID)
	}
	return n.ae.Repair(req)
}
