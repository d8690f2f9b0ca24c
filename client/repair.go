package client

import (
	"context"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Repair rounds run on storage nodes, one node at a time: StartRepair asks
// node to run an anti-entropy round now and answers at once with the
// round's id; RepairStatus polls it until its state is done, failed or
// skipped. A round compares every arc the node replicates (of tenant, or of
// every tenant when tenant is empty) with the other replicas and repairs
// both sides, so running it on every node repairs the whole cluster.

// StartRepair queues an anti-entropy round on storage node node. A retried
// request may queue a second round; rounds are idempotent, so that only
// costs time.
func (c *Client) StartRepair(ctx context.Context, node, tenant string) (*pb.RepairStatus, error) {
	resp := new(pb.RepairResponse)
	err := c.call(ctx, c.subjects.Node(node, "repair"), &pb.RepairRequest{TenantId: tenant}, resp)
	return resp.GetStatus(), err
}

// RepairStatus reads the progress of round roundID on storage node node.
func (c *Client) RepairStatus(ctx context.Context, node, roundID string) (*pb.RepairStatus, error) {
	resp := new(pb.RepairResponse)
	err := c.call(ctx, c.subjects.Node(node, "repair"), &pb.RepairRequest{RoundId: roundID}, resp)
	return resp.GetStatus(), err
}
