// Package storagenode is the storage-node adapter: a NATS micro service in
// front of one Pebble engine (DESIGN.md §2, §7). It serves apply (mint a
// version), merge (fold in a replicated object) and read on the node's own
// subjects, serves scan and digest for range transfers, and publishes
// heartbeats. With a Membership it follows the ring log: it registers
// itself, checks the epoch of every request, pulls the ranges it gains in a
// change and deletes the ranges it lost after a grace period.
package storagenode

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
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
	// placeMu orders local writes against cleanup: apply and merge hold it
	// shared, a range deletion exclusively after rechecking that the ring
	// has not moved, so a write routed on a newer ring is never deleted.
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
	met := newNodeMetrics(cfg.Metrics, cfg.ID, bus.OpApply, bus.OpMerge, bus.OpRead, bus.OpScan, bus.OpDigest, bus.OpDigests, bus.OpRepair)
	n := &Node{
		marks:     &tenantMarks{m: map[string]tenantMark{}},
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
	if err := n.loadTenantMarks(); err != nil {
		return nil, errors.CombineErrors(errors.Wrapf(err, "storage node %s", cfg.ID), eng.Close())
	}
	n.gate = newGate()
	if err := n.loadGains(); err != nil {
		return nil, errors.CombineErrors(errors.Wrapf(err, "storage node %s", cfg.ID), eng.Close())
	}
	if n.mem != nil {
		// Before the endpoints: a request of a new epoch waits until the
		// arcs it gains are cleared.
		n.startGate()
	}
	if n.mem != nil {
		// Built before the endpoints are registered: the repair endpoint
		// queues rounds on it; it starts working with the driver.
		n.ae = n.newAntiEntropy()
	}
	if err := n.register(); err != nil {
		n.stopGate()
		return nil, errors.CombineErrors(errors.Wrapf(err, "storage node %s: register service", cfg.ID), eng.Close())
	}
	// A round trip makes the server register the subscriptions before Start
	// returns: whoever started the node may send to it at once.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		n.stopGate()
		return nil, errors.CombineErrors(errors.Wrapf(err, "storage node %s: flush subscriptions", cfg.ID),
			errors.CombineErrors(n.svc.Stop(context.Background()), eng.Close()))
	}
	if n.mem != nil {
		// Registered before the first heartbeat when the log is reachable;
		// otherwise the driver keeps trying.
		if err := n.registerSelf(context.Background()); err != nil {
			log.Warn("registration failed; retrying in the background", zap.Error(err))
		}
		n.startDriver()
		n.ae.Start()
	}
	n.startHints()
	n.startOriginSweeper()
	go n.heartbeats()
	log.Info("storage node started", zap.String("incarnation", eng.Incarnation()),
		zap.String("subjects", cfg.Subjects.Node(cfg.ID, "*")), zap.Bool("membership", n.mem != nil))
	return n, nil
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

func (n *Node) register() error {
	svc, err := bus.AddService(n.nc, micro.Config{
		Name:        ServiceName,
		Version:     ServiceVersion,
		Description: "PairDB storage node",
		Metadata:    map[string]string{"node_id": n.cfg.ID, "incarnation": n.eng.Incarnation()},
		// Each node's subjects are its own, so a queue group only matters
		// if two processes are misconfigured with one id; then it makes
		// exactly one of them handle each request, instead of both minting
		// a version for the same write.
		QueueGroup: "pairdb-node-" + n.cfg.ID,
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			n.log.Error("service subscription error", zap.String("subject", e.Subject), zap.String("error", e.Description))
		},
	})
	if err != nil {
		return err
	}
	// Requests that arrive after Stop began (micro subscriptions drain
	// asynchronously) are refused by the draining limiter with UNAVAILABLE.
	srv := &bus.Server{Conn: n.nc, Limiter: n.lim, Timeout: n.cfg.RequestTimeout, Log: n.log, Observe: n.met.observe, Faults: n.cfg.Faults}
	endpoints := []struct {
		op string
		h  micro.Handler
	}{
		{bus.OpApply, bus.Endpoint(srv, bus.OpApply,
			func() *pb.ApplyRequest { return &pb.ApplyRequest{} },
			func() *pb.ApplyResponse { return &pb.ApplyResponse{} }, n.apply)},
		{bus.OpMerge, bus.Endpoint(srv, bus.OpMerge,
			func() *pb.MergeRequest { return &pb.MergeRequest{} },
			func() *pb.MergeResponse { return &pb.MergeResponse{} }, n.merge)},
		{bus.OpRead, bus.Endpoint(srv, bus.OpRead,
			func() *pb.ReadRequest { return &pb.ReadRequest{} },
			func() *pb.ReadResponse { return &pb.ReadResponse{} }, n.read)},
		{bus.OpScan, bus.Endpoint(srv, bus.OpScan,
			func() *pb.ScanRequest { return &pb.ScanRequest{} },
			func() *pb.ScanResponse { return &pb.ScanResponse{} }, n.scan)},
		{bus.OpDigest, bus.Endpoint(srv, bus.OpDigest,
			func() *pb.DigestRequest { return &pb.DigestRequest{} },
			func() *pb.DigestResponse { return &pb.DigestResponse{} }, n.digest)},
		{bus.OpDigests, bus.Endpoint(srv, bus.OpDigests,
			func() *pb.RangeDigestsRequest { return &pb.RangeDigestsRequest{} },
			func() *pb.RangeDigestsResponse { return &pb.RangeDigestsResponse{} }, n.digests)},
		{bus.OpRepair, bus.Endpoint(srv, bus.OpRepair,
			func() *pb.RepairRequest { return &pb.RepairRequest{} },
			func() *pb.RepairResponse { return &pb.RepairResponse{} }, n.repair)},
	}
	for _, ep := range endpoints {
		subject := n.cfg.Subjects.Node(n.cfg.ID, ep.op)
		if err := svc.AddEndpoint(ep.op, subject, ep.h); err != nil {
			return errors.CombineErrors(errors.Wrapf(err, "on %s", subject), svc.Stop(context.Background()))
		}
	}
	n.svc = svc
	return nil
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

// Every response carries the node's epoch (0 in static mode); see
// checkEpoch for how a request's epoch is judged.

func (n *Node) apply(ctx context.Context, _ string, req *pb.ApplyRequest) (*pb.ApplyResponse, error) {
	if err := validateTarget(req.GetTenantId(), req.GetKey()); err != nil {
		return nil, err
	}
	deadline, err := n.deadlineOf(bus.OpApply, req.GetDeadlineUnixMs(), true)
	if err != nil {
		return nil, err
	}
	epoch, err := n.checkEpoch(ctx, bus.OpApply, req.GetEpoch())
	if err != nil {
		return &pb.ApplyResponse{Epoch: epoch}, err
	}
	if _, err := n.liveTenant(req.GetTenantId(), req.GetTenantIncarnation()); err != nil {
		return &pb.ApplyResponse{Epoch: epoch}, err
	}
	causal := dvvpb.ClockFromProto(req.GetContext())
	if err := n.knownActors(causal); err != nil {
		return &pb.ApplyResponse{Epoch: epoch}, err
	}
	if err := n.checkApplyTargets(req); err != nil {
		return &pb.ApplyResponse{Epoch: epoch}, err
	}
	var (
		forward func(dvv.Object, bool)
		wire    *pb.Object // the forwarded object's wire form, reused in the answer
	)
	if len(req.GetForwards()) > 0 {
		forward = func(obj dvv.Object, fresh bool) {
			wire = dvvpb.ObjectToProto(obj)
			n.forward(req, wire, fresh)
		}
	}
	n.placeMu.RLock()
	defer n.placeMu.RUnlock()
	m, err := n.eng.Mint(engine.Write{
		Tenant: req.GetTenantId(), Key: req.GetKey(), Context: causal,
		Value: req.GetValue(), Tombstone: req.GetTombstone(),
		Policy: dvvpb.PolicyFromProto(n.policyOf(req.GetTenantId(), req.GetPolicy())), MaxSiblings: int(req.GetMaxSiblings()),
		MaxObjectBytes: int(min(req.GetMaxObjectBytes(), uint64(maxInt))),
		NowMs:          time.Now().UnixMilli(), Origin: req.GetOrigin(), RecordOrigin: req.GetRecordOrigin(),
		Deadline: deadline, Forward: forward,
	})
	if err != nil {
		return &pb.ApplyResponse{Epoch: epoch}, n.failed(bus.OpApply, err)
	}
	if wire == nil {
		wire = dvvpb.ObjectToProto(m.Object)
	}
	return &pb.ApplyResponse{Object: wire, Epoch: epoch, Existing: m.Existing, Minted: m.Record}, nil
}

const maxInt = int(^uint(0) >> 1)

// forward sends a freshly minted object to the replicas the apply names, as
// merges answered straight to the coordinator. It only publishes (no
// waiting: it runs under the key's lock); a copy that does not arrive is
// the coordinator's to notice (no answer by its deadline) and to hint. The
// merges carry the apply's deadline, so a copy delayed past it is refused
// rather than taken in after the coordinator gave up.
func (n *Node) forward(req *pb.ApplyRequest, obj *pb.Object, fresh bool) {
	data, err := proto.Marshal(&pb.MergeRequest{
		TenantId: req.GetTenantId(), Key: req.GetKey(), Object: obj,
		Policy: req.GetPolicy(), Epoch: req.GetEpoch(),
		DeadlineUnixMs: req.GetDeadlineUnixMs(), Minted: fresh, TenantIncarnation: req.GetTenantIncarnation(),
	})
	if err != nil {
		n.log.Error("encode forwarded merge", zap.Error(err))
		return
	}
	for _, f := range req.GetForwards() {
		msg := &nats.Msg{Subject: n.cfg.Subjects.Node(f.GetNodeId(), bus.OpMerge), Reply: f.GetReply(), Data: data}
		if err := n.nc.PublishMsg(msg); err != nil {
			n.met.forwardErr.Inc()
			n.log.Warn("forwarding a write failed", zap.String("to", f.GetNodeId()), zap.Error(err))
		}
	}
}

func (n *Node) merge(ctx context.Context, _ string, req *pb.MergeRequest) (*pb.MergeResponse, error) {
	if err := validateTarget(req.GetTenantId(), req.GetKey()); err != nil {
		return nil, err
	}
	if req.GetObject() == nil {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "merge needs the object to merge")
	}
	deadline, err := n.deadlineOf(bus.OpMerge, req.GetDeadlineUnixMs(), false)
	if err != nil {
		return nil, err
	}
	epoch, err := n.checkEpoch(ctx, bus.OpMerge, req.GetEpoch())
	if err != nil {
		return &pb.MergeResponse{Epoch: epoch}, err
	}
	if _, err := n.liveTenant(req.GetTenantId(), req.GetTenantIncarnation()); err != nil {
		return &pb.MergeResponse{Epoch: epoch}, err
	}
	obj := dvvpb.ObjectFromProto(req.GetObject())
	if err := n.knownActors(obj.Clock); err != nil {
		return &pb.MergeResponse{Epoch: epoch}, err
	}
	n.placeMu.RLock()
	defer n.placeMu.RUnlock()
	_, changed, err := n.eng.MergeWith(req.GetTenantId(), req.GetKey(), obj, dvvpb.PolicyFromProto(n.policyOf(req.GetTenantId(), req.GetPolicy())),
		engine.MergeOptions{Deadline: deadline, Minted: req.GetMinted()})
	if err != nil {
		return &pb.MergeResponse{Epoch: epoch}, n.failed(bus.OpMerge, err)
	}
	if changed {
		n.met.mergeChanged.Inc()
	}
	return &pb.MergeResponse{Epoch: epoch}, nil
}

// read answers found=false only when nothing is stored. A key holding only
// tombstones is found here and its object returned: the coordinator needs
// the tombstones' clock to merge replicas and to delete causally; it decides
// what a client sees (KEY_NOT_FOUND). With an origin it also answers this
// replica's record of that write (resolving a retry).
func (n *Node) read(ctx context.Context, _ string, req *pb.ReadRequest) (*pb.ReadResponse, error) {
	if err := validateTarget(req.GetTenantId(), req.GetKey()); err != nil {
		return nil, err
	}
	epoch, err := n.checkEpoch(ctx, bus.OpRead, req.GetEpoch())
	if err != nil {
		return &pb.ReadResponse{Epoch: epoch}, err
	}
	if len(req.GetOrigin()) == 0 {
		// A retry's search for its write (an origin) is answered: what
		// this node holds is all it can say, and silence would leave the
		// retry unresolved until the refill ends.
		if err := n.checkServing(bus.OpRead); err != nil {
			return &pb.ReadResponse{Epoch: epoch}, err
		}
	}
	if _, err := n.liveTenant(req.GetTenantId(), req.GetTenantIncarnation()); err != nil {
		return &pb.ReadResponse{Epoch: epoch}, err
	}
	obj, found, err := n.eng.Get(req.GetTenantId(), req.GetKey())
	if err != nil {
		return &pb.ReadResponse{Epoch: epoch}, n.failed(bus.OpRead, err)
	}
	resp := &pb.ReadResponse{Found: found, Epoch: epoch}
	if found {
		resp.Object = dvvpb.ObjectToProto(obj)
	}
	if o := req.GetOrigin(); len(o) > 0 {
		if resp.Origin, err = n.eng.OriginRecord(req.GetTenantId(), o); err != nil {
			return &pb.ReadResponse{Epoch: epoch}, n.failed(bus.OpRead, err)
		}
	}
	return resp, nil
}

// failed logs errors nobody but an operator can act on; typed errors go
// back to the caller as they are.
func (n *Node) failed(op string, err error) error {
	if status.CodeOf(err) == pb.ErrorCode_INTERNAL {
		n.log.Error("request failed", zap.String("op", op), zap.Error(err))
	}
	return err
}

func validateTarget(tenant, key string) error {
	if err := keyspace.ValidateTenantID(tenant); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant_id")
	}
	if err := keyspace.ValidateKey(key); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid key")
	}
	return nil
}

// heartbeats publishes the node's heartbeat. It beats at once, so a
// restarted node is seen without waiting a full interval.
func (n *Node) heartbeats() {
	defer close(n.hbDone)
	t := time.NewTicker(n.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		err := n.beat()
		switch {
		case err != nil && !failing:
			n.log.Warn("heartbeat failed; will keep trying", zap.Error(err))
		case err == nil && failing:
			n.log.Info("heartbeat recovered")
		}
		if err != nil {
			n.met.heartbeatErr.Inc()
		}
		failing = err != nil
		select {
		case <-n.hbStop:
			return
		case <-t.C:
		}
	}
}

func (n *Node) beat() error {
	st, err := n.eng.Stats()
	if err != nil {
		return errors.Wrap(err, "read engine stats")
	}
	n.met.diskBytes.Set(float64(st.DiskBytes))
	hb := &pb.Heartbeat{
		NodeId:      n.cfg.ID,
		Incarnation: n.eng.Incarnation(),
		UnixMs:      time.Now().UnixMilli(),
		DiskBytes:   st.DiskBytes,
	}
	n.heartbeatState(hb)
	data, err := proto.Marshal(hb)
	if err != nil {
		return errors.Wrap(err, "encode heartbeat")
	}
	return errors.Wrapf(n.nc.Publish(n.hbSubject, data), "publish on %s", n.hbSubject)
}

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
