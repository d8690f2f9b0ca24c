package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
)

// Changes are one at a time: a second one while the first runs is refused
// with CHANGE_IN_PROGRESS (not queued). A queue would hide from the operator
// that the cluster is still moving data, and each change's transfer plan
// depends on the shape the previous one leaves.

// startChange appends ChangeStarted built by build from the latest state,
// retrying when another writer appended first. The ring log's fold takes
// the change's tenant snapshot (every live tenant's replication factor);
// tenants whose records predate the ring log's tenants are recorded first,
// so their data moves too.
func (s *Service) startChange(ctx context.Context, build func(st *membership.State) (*pb.ChangeStarted, error)) (*pb.NodeChangeResponse, error) {
	if err := s.cfg.Membership.CatchUp(ctx); err != nil {
		return nil, err
	}
	if err := s.recordStoredTenants(ctx); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		st := s.cfg.Membership.State()
		c, err := build(st)
		if err != nil {
			return nil, err
		}
		c.MigrationId = newMigrationID(c.GetType())
		if err := st.CheckStart(c); err != nil {
			return nil, err
		}
		seq, err := s.cfg.Membership.Append(ctx, st.Seq, &pb.RingEvent{Event: &pb.RingEvent_Started{Started: c}})
		if status.Is(err, pb.ErrorCode_VERSION_CONFLICT) && attempt < 5 {
			// Someone else appended; fold it and decide again.
			if werr := s.cfg.Membership.WaitFor(ctx, st.Seq+1); werr != nil {
				return nil, werr
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := s.cfg.Membership.WaitFor(ctx, seq); err != nil {
			return nil, err
		}
		s.log.Info("membership change started", zap.String("migration", c.GetMigrationId()),
			zap.String("type", membership.ChangeTypeName(c.GetType())), zap.Strings("nodes", c.GetNodeIds()),
			zap.String("tenant", c.GetTenantId()))
		return &pb.NodeChangeResponse{MigrationId: c.GetMigrationId(), Epoch: seq}, nil
	}
}

// recordStoredTenants records in the ring log every stored tenant it does
// not know (tenants created before the ring log held tenants).
func (s *Service) recordStoredTenants(ctx context.Context) error {
	token := ""
	for {
		ts, next, err := s.cfg.Tenants.List(ctx, tenant.MaxPageSize, token)
		if err != nil {
			return err
		}
		for _, t := range ts {
			if _, err := s.knownToRing(ctx, t); err != nil && !status.Is(err, pb.ErrorCode_TENANT_NOT_FOUND) {
				return err
			}
		}
		if next == "" {
			return nil
		}
		token = next
	}
}

func newMigrationID(t pb.ChangeType) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return membership.ChangeTypeName(t) + "-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

func (s *Service) addNodes(ctx context.Context, _ string, req *pb.AddNodesRequest) (*pb.NodeChangeResponse, error) {
	ids := req.GetNodeIds()
	if len(ids) == 0 {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "name at least one node to add")
	}
	for _, id := range ids {
		if err := keyspace.ValidateTenantID(id); err != nil {
			return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad node id")
		}
	}
	return s.startChange(ctx, func(st *membership.State) (*pb.ChangeStarted, error) {
		if len(st.Normal()) == 0 {
			// The cluster's settings, for its life: every part reads
			// them from the log from now on.
			return &pb.ChangeStarted{Type: pb.ChangeType_BOOTSTRAP, NodeIds: ids, Settings: s.cfg.Cluster.Proto()}, nil
		}
		if len(ids) > 1 {
			return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"the ring has members: add one node at a time (only the first nodes of an empty ring are added together)")
		}
		return &pb.ChangeStarted{Type: pb.ChangeType_ADD_NODE, NodeIds: ids}, nil
	})
}

func (s *Service) removeNode(ctx context.Context, _ string, req *pb.RemoveNodeRequest) (*pb.NodeChangeResponse, error) {
	id := req.GetNodeId()
	resp, err := s.startChange(ctx, func(st *membership.State) (*pb.ChangeStarted, error) {
		typ := pb.ChangeType_REMOVE_NODE
		if req.GetForce() {
			typ = pb.ChangeType_FORCE_REMOVE_NODE
		}
		// Checked before the arithmetic below, which counts the node among
		// the NORMAL ones (CheckStart checks it again, too late for that).
		if n, ok := st.Nodes[id]; !ok || n.State != membership.Normal {
			return nil, status.Errorf(pb.ErrorCode_NODE_NOT_FOUND, "node %s is not a NORMAL member of the ring (pairdb node list)", id)
		}
		if !req.GetForce() {
			// Every tenant's replication factor must still fit.
			remaining := len(st.Normal()) - 1
			for t := range st.Tenants {
				if cur, next := st.TenantRF(t); int(max(cur, next)) > remaining {
					return nil, status.Errorf(pb.ErrorCode_NODE_IN_USE,
						"removing %s leaves %d NORMAL nodes but tenant %q has replication factor %d; lower it first, or force the removal",
						id, remaining, t, max(cur, next))
				}
			}
		}
		return &pb.ChangeStarted{Type: typ, NodeIds: []string{id}}, nil
	})
	if err == nil && req.GetForce() {
		resp.Message = "forced: the replication-factor check was skipped; data is re-replicated from surviving replicas"
	}
	return resp, err
}

// changeRF starts a replication-factor change for t.
func (s *Service) changeRF(ctx context.Context, t *pb.Tenant, rf uint32) (string, error) {
	resp, err := s.startChange(ctx, func(st *membership.State) (*pb.ChangeStarted, error) {
		return &pb.ChangeStarted{Type: pb.ChangeType_REPLICATION_FACTOR, TenantId: t.GetTenantId(), ReplicationFactor: rf}, nil
	})
	if err != nil {
		return "", err
	}
	return resp.GetMigrationId(), nil
}

func (s *Service) listNodes(_ context.Context, _ string, _ *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	st := s.cfg.Membership.State()
	resp := &pb.ListNodesResponse{Epoch: st.Epoch}
	ids := make([]string, 0, len(st.Nodes))
	for id := range st.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	now := time.Now()
	for _, id := range ids {
		n := st.Nodes[id]
		info := &pb.NodeInfo{NodeId: id, State: n.Shown(), Incarnation: n.Incarnation, LastHeartbeatMsAgo: -1, Refilling: n.Refilling}
		if hb, at, ok := s.liveness.last(id); ok {
			info.Epoch, info.Keys, info.DiskBytes = hb.GetEpoch(), hb.GetKeys(), hb.GetDiskBytes()
			info.LastHeartbeatMsAgo = now.Sub(at).Milliseconds()
		}
		resp.Nodes = append(resp.Nodes, info)
	}
	return resp, nil
}

func (s *Service) getMigration(ctx context.Context, _ string, req *pb.GetMigrationRequest) (*pb.MigrationResponse, error) {
	if tenant, seq, ok := membership.ParseTenantDeletionID(req.GetMigrationId()); ok {
		m, err := s.tenantDeletion(ctx, req.GetMigrationId(), tenant, seq)
		if err != nil {
			return nil, err
		}
		return &pb.MigrationResponse{Migration: m}, nil
	}
	st := s.cfg.Membership.State()
	rec, running, ok := st.Migration(req.GetMigrationId())
	if !ok {
		return nil, status.Errorf(pb.ErrorCode_MIGRATION_NOT_FOUND, "no migration %q (the last %d are kept)", req.GetMigrationId(), 100)
	}
	return &pb.MigrationResponse{Migration: s.migration(ctx, rec, running)}, nil
}

func (s *Service) listMigrations(ctx context.Context, _ string, _ *pb.ListMigrationsRequest) (*pb.ListMigrationsResponse, error) {
	st := s.cfg.Membership.State()
	resp := &pb.ListMigrationsResponse{}
	if st.Change != nil {
		resp.Migrations = append(resp.Migrations, s.migration(ctx, membership.Record{Change: *st.Change}, true))
	}
	for i := len(st.History) - 1; i >= 0; i-- {
		resp.Migrations = append(resp.Migrations, s.migration(ctx, st.History[i], false))
	}
	return resp, nil
}

// migration renders a change with the progress its targets reported.
func (s *Service) migration(ctx context.Context, rec membership.Record, running bool) *pb.Migration {
	m := &pb.Migration{
		MigrationId: rec.ID, Type: membership.ChangeTypeName(rec.Type), NodeIds: rec.Nodes, TenantId: rec.Tenant,
		State: "completed", StartedAtMs: rec.StartedMs, EndedAtMs: rec.EndedMs,
	}
	targets := make([]string, 0, len(rec.Targets))
	for t := range rec.Targets {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	progress := s.cfg.Membership.Progress(ctx, rec.ID, targets)
	for _, t := range targets {
		p := progress[t]
		m.KeysTransferred += p.GetKeysTransferred()
		m.KeysTotal += p.GetKeysTotal()
		if running && !slices.Contains(keysOf(rec.Done), t) {
			m.PendingNodes = append(m.PendingNodes, t)
			if p.GetError() != "" {
				m.Error = t + ": " + p.GetError()
			}
		}
	}
	if running {
		m.State = "in_progress"
	}
	switch {
	case !running:
		m.Percentage = 100
	case m.KeysTotal > 0:
		m.Percentage = min(99.9, 100*float64(m.KeysTransferred)/float64(m.KeysTotal))
	}
	return m
}

func keysOf(m map[string]uint64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
