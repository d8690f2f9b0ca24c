package membership

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Every coordinator and storage node folds the ring log on its own: one that
// started long ago, one that just started (folding from the first event),
// one that asked for replica sets between events. The property: for any
// sequence of events, valid or not, they all reach the same state and the
// same replica set for every key of every tenant, and a state once folded
// never changes (parts hold old states while they fold on).
//
// PAIRDB_FOLD_SEED=N replays one sequence.
func TestEveryFoldComputesTheSameReplicaSets(t *testing.T) {
	seeds := make([]uint64, 0, 40)
	if s := os.Getenv("PAIRDB_FOLD_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seeds = append(seeds, n)
	} else {
		for i := range uint64(40) {
			seeds = append(seeds, 20261202+i)
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { checkFolds(t, seed, 300) })
	}
}

// sampleHashes are the keys whose replica sets are compared.
var sampleHashes = func() []uint64 {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]uint64, 64)
	for i := range out {
		out[i] = r.Uint64()
	}
	return out
}()

// placement is what a part computes from a state: every replica set of the
// sample, by tenant, plus the summary the parts act on.
type placement struct {
	Seq, Epoch uint64
	Settings   Settings
	Nodes      map[string]Node
	Tenants    map[string]Tenant
	ChangeID   string
	Targets    []string
	Sets       map[string][][2][]string
}

func placementOf(s *State, tenants []string) placement {
	p := placement{Seq: s.Seq, Epoch: s.Epoch, Settings: s.Settings, Nodes: s.Nodes, Tenants: s.Tenants, Sets: map[string][][2][]string{}}
	if s.Change != nil {
		p.ChangeID = s.Change.ID
		for id := range s.Change.Targets {
			p.Targets = append(p.Targets, id)
		}
		slices.Sort(p.Targets)
	}
	for _, tn := range tenants {
		for _, h := range sampleHashes {
			cur, next := s.ReplicaSets(tn, h)
			p.Sets[tn] = append(p.Sets[tn], [2][]string{cur, next})
		}
	}
	return p
}

func checkFolds(t *testing.T, seed uint64, n int) {
	g := &eventGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	events := make([]*pb.RingEvent, 0, n)

	// The long-running part: it generates against its own fold and keeps
	// every state it passed through, with what it computed then.
	st := New()
	var kept []*State
	var seen []placement
	var skipped []bool
	for i := range n {
		ev := g.next(st)
		events = append(events, ev)
		next, err := st.Apply(uint64(i+1), ev)
		if err == nil {
			checkNoReaderWithoutData(t, st, next, ev, g.tenants, seed)
		}
		st = next
		kept = append(kept, st)
		seen = append(seen, placementOf(st, g.tenants))
		skipped = append(skipped, err != nil)
		checkInvariants(t, st, g.tenants, seed, i+1)
	}

	// A part that folds the whole log from the start, asking for replica
	// sets and moves after every event as a busy coordinator does.
	other := New()
	for i, ev := range events {
		next, err := other.Apply(uint64(i+1), ev)
		other = next
		_ = other.Moves()
		require.Equal(t, skipped[i], err != nil, "seed %d event %d (%v): one fold skipped it, the other did not", seed, i+1, ev)
		require.Equal(t, seen[i], placementOf(other, g.tenants), "seed %d: the folds disagree after event %d (%v)", seed, i+1, ev)
	}
	// A part that started at a random point folds the same prefix.
	late := New()
	stop := g.r.IntN(n) + 1
	for i, ev := range events[:stop] {
		late, _ = late.Apply(uint64(i+1), ev)
	}
	require.Equal(t, seen[stop-1], placementOf(late, g.tenants), "seed %d: a late fold to %d disagrees", seed, stop)

	// The states the first part held did not change as it folded on.
	for i, s := range kept {
		require.Equal(t, seen[i], placementOf(s, g.tenants), "seed %d: state %d changed after it was folded", seed, i+1)
	}
}

// checkInvariants holds for every fold: replica sets are distinct ring
// members, as many as the replication factor allows.
func checkInvariants(t *testing.T, s *State, tenants []string, seed uint64, seq int) {
	t.Helper()
	curMembers := map[string]bool{}
	for _, id := range s.Current().Owners() {
		curMembers[id] = true
	}
	nextMembers := map[string]bool{}
	for _, id := range s.Next().Owners() {
		nextMembers[id] = true
	}
	for _, tn := range tenants {
		rc, rn := s.TenantRF(tn)
		for _, h := range sampleHashes[:8] {
			cur, next := s.ReplicaSets(tn, h)
			require.Len(t, cur, min(int(rc), len(curMembers)), "seed %d seq %d tenant %s", seed, seq, tn)
			require.Len(t, next, min(int(rn), len(nextMembers)), "seed %d seq %d tenant %s", seed, seq, tn)
			for _, id := range cur {
				require.True(t, curMembers[id], "seed %d seq %d: %s reads from non-member %s", seed, seq, tn, id)
			}
			for _, id := range next {
				require.True(t, nextMembers[id], "seed %d seq %d: %s writes to non-member %s", seed, seq, tn, id)
			}
			require.Len(t, uniq(cur), len(cur))
			require.Len(t, uniq(next), len(next))
		}
	}
	if s.Change == nil {
		require.Equal(t, s.Current().Owners(), s.Next().Owners(), "seed %d seq %d: no change, yet two rings", seed, seq)
	}
}

// checkNoReaderWithoutData: a node starts serving reads of a key only
// when it got the key's data: as a target of a change at its cutover, by
// its own refill, or when the tenant (or the ring) is new and holds no
// data yet.
func checkNoReaderWithoutData(t *testing.T, prev, next *State, ev *pb.RingEvent, tenants []string, seed uint64) {
	t.Helper()
	if len(prev.Current().Owners()) == 0 {
		return // the first ring: no data anywhere yet
	}
	for _, tn := range tenants {
		if a, b := prev.Tenants[tn], next.Tenants[tn]; !prev.TenantLive(tn) || a.Seq != b.Seq {
			continue // a new tenant holds nothing
		}
		for _, h := range sampleHashes {
			before := readers(prev, tn, h)
			for _, r := range readers(next, tn, h) {
				if slices.Contains(before, r) {
					continue
				}
				refilled := ev.GetRefillDone().GetNodeId() == r
				cutover := prev.Change != nil && next.Change == nil && prev.Change.Targets[r]
				require.True(t, refilled || cutover, "seed %d seq %d (%v): %s reads tenant %s hash %d without having been given its data",
					seed, next.Seq, ev, r, tn, h)
			}
		}
	}
}

func readers(s *State, tenant string, h uint64) []string {
	cur, _ := s.ReplicaSets(tenant, h)
	return slices.DeleteFunc(slices.Clone(cur), func(id string) bool { return !s.Serving(id) })
}

func uniq(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// eventGen writes the events coordinators and nodes append (and some that
// lost a race or are plain wrong), mostly valid for the state at hand.
type eventGen struct {
	r       *rand.Rand
	tenants []string
	inc     int
	mig     int
}

var nodePool = []string{"n1", "n2", "n3", "n4", "n5", "n6"}

func (g *eventGen) next(st *State) *pb.RingEvent {
	g.tenants = []string{"t1", "t2", "t3", "t4"}
	ms := int64(g.r.IntN(1 << 30))
	wrap := func(ev *pb.RingEvent) *pb.RingEvent { ev.UnixMs = ms; return ev }
	switch k := g.r.IntN(100); {
	case k < 15: // a node (re)registers, sometimes wiped
		id := nodePool[g.r.IntN(len(nodePool))]
		inc := st.Nodes[id].Incarnation
		if inc == "" || g.r.IntN(4) == 0 {
			g.inc++
			inc = fmt.Sprintf("%s-%d", id, g.inc)
		}
		return wrap(&pb.RingEvent{Event: &pb.RingEvent_Registered{Registered: &pb.NodeRegistered{NodeId: id, Incarnation: inc}}})
	case k < 30: // tenants come, go and change policy
		tn := g.tenants[g.r.IntN(len(g.tenants))]
		ev := &pb.TenantChanged{TenantId: tn, ReplicationFactor: uint32(1 + g.r.IntN(3)),
			ConflictPolicy: pb.ConflictPolicy(g.r.IntN(2)), Deleted: g.r.IntN(4) == 0}
		return wrap(&pb.RingEvent{Event: &pb.RingEvent_Tenant{Tenant: ev}})
	case k < 38: // a refill ends (sometimes on an old fold, or not refilling)
		id := nodePool[g.r.IntN(len(nodePool))]
		for _, cand := range nodePool {
			if st.Nodes[cand].Refilling && g.r.IntN(3) > 0 {
				id = cand
			}
		}
		basis := st.HoldersSeq + uint64(g.r.IntN(3))
		if basis > 0 && g.r.IntN(5) == 0 {
			basis--
		}
		basis = min(basis, st.Seq)
		return wrap(&pb.RingEvent{Event: &pb.RingEvent_RefillDone{RefillDone: &pb.RefillDone{
			NodeId: id, Incarnation: st.Nodes[id].Incarnation, BasisSeq: basis}}})
	case k < 65 && st.Change != nil: // a target reports (rarely a wrong one)
		ids := make([]string, 0, len(st.Change.Targets))
		for id := range st.Change.Targets {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		id, mig := nodePool[g.r.IntN(len(nodePool))], st.Change.ID
		if len(ids) > 0 && g.r.IntN(10) > 0 {
			id = ids[g.r.IntN(len(ids))]
		}
		if g.r.IntN(20) == 0 {
			mig = "stale"
		}
		return wrap(&pb.RingEvent{Event: &pb.RingEvent_TransferDone{TransferDone: &pb.TransferDone{MigrationId: mig, NodeId: id, Keys: uint64(g.r.IntN(100))}}})
	default: // a change
		g.mig++
		c := &pb.ChangeStarted{MigrationId: fmt.Sprintf("m%d", g.mig)}
		id := nodePool[g.r.IntN(len(nodePool))]
		switch {
		case len(st.Normal()) == 0 || g.r.IntN(30) == 0:
			c.Type = pb.ChangeType_BOOTSTRAP
			for _, id := range nodePool {
				if _, ok := st.Nodes[id]; ok && g.r.IntN(2) == 0 {
					c.NodeIds = append(c.NodeIds, id)
				}
			}
			c.Settings = &pb.ClusterSettings{VirtualNodes: uint32(1 + g.r.IntN(40)),
				HintMaxAgeMs: int64(1 + g.r.IntN(1000)), TombstoneGraceMs: int64(500 + g.r.IntN(1000))}
		case g.r.IntN(3) == 0:
			c.Type, c.NodeIds = pb.ChangeType_ADD_NODE, []string{id}
		case g.r.IntN(2) == 0:
			c.Type, c.NodeIds = pb.ChangeType_REMOVE_NODE, []string{id}
			if g.r.IntN(3) == 0 {
				c.Type = pb.ChangeType_FORCE_REMOVE_NODE
			}
		default:
			c.Type = pb.ChangeType_REPLICATION_FACTOR
			c.TenantId = g.tenants[g.r.IntN(len(g.tenants))]
			c.ReplicationFactor = uint32(1 + g.r.IntN(4))
		}
		return wrap(&pb.RingEvent{Event: &pb.RingEvent_Started{Started: c}})
	}
}
