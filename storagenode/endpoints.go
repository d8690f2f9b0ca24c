package storagenode

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// The node's endpoints: apply (mint a version), merge (fold in a
// replicated object) and read; scan, digest and digests for transfers and
// anti-entropy are in scan.go, repair in workers.go.

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
	srv := &bus.Server{Conn: n.nc, Limiter: n.lim, Timeout: n.cfg.RequestTimeout, Log: n.log, Observe: n.met.observe, Middleware: n.cfg.Middleware}
	g := &bus.Group{Server: srv, Service: svc, Subject: func(op string) string { return n.cfg.Subjects.Node(n.cfg.ID, op) }}
	bus.Handle(g, bus.OpApply, n.apply)
	bus.Handle(g, bus.OpMerge, n.merge)
	bus.Handle(g, bus.OpRead, n.read)
	bus.Handle(g, bus.OpScan, n.scan)
	bus.Handle(g, bus.OpDigest, n.digest)
	bus.Handle(g, bus.OpDigests, n.digests)
	bus.Handle(g, bus.OpRepair, n.repair)
	if err := g.Err(); err != nil {
		return errors.CombineErrors(err, svc.Stop(context.Background()))
	}
	n.svc = svc
	return nil
}

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
	var forward func(dvv.Object, []byte, bool)
	if len(req.GetForwards()) > 0 {
		forward = func(obj dvv.Object, encoded []byte, fresh bool) { n.forward(req, obj, encoded, fresh) }
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
	return &pb.ApplyResponse{Object: dvvpb.ObjectToProto(m.Object), Epoch: epoch, Existing: m.Existing, Minted: m.Record}, nil
}

const maxInt = int(^uint(0) >> 1)

// mergeObjectField is MergeRequest.object's field number.
var mergeObjectField = (&pb.MergeRequest{}).ProtoReflect().Descriptor().Fields().ByName("object").Number()

// encodeForward encodes the merge a minter forwards. The object's bytes are
// the ones its commit stores (encoded), appended as the object field, so
// one encoding serves the store and the forward (protobuf takes a message
// field wherever it stands); a stored object found again (encoded nil) is
// encoded here.
func encodeForward(req *pb.ApplyRequest, obj dvv.Object, encoded []byte, fresh bool) ([]byte, error) {
	m := &pb.MergeRequest{
		TenantId: req.GetTenantId(), Key: req.GetKey(), Policy: req.GetPolicy(), Epoch: req.GetEpoch(),
		DeadlineUnixMs: req.GetDeadlineUnixMs(), Minted: fresh, TenantIncarnation: req.GetTenantIncarnation(),
	}
	if encoded == nil {
		m.Object = dvvpb.ObjectToProto(obj)
		return proto.Marshal(m)
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	data = protowire.AppendTag(data, mergeObjectField, protowire.BytesType)
	return protowire.AppendBytes(data, encoded), nil
}

// forward sends a freshly minted object to the replicas the apply names, as
// merges answered straight to the coordinator. It only publishes (no
// waiting: it runs under the key's lock); a copy that does not arrive is
// the coordinator's to notice (no answer by its deadline) and to hint. The
// merges carry the apply's deadline, so a copy delayed past it is refused
// rather than taken in after the coordinator gave up.
func (n *Node) forward(req *pb.ApplyRequest, obj dvv.Object, encoded []byte, fresh bool) {
	data, err := encodeForward(req, obj, encoded, fresh)
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
	if err := keyspace.ValidateTarget(tenant, key); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad request")
	}
	return nil
}
