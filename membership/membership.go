// Package membership folds the ring log into the cluster's shape: which
// storage nodes exist and in which state, the change in progress, and the
// replica sets a key has while it runs. It is pure: the log itself lives in
// JetStream (jetstream/ringlog), and every coordinator and storage node
// folds the same events into the same State.
package membership

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// historyLimit bounds how many finished changes State remembers.
const historyLimit = 100

// Node is one storage node as the log knows it.
type Node struct {
	ID          string
	Incarnation string
	State       NodeState
	// Refilling is set when a ring member comes back under a new
	// incarnation (it lost its data): it keeps its place on the ring and
	// takes writes, but serves no reads until RefillDone clears it.
	Refilling bool
}

// Change is the membership or replication-factor change in progress.
type Change struct {
	ID       string
	Type     pb.ChangeType
	Nodes    []string
	Tenant   string
	RF       uint32
	TenantRF map[string]uint32
	// StartSeq is the log sequence of ChangeStarted; StartedMs its time.
	StartSeq  uint64
	StartedMs int64
	// Targets must each report TransferDone before the cutover.
	Targets map[string]bool
	// Done maps targets that finished to the keys they moved.
	Done map[string]uint64
}

// Record is a change and how it ended.
type Record struct {
	Change
	EndedMs int64
	EndSeq  uint64
}

// State is the fold of the ring log up to Seq. It is immutable: Apply
// returns a new State, so readers may hold one without locking.
type State struct {
	// Seq is the last folded log sequence (the expected last sequence of
	// the next append).
	Seq uint64
	// Epoch is the sequence of the last event that changed placement;
	// replica messages carry it.
	Epoch uint64
	// HoldersSeq is the sequence of the last event that moved data between
	// nodes: a change started or ended, a member lost its data. A refill
	// computed on an older fold may have missed a range, so RefillDone
	// must be based on a fold at least this new.
	HoldersSeq uint64
	// Settings are the cluster's (see settings.go): the defaults until the
	// bootstrap records them.
	Settings     Settings
	bootstrapped bool
	Nodes        map[string]Node
	// Incarnations maps every incarnation ever registered to its node id:
	// the actors a version vector may name. Old incarnations of wiped
	// nodes stay, since their dots live on in clocks.
	Incarnations map[string]string
	// Tenants are the tenants the log knows, deleted ones included (as
	// such): storage nodes take data only for live ones.
	Tenants map[string]Tenant
	Change  *Change
	History []Record
	cur     *ring.Ring
	next    *ring.Ring
}

// New is the state of an empty log.
func New() *State {
	s := &State{Settings: DefaultSettings(), Nodes: map[string]Node{}, Incarnations: map[string]string{}, Tenants: map[string]Tenant{}}
	s.rebuild()
	return s
}

// Current is the ring that serves reads: NORMAL and LEAVING nodes.
func (s *State) Current() *ring.Ring { return s.cur }

// Next is the ring after the change: NORMAL and JOINING nodes.
func (s *State) Next() *ring.Ring { return s.next }

// Normal lists the NORMAL nodes, sorted.
func (s *State) Normal() []string {
	var out []string
	for id, n := range s.Nodes {
		if n.State == Normal {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Serving reports whether node id serves reads: a member of the current
// ring that holds its data (not refilling).
func (s *State) Serving(id string) bool {
	n, ok := s.Nodes[id]
	return ok && (n.State == Normal || n.State == Leaving) && !n.Refilling
}

// Refill lists what node id must pull to be refilled: every arc of every
// live tenant it replicates on the current ring, with the arc's full
// replica set as From (its own copy included, which it no longer has).
// Arcs it gains in a running change are that change's to move.
func (s *State) Refill(id string) []TenantMove {
	var out []TenantMove
	for _, t := range slices.Sorted(maps.Keys(s.Tenants)) {
		rf, _ := s.TenantRF(t)
		if rf == 0 {
			continue
		}
		// Diff against no replicas at all lists every arc with its set.
		for _, mv := range ring.Diff(s.cur, int(rf), s.cur, 0) {
			if slices.Contains(mv.From, id) {
				out = append(out, TenantMove{Tenant: t, Move: ring.Move{Arc: mv.Arc, From: mv.From, To: mv.From}})
			}
		}
	}
	return out
}

// Tenant is a tenant as the ring log knows it.
type Tenant struct {
	// RF is its replication factor: the one it was created with, then the
	// outcome of each replication-factor change (the ring log is the only
	// place placement reads it from; the tenant record mirrors it).
	RF uint32
	// Policy is its conflict policy.
	Policy pb.ConflictPolicy
	// Seq is the log sequence that created it, its incarnation (or, once
	// deleted, that recorded the deletion), and AtMs when (the event's
	// time, Unix ms). A change of settings keeps both.
	Seq     uint64
	AtMs    int64
	Deleted bool
}

// TenantLive reports whether the log knows tenant and it is not deleted.
func (s *State) TenantLive(tenant string) bool {
	t, ok := s.Tenants[tenant]
	return ok && !t.Deleted
}

// TenantRF is a tenant's replication factor now and after the change in
// progress (0 when the ring log does not know the tenant). While the
// tenant's RF change runs, reads keep the old factor and writes also reach
// the new replicas.
func (s *State) TenantRF(tenant string) (cur, next uint32) {
	if c := s.Change; c != nil && c.Type == pb.ChangeType_REPLICATION_FACTOR && c.Tenant == tenant {
		return c.TenantRF[tenant], c.RF
	}
	t, ok := s.Tenants[tenant]
	if !ok || t.Deleted {
		return 0, 0
	}
	return t.RF, t.RF
}

// TenantRFs is the current replication factor (TenantRF's cur) of every
// tenant the ring log knows and has one for: a tenant missing here is one a
// node keeps as it is, never cleans up or compares.
func (s *State) TenantRFs() map[string]uint32 {
	out := map[string]uint32{}
	for t := range s.Tenants {
		if cur, _ := s.TenantRF(t); cur > 0 {
			out[t] = cur
		}
	}
	return out
}

// ReplicaSets are a key's replicas now (reads) and after the change (writes
// go to both and must meet W in each). Without a change they are equal.
// Everything they depend on is in the ring log.
func (s *State) ReplicaSets(tenant string, hash uint64) (cur, next []string) {
	rc, rn := s.TenantRF(tenant)
	cur = s.cur.Preference(hash, int(rc))
	next = s.next.Preference(hash, int(rn))
	return cur, next
}

// tenantSnapshot is every live tenant's replication factor: what a change
// moves (Change.TenantRF).
func (s *State) tenantSnapshot() map[string]uint32 {
	out := make(map[string]uint32, len(s.Tenants))
	for id, t := range s.Tenants {
		if !t.Deleted {
			out[id] = t.RF
		}
	}
	return out
}

// Dead is the node a forced removal gave up on: never a transfer source.
func (s *State) Dead() string {
	if c := s.Change; c != nil && c.Type == pb.ChangeType_FORCE_REMOVE_NODE {
		return c.Nodes[0]
	}
	return ""
}

// Moves lists, for the change in progress, every arc of every tenant whose
// replica set changes. The tenants are those of the change's snapshot.
func (s *State) Moves() []TenantMove {
	c := s.Change
	if c == nil {
		return nil
	}
	return moves(s.cur, s.next, c)
}

// TenantMove is a tenant's arc and how its replica set changes.
type TenantMove struct {
	Tenant string
	ring.Move
}

func moves(cur, next *ring.Ring, c *Change) []TenantMove {
	var out []TenantMove
	for _, t := range slices.Sorted(maps.Keys(c.TenantRF)) {
		rf := c.TenantRF[t]
		rn := rf
		if c.Type == pb.ChangeType_REPLICATION_FACTOR {
			if t != c.Tenant {
				continue
			}
			rn = c.RF
		}
		for _, mv := range ring.Diff(cur, int(rf), next, int(rn)) {
			out = append(out, TenantMove{Tenant: t, Move: mv})
		}
	}
	return out
}

// clone copies s for Apply.
func (s *State) clone() *State {
	n := *s
	n.Nodes = maps.Clone(s.Nodes)
	n.Incarnations = maps.Clone(s.Incarnations)
	n.Tenants = maps.Clone(s.Tenants)
	n.History = slices.Clone(s.History)
	if s.Change != nil {
		c := *s.Change
		c.Targets = maps.Clone(c.Targets)
		c.Done = maps.Clone(c.Done)
		n.Change = &c
	}
	return &n
}

// rebuild recomputes the two rings after a placement change.
func (s *State) rebuild() {
	var cur, next []string
	for id, n := range s.Nodes {
		switch n.State {
		case Normal:
			cur, next = append(cur, id), append(next, id)
		case Leaving:
			cur = append(cur, id)
		case Joining:
			next = append(next, id)
		}
	}
	s.cur = ring.New(s.Epoch, s.Settings.VNodes, cur)
	s.next = ring.New(s.Epoch, s.Settings.VNodes, next)
}

// ChangeTypeName is the migration type shown to operators.
func ChangeTypeName(t pb.ChangeType) string {
	switch t {
	case pb.ChangeType_BOOTSTRAP:
		return "bootstrap"
	case pb.ChangeType_ADD_NODE:
		return "node_addition"
	case pb.ChangeType_REMOVE_NODE:
		return "node_removal"
	case pb.ChangeType_FORCE_REMOVE_NODE:
		return "node_force_removal"
	case pb.ChangeType_REPLICATION_FACTOR:
		return "replication_factor"
	}
	return fmt.Sprintf("unknown(%d)", int(t))
}

// Tenant deletions are followed like migrations: every storage node drops
// the deleted tenant's data and reports, under TenantProgressID, the ring
// log sequence its data for the tenant now follows; the deletion recorded
// at sequence seq is TenantDeletionID(tenant, seq) and is done on a node
// once that node's report is at least seq.
const tenantDeletionPrefix = "tenant-delete-"

// TenantProgressID names the progress reports of tenant's data removal.
func TenantProgressID(tenant string) string { return "tenant-" + tenant }

// TenantDeletionID names the deletion of tenant recorded at seq.
func TenantDeletionID(tenant string, seq uint64) string {
	return fmt.Sprintf("%s%s-%d", tenantDeletionPrefix, tenant, seq)
}

// ParseTenantDeletionID inverts TenantDeletionID.
func ParseTenantDeletionID(id string) (tenant string, seq uint64, ok bool) {
	rest, ok := strings.CutPrefix(id, tenantDeletionPrefix)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(rest[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return rest[:i], seq, true
}

// Members are the nodes that hold or take data: NORMAL, JOINING and
// LEAVING, sorted.
func (s *State) Members() []string {
	var out []string
	for id, n := range s.Nodes {
		if n.State.member() {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
