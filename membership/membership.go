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

	"github.com/pairdb/pairdb/coordinator/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Registered is the state of a node that announced itself but is not (or no
// longer) a ring member. It owns nothing.
const Registered ring.State = 0

// historyLimit bounds how many finished changes State remembers.
const historyLimit = 100

// Node is one storage node as the log knows it.
type Node struct {
	ID          string
	Incarnation string
	State       ring.State
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
	Epoch  uint64
	VNodes int
	Nodes  map[string]Node
	// Incarnations maps every incarnation ever registered to its node id:
	// the actors a version vector may name. Old incarnations of wiped
	// nodes stay, since their dots live on in clocks.
	Incarnations map[string]string
	// Tenants are the tenants the log knows, deleted ones included (as
	// such): storage nodes take data only for live ones.
	Tenants map[string]Tenant
	// RF holds the outcome of finished replication-factor changes: tenant →
	// {old, new}. The tenant store is updated when a change starts; this
	// covers a store update that failed.
	RF      map[string]RFChange
	Change  *Change
	History []Record
	cur     *ring.Ring
	next    *ring.Ring
}

// New is the state of an empty log.
func New(vnodes int) *State {
	s := &State{VNodes: vnodes, Nodes: map[string]Node{}, Incarnations: map[string]string{}, Tenants: map[string]Tenant{},
		RF: map[string]RFChange{}}
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
		if n.State == ring.Normal {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Tenant is a tenant as the ring log knows it.
type Tenant struct {
	// RF is the replication factor it was recorded with.
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

// RFChange is a finished replication-factor change.
type RFChange struct{ From, To uint32 }

// TenantRF is a tenant's replication factor now and after the change in
// progress; storeRF is what the tenant store says. While the tenant's RF
// change runs, reads keep the old factor and writes also reach the new
// replicas; a finished change wins over a store still at the old factor.
func (s *State) TenantRF(tenant string, storeRF uint32) (cur, next uint32) {
	if c := s.Change; c != nil && c.Type == pb.ChangeType_REPLICATION_FACTOR && c.Tenant == tenant {
		return c.TenantRF[tenant], c.RF
	}
	if rc, ok := s.RF[tenant]; ok && storeRF == rc.From {
		return rc.To, rc.To
	}
	return storeRF, storeRF
}

// ReplicaSets are a key's replicas now (reads) and after the change (writes
// go to both and must meet W in each). Without a change they are equal.
func (s *State) ReplicaSets(tenant string, storeRF uint32, hash uint64) (cur, next []string) {
	rc, rn := s.TenantRF(tenant, storeRF)
	cur = s.cur.Preference(hash, int(rc))
	next = s.next.Preference(hash, int(rn))
	return cur, next
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
	n.RF = maps.Clone(s.RF)
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
	var cur, next []ring.Member
	for id, n := range s.Nodes {
		switch n.State {
		case ring.Normal:
			cur = append(cur, ring.Member{ID: id, State: ring.Normal})
			next = append(next, ring.Member{ID: id, State: ring.Normal})
		case ring.Leaving:
			cur = append(cur, ring.Member{ID: id, State: ring.Normal})
		case ring.Joining:
			next = append(next, ring.Member{ID: id, State: ring.Normal})
		}
	}
	s.cur = ring.New(s.Epoch, s.VNodes, cur)
	s.next = ring.New(s.Epoch, s.VNodes, next)
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
		if n.State == ring.Normal || n.State == ring.Joining || n.State == ring.Leaving {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
