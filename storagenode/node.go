// Package storagenode is the storage node: a NATS micro service in front of
// one Pebble engine (DESIGN.md §2, §7). It serves apply (mint a version),
// merge (fold in a replicated object) and read on the node's own subjects,
// serves scan, digest and digests for range transfers and anti-entropy,
// and publishes heartbeats. With a Membership it follows the ring log: it
// registers itself, checks the epoch of every request, pulls the ranges it
// gains in a change and deletes the ranges it lost after a grace period.
//
// The package serves requests and wires the rest, which depends on it
// only through small interfaces and never imports it:
//
//	engine/    the Pebble engine (no NATS)
//	transfer/  range moves, refills, cleanup and their checkpoints
//	heal/      hint replay, anti-entropy and tombstone collection
package storagenode

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/storagenode/engine"
	"github.com/pairdb/pairdb/storagenode/heal"
	"github.com/pairdb/pairdb/storagenode/transfer"
)

const (
	// ServiceName and ServiceVersion identify nodes in `nats micro ls`.
	ServiceName    = "pairdb-node"
	ServiceVersion = "0.1.0"
)

// Node is a running storage node. Create it with Start; stop it with Stop.
// Its methods may be called from any goroutine.
type Node struct {
	cfg       Config
	log       *zap.Logger
	nc        *nats.Conn
	eng       *engine.Engine
	svc       *bus.Service
	lim       *bus.Limiter
	met       *nodeMetrics
	xferMet   *transfer.Metrics
	healMet   *heal.Metrics
	hbSubject string
	hbStop    chan struct{}
	hbDone    chan struct{}

	// mem is nil in static mode. drv is the membership driver (nil in
	// static mode).
	mem Membership
	drv *driver
	// hints drains the node's hinted handoff (nil without an inbox).
	hints *heal.Hints
	// ae is the anti-entropy worker (nil in static mode).
	ae *heal.AntiEntropy
	// origins sweeps expired origin records.
	origins *originSweeper
	// marks says which incarnation of each tenant the stored data is
	// (tenants.go).
	marks *tenantMarks
	// placeMu orders local writes against range deletions: apply and
	// merge hold it shared (so do hint replay and anti-entropy, through its
	// RLocker); cleanup takes it exclusively after rechecking that the ring
	// has not moved, so a write routed on a newer ring is never deleted.
	// Clearing gained arcs and dropping a tenant's data also take it
	// exclusively.
	placeMu sync.RWMutex
	// gate is the epoch the node's storage is prepared for (gains.go);
	// prepMu serializes the preparing.
	gate   *gate
	prepMu sync.Mutex

	stopMu  sync.Mutex
	stopped bool
	stopErr error
}

// Start opens the node's engine, registers its endpoints and starts its
// heartbeat. nc stays owned by the caller and must outlive the node.
func Start(nc *nats.Conn, cfg Config) (*Node, error) {
	if nc == nil {
		return nil, errors.New("storage node: a NATS connection is required")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With(zap.String("node", cfg.ID))
	if !cfg.Sync {
		log.Warn("sync is off: acknowledged writes can be lost on a crash; use this only for benchmarks")
	}
	eng, err := engine.Open(cfg.DataDir, engine.Options{Sync: cfg.Sync, CacheBytes: cfg.CacheBytes,
		WALMinSyncInterval: cfg.WALMinSyncInterval, Logger: log.Named("engine"), Metrics: cfg.Metrics, MetricsNode: cfg.ID,
		MaxObjectBytes: maxObjectBytes(nc)})
	if err != nil {
		return nil, errors.Wrapf(err, "storage node %s", cfg.ID)
	}
	n := newNode(nc, cfg, log, eng)
	if err := n.open(); err != nil {
		return nil, errors.CombineErrors(err, eng.Close())
	}
	n.startWorkers()
	log.Info("storage node started", zap.String("incarnation", eng.Incarnation()),
		zap.String("subjects", cfg.Subjects.Node(cfg.ID, "*")), zap.Bool("membership", n.mem != nil))
	return n, nil
}

func newNode(nc *nats.Conn, cfg Config, log *zap.Logger, eng *engine.Engine) *Node {
	met := newNodeMetrics(cfg.Metrics, cfg.ID, bus.OpApply, bus.OpMerge, bus.OpRead, bus.OpScan, bus.OpDigest, bus.OpDigests, bus.OpRepair)
	return &Node{
		marks:     &tenantMarks{m: map[string]tenantMark{}},
		gate:      newGate(),
		cfg:       cfg,
		log:       log,
		nc:        nc,
		eng:       eng,
		lim:       bus.NewLimiter(cfg.MaxConcurrent),
		met:       met,
		xferMet:   transfer.NewMetrics(cfg.Metrics, cfg.ID),
		healMet:   heal.NewMetrics(cfg.Metrics, cfg.ID, met.mergeChanged),
		mem:       cfg.Membership,
		hbSubject: cfg.Subjects.Heartbeat(cfg.ID),
		hbStop:    make(chan struct{}),
		hbDone:    make(chan struct{}),
	}
}

// open loads the node's durable state and registers its endpoints. On
// failure nothing of the node runs any more; the caller closes the engine.
func (n *Node) open() error {
	id := n.cfg.ID
	if err := n.loadTenantMarks(); err != nil {
		return errors.Wrapf(err, "storage node %s", id)
	}
	if err := n.loadGains(); err != nil {
		return errors.Wrapf(err, "storage node %s", id)
	}
	if n.mem != nil {
		// Before the endpoints: a request of a new epoch waits until the
		// arcs it gains are cleared.
		n.startGate()
		// Built before the endpoints are registered: the repair endpoint
		// queues rounds on it; it starts working with the driver.
		n.ae = n.newAntiEntropy()
	}
	if err := n.register(); err != nil {
		n.stopGate()
		return errors.Wrapf(err, "storage node %s: register service", id)
	}
	// A round trip makes the server register the subscriptions before Start
	// returns: whoever started the node may send to it at once.
	if err := n.nc.FlushTimeout(5 * time.Second); err != nil {
		n.stopGate()
		return errors.CombineErrors(errors.Wrapf(err, "storage node %s: flush subscriptions", id),
			n.svc.Stop(context.Background()))
	}
	return nil
}

// startWorkers starts the node's goroutines once its endpoints serve: the
// membership driver and anti-entropy (with a Membership), hint replay,
// the origin sweeper and the heartbeat. Stop stops each.
func (n *Node) startWorkers() {
	if n.mem != nil {
		// Registered before the first heartbeat when the log is reachable;
		// otherwise the driver keeps trying.
		if err := n.registerSelf(context.Background()); err != nil {
			n.log.Warn("registration failed; retrying in the background", zap.Error(err))
		}
		n.startDriver()
		n.ae.Start()
	}
	n.startHints()
	n.startOriginSweeper()
	go n.heartbeats()
}

// objectEnvelope is the room left in a message around one stored object
// (request or reply fields, headers).
const objectEnvelope = 64 << 10

// maxObjectBytes is the largest object this node lets a write store: what
// one message on nc can carry with room for its envelope, so every stored
// object can still be read, repaired, hinted and transferred.
func maxObjectBytes(nc *nats.Conn) int {
	return max(int(nc.MaxPayload())-objectEnvelope, objectEnvelope)
}

// ID is the node id from the config.
func (n *Node) ID() string { return n.cfg.ID }

// Incarnation is the engine's incarnation id, the DVV actor of this node.
func (n *Node) Incarnation() string { return n.eng.Incarnation() }

// Local reads what this node stores for (tenant, key) without NATS: tests
// and tools that must see a replica's state while its connection is cut.
func (n *Node) Local(tenant, key string) (dvv.Object, bool, error) { return n.eng.Get(tenant, key) }

// Origins lists this node's origin records of tenant (see engine.Origins):
// checkers use them to prove no write was minted twice.
func (n *Node) Origins(tenant string) (map[string]dvv.Dot, error) { return n.eng.Origins(tenant) }

// TenantKeys counts the keys this node stores for tenant (checkers use it
// to prove a deleted tenant's data is gone).
func (n *Node) TenantKeys(tenant string) (uint64, error) { return n.eng.TenantKeys(tenant) }

// Keys approximates the keys this node stores (see engine.Keys).
func (n *Node) Keys() uint64 { return n.eng.Keys() }

// Stop shuts the node down in order: the membership driver stops (a
// transfer in progress keeps its checkpoint), hint replay stops (unacked
// hints are delivered again next time), heartbeats stop (peers start
// to suspect it), the service stops taking requests, in-flight requests finish
// (or ctx ends), then Pebble closes. A second call returns the first one's
// result. If ctx ends first, Pebble still closes after the requests that
// are inside the engine, and ctx's error is returned.
func (n *Node) Stop(ctx context.Context) error {
	n.stopMu.Lock()
	defer n.stopMu.Unlock()
	if n.stopped {
		return n.stopErr
	}
	n.stopped = true

	if n.drv != nil {
		n.drv.stop()
	}
	if n.ae != nil {
		n.ae.Stop()
	}
	if n.hints != nil {
		n.hints.Stop()
	}
	n.origins.halt()
	close(n.hbStop)
	<-n.hbDone
	var errs error
	if err := n.svc.Stop(ctx); err != nil {
		errs = errors.CombineErrors(errs, errors.Wrap(err, "stop service"))
	}
	if err := n.lim.Drain(ctx); err != nil {
		n.log.Warn("requests still in flight at stop deadline", zap.Error(err))
		errs = errors.CombineErrors(errs, errors.Wrap(err, "wait for in-flight requests"))
	}
	n.stopGate()
	if err := n.eng.Close(); err != nil {
		errs = errors.CombineErrors(errs, err)
	}
	n.stopErr = errs
	n.log.Info("storage node stopped", zap.Error(errs))
	return errs
}
