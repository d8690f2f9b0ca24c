package coordinator

import (
	"context"
	"slices"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Deleting a tenant deletes its data, everywhere it lives:
//
//  1. Unless forced, a tenant that still holds data on any storage node is
//     not deleted (TENANT_NOT_EMPTY): every node is asked for one key.
//  2. The record goes first, so new requests get TENANT_NOT_FOUND at once.
//  3. Its idempotency records are purged (a tenant created again under the
//     id must not be answered with the old one's responses).
//  4. The deletion is recorded in the ring log (TenantChanged): every
//     storage node, when it folds it, drops the tenant's data and origin
//     records and reports it; hints of the tenant are dropped when replayed.
//     The answer names the deletion as a migration (`migrations.get`,
//     `pairdb tenant delete --wait`), done once every member node reported.
//
// Each step after the first is repeated by deleting again: a delete of a
// tenant whose record is gone but whose deletion the ring log does not show
// yet finishes it. A tenant created again gets a new incarnation, and nodes
// drop any data of the old one before they store or read the new one's.
func (s *Service) deleteTenant(ctx context.Context, _ string, req *pb.DeleteTenantRequest) (*pb.TenantResponse, error) {
	id := req.GetTenantId()
	if err := keyspace.ValidateTenantID(id); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad tenant_id")
	}
	t, err := s.cfg.Tenants.Get(ctx, id)
	switch {
	case status.Is(err, pb.ErrorCode_TENANT_NOT_FOUND) && s.cfg.Membership.State().TenantLive(id):
		// A delete that stopped after its first step: finish it.
	case err != nil:
		return nil, err
	default:
		if !req.GetForce() {
			if err := s.requireEmpty(ctx, id); err != nil {
				return nil, err
			}
		}
		if err := s.cfg.Tenants.Delete(ctx, id); err != nil {
			return nil, err
		}
		s.announce(id)
	}
	if s.cfg.Idempotency != nil {
		if err := s.cfg.Idempotency.PurgeTenant(ctx, id); err != nil {
			return nil, status.Wrap(status.CodeOf(err), err,
				"tenant %q's record is deleted, but its idempotency records are not removed yet; delete it again", id)
		}
	}
	if err := s.RecordTenant(ctx, &pb.Tenant{TenantId: id}, true); err != nil {
		return nil, status.Wrap(status.CodeOf(err), err,
			"tenant %q's record is deleted, but the ring log does not say so yet (its data stays until it does); delete it again", id)
	}
	rec := s.cfg.Membership.State().Tenants[id]
	s.log.Info("tenant deleted; storage nodes drop its data", zap.String("tenant", id), zap.Uint64("seq", rec.Seq))
	resp := &pb.TenantResponse{MigrationId: membership.TenantDeletionID(id, rec.Seq)}
	if t != nil {
		resp.Tenant = proto.Clone(t).(*pb.Tenant)
	}
	return resp, nil
}

// requireEmpty refuses to delete a tenant that still holds data: it asks
// every member node for one key of the tenant (the whole ring, limit 1).
// A node that cannot answer leaves it unknown, which is refused too.
func (s *Service) requireEmpty(ctx context.Context, tenant string) error {
	st := s.cfg.Membership.State()
	nodes := st.Members()
	if len(nodes) == 0 {
		return nil
	}
	g := s.gather(nodes, bus.OpScan, &pb.ScanRequest{TenantId: tenant, Range: &pb.HashRange{}, Limit: 1, Epoch: st.Epoch}, len(nodes))
	defer g.close()
	for g.left > 0 {
		r, gs := g.next(ctx.Done(), nil)
		if gs != gotReply {
			return status.Errorf(pb.ErrorCode_UNAVAILABLE, "could not ask every storage node whether tenant %q holds data before the deadline", tenant)
		}
		resp := new(pb.ScanResponse)
		if err := g.decode(r, "reads", resp); err != nil {
			return status.Wrap(pb.ErrorCode_TENANT_NOT_EMPTY, err,
				"cannot tell whether tenant %q holds data on node %s; delete with force to remove whatever it holds", tenant, r.node)
		}
		if len(resp.GetItems()) > 0 {
			return status.Errorf(pb.ErrorCode_TENANT_NOT_EMPTY,
				"tenant %q still holds data (node %s has key %q); delete with force (pairdb tenant delete %s --force) to remove it from every replica",
				tenant, r.node, resp.GetItems()[0].GetKey(), tenant)
		}
	}
	return nil
}

// tenantDeletion renders a tenant deletion as a migration: done once every
// member node reported its data for the tenant follows the deletion (or a
// later event).
func (s *Service) tenantDeletion(ctx context.Context, id, tenant string, seq uint64) (*pb.Migration, error) {
	st := s.cfg.Membership.State()
	rec, ok := st.Tenants[tenant]
	if !ok || rec.Seq < seq || (rec.Seq == seq && !rec.Deleted) {
		return nil, status.Errorf(pb.ErrorCode_MIGRATION_NOT_FOUND, "no deletion %q of tenant %q in the ring log", id, tenant)
	}
	nodes := st.Members()
	// keys_transferred counts the keys the nodes dropped; percentage the
	// nodes done.
	m := &pb.Migration{MigrationId: id, Type: "tenant_deletion", TenantId: tenant, NodeIds: nodes, State: "completed"}
	if rec.Seq == seq {
		m.StartedAtMs = rec.AtMs
	}
	progress := s.cfg.Membership.Progress(ctx, membership.TenantProgressID(tenant), nodes)
	var last int64
	for _, n := range nodes {
		p := progress[n]
		if p.GetTenantSeq() < seq {
			m.PendingNodes = append(m.PendingNodes, n)
			continue
		}
		m.KeysTransferred += p.GetKeysTransferred()
		last = max(last, p.GetUnixMs())
	}
	slices.Sort(m.PendingNodes)
	if len(m.PendingNodes) > 0 {
		m.State = "running"
	} else {
		m.EndedAtMs = last
	}
	if len(nodes) > 0 {
		m.Percentage = 100 * float64(len(nodes)-len(m.PendingNodes)) / float64(len(nodes))
	}
	return m, nil
}
