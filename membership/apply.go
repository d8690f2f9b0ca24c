package membership

import (
	"maps"
	"slices"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Apply folds the event at log sequence seq. An event that is not valid in
// this state (the log is append-only, and a racing or buggy writer could
// still have put one there) is skipped, identically on every folder; skipped
// reports it.
func (s *State) Apply(seq uint64, ev *pb.RingEvent) (next *State, skipped error) {
	n := s.clone()
	n.Seq = seq
	var err error
	switch e := ev.GetEvent().(type) {
	case *pb.RingEvent_Registered:
		n.register(seq, e.Registered)
	case *pb.RingEvent_Started:
		if err = s.CheckStart(e.Started); err == nil {
			n.start(seq, ev.GetUnixMs(), e.Started)
		}
	case *pb.RingEvent_TransferDone:
		err = n.transferDone(seq, ev.GetUnixMs(), e.TransferDone)
	case *pb.RingEvent_Tenant:
		err = n.tenant(seq, ev.GetUnixMs(), e.Tenant)
	case *pb.RingEvent_RefillDone:
		err = n.refillDone(seq, e.RefillDone)
	default:
		err = status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "ring event %d is of no known kind", seq)
	}
	if err != nil {
		s2 := *s
		s2.Seq = seq
		return &s2, err
	}
	return n, nil
}

func (s *State) register(seq uint64, r *pb.NodeRegistered) {
	if _, known := s.Incarnations[r.GetIncarnation()]; !known && r.GetIncarnation() != "" {
		s.Incarnations[r.GetIncarnation()] = r.GetNodeId()
	}
	cur, ok := s.Nodes[r.GetNodeId()]
	switch {
	case !ok:
		s.Nodes[r.GetNodeId()] = Node{ID: r.GetNodeId(), Incarnation: r.GetIncarnation(), State: Registered}
	case cur.Incarnation == r.GetIncarnation():
	case cur.State == Normal || cur.State == Leaving || cur.State == Joining:
		// A member lost its data (a new incarnation under a known id). It
		// keeps its place, so no other node silently becomes a replica of
		// its arcs; it takes writes at once, and serves no reads until it
		// has pulled its arcs from the other replicas (RefillDone). What
		// it reported for a running change is lost with its disk.
		cur.Incarnation, cur.Refilling = r.GetIncarnation(), true
		s.Nodes[cur.ID] = cur
		if c := s.Change; c != nil {
			delete(c.Done, cur.ID)
		}
		s.HoldersSeq = seq
		s.placementChanged(seq)
	default:
		cur.Incarnation = r.GetIncarnation()
		s.Nodes[cur.ID] = cur
	}
}

// refillDone ends a member's refill, if it was computed on a fold no older
// than the last movement of data between nodes.
func (s *State) refillDone(seq uint64, d *pb.RefillDone) error {
	n, ok := s.Nodes[d.GetNodeId()]
	switch {
	case !ok || n.Incarnation != d.GetIncarnation() || !n.Refilling:
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "node %s (incarnation %s) is not refilling", d.GetNodeId(), d.GetIncarnation())
	case d.GetBasisSeq() < s.HoldersSeq || d.GetBasisSeq() >= seq:
		return status.Errorf(pb.ErrorCode_VERSION_CONFLICT,
			"the refill of node %s covered the ring at sequence %d; data moved at %d since", d.GetNodeId(), d.GetBasisSeq(), s.HoldersSeq)
	}
	n.Refilling = false
	s.Nodes[n.ID] = n
	s.placementChanged(seq)
	return nil
}

// tenant records a tenant's existence or deletion. Recording what the log
// already says is skipped (racing coordinators may both append it).
func (s *State) tenant(seq uint64, unixMs int64, t *pb.TenantChanged) error {
	if t.GetTenantId() == "" {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "a tenant event needs a tenant id")
	}
	cur, ok := s.Tenants[t.GetTenantId()]
	if ok && cur.Deleted == t.GetDeleted() {
		if t.GetDeleted() || cur.Policy == t.GetConflictPolicy() {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenant %s is already recorded so", t.GetTenantId())
		}
		// A new policy of the same incarnation: not a placement input. Its
		// replication factor is the replication-factor changes' to set.
		cur.Policy = t.GetConflictPolicy()
		s.Tenants[t.GetTenantId()] = cur
		return nil
	}
	if t.GetReplicationFactor() == 0 && !t.GetDeleted() {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenant %s is recorded without a replication factor", t.GetTenantId())
	}
	s.Tenants[t.GetTenantId()] = Tenant{RF: t.GetReplicationFactor(), Policy: t.GetConflictPolicy(), Seq: seq, AtMs: unixMs, Deleted: t.GetDeleted()}
	// A tenant's existence is an input to where data may go: requests
	// routed under it carry its epoch, and nodes wait to fold it.
	s.placementChanged(seq)
	return nil
}

// CheckStart reports whether a change may start in this state. Admins call
// it before appending; Apply calls it again, so a change that lost a race
// is skipped by every folder.
func (s *State) CheckStart(c *pb.ChangeStarted) error {
	if s.Change != nil {
		return status.Errorf(pb.ErrorCode_CHANGE_IN_PROGRESS,
			"migration %s (%s) is still running; wait for it (pairdb migration watch %s)", s.Change.ID, ChangeTypeName(s.Change.Type), s.Change.ID)
	}
	if c.GetMigrationId() == "" {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "a change needs a migration id")
	}
	nodes := c.GetNodeIds()
	switch c.GetType() {
	case pb.ChangeType_BOOTSTRAP:
		if len(s.Normal()) > 0 {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "the ring already has members; add nodes one at a time")
		}
		if len(nodes) == 0 {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "bootstrap needs at least one node")
		}
		if s.bootstrapped {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "the cluster was bootstrapped already")
		}
		if err := settingsFrom(c.GetSettings()).Validate(); err != nil {
			return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bootstrap settings")
		}
		for _, id := range nodes {
			if err := s.registered(id); err != nil {
				return err
			}
		}
	case pb.ChangeType_ADD_NODE:
		if len(nodes) != 1 {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "add one node at a time")
		}
		if err := s.registered(nodes[0]); err != nil {
			return err
		}
		if st := s.Nodes[nodes[0]].State; st == Normal || st == Leaving {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "node %s is already %s", nodes[0], st)
		}
	case pb.ChangeType_REMOVE_NODE, pb.ChangeType_FORCE_REMOVE_NODE:
		if len(nodes) != 1 {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "remove one node at a time")
		}
		n, ok := s.Nodes[nodes[0]]
		if !ok || n.State != Normal {
			return status.Errorf(pb.ErrorCode_NODE_NOT_FOUND, "node %s is not a NORMAL member of the ring", nodes[0])
		}
		if len(s.Normal()) == 1 {
			return status.Errorf(pb.ErrorCode_NODE_IN_USE, "node %s is the last member of the ring", nodes[0])
		}
	case pb.ChangeType_REPLICATION_FACTOR:
		if c.GetTenantId() == "" {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "a replication factor change needs a tenant")
		}
		old, ok := s.snapshotOf(c)[c.GetTenantId()]
		if !ok {
			return status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "the ring log has no tenant %s", c.GetTenantId())
		}
		if old == c.GetReplicationFactor() {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "tenant %s already has replication factor %d", c.GetTenantId(), old)
		}
		if int(c.GetReplicationFactor()) > len(s.Normal()) || c.GetReplicationFactor() == 0 {
			return status.Errorf(pb.ErrorCode_INVALID_REPLICATION_FACTOR,
				"replication factor %d does not fit the %d NORMAL storage nodes", c.GetReplicationFactor(), len(s.Normal()))
		}
	default:
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "unknown change type %v", c.GetType())
	}
	return nil
}

// snapshotOf is a change's tenant snapshot: the one its event carries
// (written by coordinators before the ring log held tenants), else every
// live tenant's replication factor in this state.
func (s *State) snapshotOf(c *pb.ChangeStarted) map[string]uint32 {
	if len(c.GetTenantRf()) > 0 {
		return maps.Clone(c.GetTenantRf())
	}
	return s.tenantSnapshot()
}

func (s *State) registered(id string) error {
	if _, ok := s.Nodes[id]; !ok {
		return status.Errorf(pb.ErrorCode_NODE_NOT_FOUND,
			"node %s has not registered: start it (pairdb storagenode --id %s) and retry", id, id)
	}
	return nil
}

func (s *State) start(seq uint64, unixMs int64, c *pb.ChangeStarted) {
	ch := &Change{
		ID: c.GetMigrationId(), Type: c.GetType(), Nodes: slices.Clone(c.GetNodeIds()),
		Tenant: c.GetTenantId(), RF: c.GetReplicationFactor(), TenantRF: s.snapshotOf(c),
		StartSeq: seq, StartedMs: unixMs, Targets: map[string]bool{}, Done: map[string]uint64{},
	}
	if ch.TenantRF == nil {
		ch.TenantRF = map[string]uint32{}
	}
	switch ch.Type {
	case pb.ChangeType_BOOTSTRAP:
		s.Settings, s.bootstrapped = settingsFrom(c.GetSettings()), true
		for _, id := range ch.Nodes {
			n := s.Nodes[id]
			n.State = Normal
			s.Nodes[id] = n
		}
	case pb.ChangeType_ADD_NODE:
		n := s.Nodes[ch.Nodes[0]]
		n.State = Joining
		s.Nodes[n.ID] = n
	case pb.ChangeType_REMOVE_NODE, pb.ChangeType_FORCE_REMOVE_NODE:
		n := s.Nodes[ch.Nodes[0]]
		n.State = Leaving
		s.Nodes[n.ID] = n
	}
	s.Change = ch
	s.HoldersSeq = seq
	s.placementChanged(seq)
	for _, mv := range moves(s.cur, s.next, ch) {
		for _, g := range mv.Targets() {
			ch.Targets[g] = true
		}
	}
	if len(ch.Targets) == 0 {
		s.finish(seq, unixMs)
	}
}

func (s *State) transferDone(seq uint64, unixMs int64, d *pb.TransferDone) error {
	c := s.Change
	if c == nil || c.ID != d.GetMigrationId() {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "migration %s is not running", d.GetMigrationId())
	}
	if !c.Targets[d.GetNodeId()] {
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "node %s is not a target of migration %s", d.GetNodeId(), c.ID)
	}
	c.Done[d.GetNodeId()] = d.GetKeys()
	if len(c.Done) == len(c.Targets) {
		s.finish(seq, unixMs)
	}
	return nil
}

// finish is the cutover: the next placement becomes the current one.
func (s *State) finish(seq uint64, unixMs int64) {
	c := s.Change
	switch c.Type {
	case pb.ChangeType_ADD_NODE:
		n := s.Nodes[c.Nodes[0]]
		n.State = Normal
		s.Nodes[n.ID] = n
	case pb.ChangeType_REMOVE_NODE, pb.ChangeType_FORCE_REMOVE_NODE:
		n := s.Nodes[c.Nodes[0]]
		n.State, n.Refilling = Removed, false
		s.Nodes[n.ID] = n
	case pb.ChangeType_REPLICATION_FACTOR:
		if t, ok := s.Tenants[c.Tenant]; ok && !t.Deleted {
			t.RF = c.RF
			s.Tenants[c.Tenant] = t
		}
	}
	s.History = append(s.History, Record{Change: *c, EndedMs: unixMs, EndSeq: seq})
	if len(s.History) > historyLimit {
		s.History = s.History[len(s.History)-historyLimit:]
	}
	s.Change = nil
	s.HoldersSeq = seq
	s.placementChanged(seq)
}

func (s *State) placementChanged(seq uint64) {
	s.Epoch = seq
	s.rebuild()
}

// Migration returns a change by id: the running one or a finished one.
func (s *State) Migration(id string) (Record, bool, bool) {
	if s.Change != nil && s.Change.ID == id {
		return Record{Change: *s.Change}, true, true
	}
	for i := len(s.History) - 1; i >= 0; i-- {
		if s.History[i].ID == id {
			return s.History[i], false, true
		}
	}
	return Record{}, false, false
}
