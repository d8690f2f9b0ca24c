package main

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode"
)

// heartbeatMaxAge is how old a storage node's last heartbeat may be for the
// node to count as working: three missed beats, as coordinators judge it.
const heartbeatMaxAge = 3 * storagenode.DefaultHeartbeatInterval

// Readiness check names, as /readyz reports them.
const (
	checkNATS        = "nats"
	checkRing        = "ring"
	checkCoordinator = "coordinator"
	checkStorage     = "storage_engine"
)

// natsCheck passes while nc is connected.
func natsCheck(nc *nats.Conn) func(context.Context) error {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return errors.Newf("not connected to NATS (status %s)", nc.Status())
		}
		return nil
	}
}

// heartbeats follows storage nodes' heartbeats. A node beats only after
// reading its engine's statistics, so a fresh heartbeat proves that Pebble
// is open, that the node's NATS connection works and (through its epoch)
// that the node has folded a ring with members. It is how readiness checks
// a storage node without reaching into it.
type heartbeats struct {
	subs []*nats.Subscription
	now  func() time.Time

	mu   sync.Mutex
	want map[string]string // node id → expected incarnation ("" = any)
	last map[string]beat
}

type beat struct {
	at    time.Time
	epoch uint64
	state string
}

// watchHeartbeats subscribes to the heartbeats of the nodes in want (id →
// incarnation, "" for any), one subject per node, and returns once the
// server has the subscriptions, so a node started afterwards is seen from
// its first beat. A storage node process watches its own heartbeat only:
// that is all its NATS user may read of them (deploy/nats).
func watchHeartbeats(nc *nats.Conn, subjects bus.Subjects, want map[string]string) (*heartbeats, error) {
	h := &heartbeats{now: time.Now, want: want, last: map[string]beat{}}
	prefix := strings.TrimSuffix(subjects.Heartbeat("*"), "*")
	for id := range want {
		sub, err := nc.Subscribe(subjects.Heartbeat(id), func(m *nats.Msg) {
			h.record(strings.TrimPrefix(m.Subject, prefix), m.Data)
		})
		if err != nil {
			h.stop()
			return nil, errors.Wrap(err, "subscribe to storage node heartbeats")
		}
		h.subs = append(h.subs, sub)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		h.stop()
		return nil, errors.Wrap(err, "subscribe to storage node heartbeats")
	}
	return h, nil
}

func (h *heartbeats) record(id string, data []byte) {
	var hb pb.Heartbeat
	if proto.Unmarshal(data, &hb) != nil || hb.GetNodeId() != id {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	inc, ok := h.want[id]
	if !ok || (inc != "" && inc != hb.GetIncarnation()) {
		return
	}
	h.last[id] = beat{at: h.now(), epoch: hb.GetEpoch(), state: hb.GetState()}
}

// expect sets the incarnation expected of node id.
func (h *heartbeats) expect(id, incarnation string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.want[id] = incarnation
}

// engineCheck passes while every watched node has beaten recently.
func (h *heartbeats) engineCheck(context.Context) error {
	return h.each(func(id string, b beat, ok bool) error {
		if !ok {
			return errors.Newf("storage node %s: no heartbeat yet", id)
		}
		if age := h.now().Sub(b.at); age > heartbeatMaxAge {
			return errors.Newf("storage node %s: no heartbeat for %s (its storage engine or NATS connection is failing)",
				id, age.Round(time.Second))
		}
		return nil
	})
}

// ringCheck passes when every watched node has folded a ring with members.
func (h *heartbeats) ringCheck(context.Context) error {
	return h.each(func(id string, b beat, ok bool) error {
		if !ok {
			return errors.Newf("storage node %s: no heartbeat yet", id)
		}
		if b.epoch == 0 {
			return errors.Newf("storage node %s: the ring has no members yet; bootstrap it with `pairdb node add ID...`", id)
		}
		return nil
	})
}

// each runs fn for every watched node in id order and joins the failures
// into one message.
func (h *heartbeats) each(fn func(id string, b beat, ok bool) error) error {
	h.mu.Lock()
	ids := make([]string, 0, len(h.want))
	for id := range h.want {
		ids = append(ids, id)
	}
	last := make(map[string]beat, len(h.last))
	for id, b := range h.last {
		last[id] = b
	}
	h.mu.Unlock()
	sort.Strings(ids)
	var msgs []string
	for _, id := range ids {
		b, ok := last[id]
		if err := fn(id, b, ok); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		return errors.New(strings.Join(msgs, "; "))
	}
	return nil
}

// stop unsubscribes.
func (h *heartbeats) stop() {
	for _, sub := range h.subs {
		_ = sub.Unsubscribe()
	}
}
