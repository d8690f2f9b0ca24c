package storagenode

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ring"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// Gained arcs start empty (DESIGN.md §7). When a change makes this node a
// replica of an arc it did not replicate, whatever it still holds there is
// an orphan: left by an earlier membership (a removed node added back with
// its old disk, a cleanup that never ran), possibly older than a tombstone
// the replicas have since purged, so merging it in could bring back a
// deleted key. Before the node serves any request of the change's epoch it
// clears every arc it gains, once per change (a marker in the same synced
// batch says it did), and the transfer then fills them from the replicas.
//
// The gate holds requests back until the node has done that for the epoch
// they carry: checkEpoch waits for it as for the fold itself. The gain
// records also judge hints: a hint from before the node gained the key's
// arc is obsolete (the transfer brought what the replicas held), and is
// dropped rather than merged into data it predates.

const gainPrefix = "gain/"

// gainRecord is one change's gained arcs, kept for a hint's lifetime.
type gainRecord struct {
	// Seq is the change's start: hints minted before it are obsolete for
	// these arcs.
	Seq  uint64      `json:"seq"`
	AtMs int64       `json:"at_ms"`
	Arcs []gainedArc `json:"arcs"`
}

type gainedArc struct {
	Tenant string `json:"tenant"`
	Start  uint64 `json:"start"`
	End    uint64 `json:"end"`
}

// gate is the epoch up to which the node has prepared its storage, and the
// gain records it keeps.
type gate struct {
	mu       sync.Mutex
	prepared uint64
	advanced chan struct{} // closed and replaced when prepared moves
	gains    map[string]gainRecord
	cancel   context.CancelFunc
	done     chan struct{}
}

func newGate() *gate { return &gate{advanced: make(chan struct{}), gains: map[string]gainRecord{}} }

// wait blocks until the node has prepared epoch, or ctx ends.
func (g *gate) wait(ctx context.Context, epoch uint64) error {
	for {
		g.mu.Lock()
		prepared, ch := g.prepared, g.advanced
		g.mu.Unlock()
		if prepared >= epoch {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return errors.Wrapf(ctx.Err(), "storage not yet prepared for epoch %d (at %d)", epoch, prepared)
		}
	}
}

func (g *gate) advance(epoch uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if epoch > g.prepared {
		g.prepared = epoch
		close(g.advanced)
		g.advanced = make(chan struct{})
	}
}

// loadGains reads the gain records at start.
func (n *Node) loadGains() error {
	recs, err := n.eng.MetaPrefix(gainPrefix)
	if err != nil {
		return errors.Wrap(err, "load gain records")
	}
	for name, v := range recs {
		var r gainRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return errors.Wrapf(err, "gain record %s", name)
		}
		n.gate.gains[gainPrefix+name] = r
	}
	return nil
}

// startGate prepares every epoch the fold reaches, on its own goroutine:
// the driver's transfers can take hours, the gate must not wait for them.
func (n *Node) startGate() {
	ctx, cancel := context.WithCancel(context.Background())
	n.gate.cancel, n.gate.done = cancel, make(chan struct{})
	go func() {
		defer close(n.gate.done)
		failing := false
		for {
			changed := n.mem.Changed()
			err := n.prepare(n.mem.State())
			switch {
			case err != nil && !failing:
				n.log.Error("preparing storage for a new ring failed; requests of its epoch wait", zap.Error(err))
			case err == nil && failing:
				n.log.Info("storage prepared again")
			}
			failing = err != nil
			retry := time.After(time.Second)
			if !failing {
				retry = nil
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-retry:
			}
		}
	}()
}

func (n *Node) stopGate() {
	if n.gate.cancel != nil {
		n.gate.cancel()
		<-n.gate.done
	}
}

// prepare readies storage for st: it clears the arcs this node gains in
// the running change, unless it did for that change already, then opens
// the gate up to st's epoch. It is idempotent and serialized.
func (n *Node) prepare(st *membership.State) error {
	n.prepMu.Lock()
	defer n.prepMu.Unlock()
	if c := st.Change; c != nil && n.registered(st) {
		name := fmt.Sprintf("%s%020d-%s", gainPrefix, c.StartSeq, c.ID)
		n.gate.mu.Lock()
		_, done := n.gate.gains[name]
		n.gate.mu.Unlock()
		if !done {
			if err := n.clearGained(st, name); err != nil {
				return err
			}
		}
	}
	n.pruneGains(st.Settings.HintMaxAge)
	n.gate.advance(st.Epoch)
	return nil
}

// clearGained clears the arcs this node gains in st's change and records
// them under name, with writes to them held off by the placement lock.
func (n *Node) clearGained(st *membership.State, name string) error {
	rec := gainRecord{Seq: st.Change.StartSeq, AtMs: time.Now().UnixMilli()}
	var arcs []engine.TenantArc
	for _, mv := range st.Moves() {
		if slices.Contains(mv.Gainers(), n.cfg.ID) {
			arcs = append(arcs, engine.TenantArc{Tenant: mv.Tenant, Arc: mv.Arc})
			rec.Arcs = append(rec.Arcs, gainedArc{Tenant: mv.Tenant, Start: mv.Arc.Start, End: mv.Arc.End})
		}
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return errors.Wrap(err, "encode gain record")
	}
	n.placeMu.Lock()
	cleared, err := n.eng.ClearArcs(arcs, name, v)
	n.placeMu.Unlock()
	if err != nil {
		return errors.Wrapf(err, "clear the ranges gained in migration %s", st.Change.ID)
	}
	n.gate.mu.Lock()
	n.gate.gains[name] = rec
	n.gate.mu.Unlock()
	if len(arcs) > 0 {
		n.met.gainedCleared.Add(int(cleared))
		n.log.Info("ranges gained in a change start empty", zap.String("migration", st.Change.ID),
			zap.Int("ranges", len(arcs)), zap.Uint64("orphan_keys_cleared", cleared))
	}
	return nil
}

// pruneGains forgets gain records no hint can predate any more.
func (n *Node) pruneGains(hintMaxAge time.Duration) {
	cutoff := time.Now().Add(-hintMaxAge).UnixMilli()
	n.gate.mu.Lock()
	var old []string
	for name, r := range n.gate.gains {
		if r.AtMs < cutoff {
			old = append(old, name)
		}
	}
	n.gate.mu.Unlock()
	for _, name := range old {
		if err := n.eng.DeleteMetaPrefix(name); err != nil {
			n.log.Warn("drop an old gain record", zap.String("record", name), zap.Error(err))
			return
		}
		n.gate.mu.Lock()
		delete(n.gate.gains, name)
		n.gate.mu.Unlock()
	}
}

// gainedSince reports whether this node gained the arc holding (tenant,
// key) in a change that started after epoch: a hint minted at epoch is then
// obsolete here.
func (n *Node) gainedSince(tenant, key string, epoch uint64) bool {
	h := keyspace.Hash(tenant, key)
	n.gate.mu.Lock()
	defer n.gate.mu.Unlock()
	for _, r := range n.gate.gains {
		if r.Seq <= epoch {
			continue
		}
		for _, a := range r.Arcs {
			if a.Tenant == tenant && (ring.Arc{Start: a.Start, End: a.End}).Contains(h) {
				return true
			}
		}
	}
	return false
}
