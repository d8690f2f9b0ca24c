package coordinator

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// writeReq is a validated put or delete.
type writeReq struct {
	op        string
	tenant    *pb.Tenant
	key       string
	value     []byte
	tombstone bool
	context   []*pb.ClockEntry
	level     quorum.Level
	idemKey   string
}

func (s *Service) put(ctx context.Context, subject string, req *pb.PutRequest) (resp *pb.PutResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpPut, level, start, errLabel(err)) }()
	w, err := s.prepareWrite(ctx, subject, bus.OpPut, req.GetKey(), req.GetValue(), req.GetConsistency(), req.GetVectorClock(), req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	level = w.level.String()
	resp = &pb.PutResponse{Key: w.key, Consistency: level, IdempotencyKey: w.idemKey}
	err = s.runIdempotent(ctx, w, resp, func() { resp.Duplicate = true }, func() error {
		obj, acks, err := s.write(ctx, w)
		if err != nil {
			return err
		}
		resp.VectorClock, resp.ReplicaCount = obj.GetClock(), uint32(acks)
		return nil
	})
	return resp, err
}

func (s *Service) delete(ctx context.Context, subject string, req *pb.DeleteRequest) (resp *pb.DeleteResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpDelete, level, start, errLabel(err)) }()
	w, err := s.prepareWrite(ctx, subject, bus.OpDelete, req.GetKey(), nil, req.GetConsistency(), req.GetVectorClock(), req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	w.tombstone = true
	level = w.level.String()
	resp = &pb.DeleteResponse{Key: w.key, Consistency: level, IdempotencyKey: w.idemKey}
	err = s.runIdempotent(ctx, w, resp, func() { resp.Duplicate = true }, func() error {
		obj, acks, err := s.write(ctx, w)
		if err != nil {
			return err
		}
		resp.VectorClock, resp.ReplicaCount = obj.GetClock(), uint32(acks)
		return nil
	})
	return resp, err
}

// prepareWrite validates a write and loads its tenant.
func (s *Service) prepareWrite(ctx context.Context, subject, op, key string, value []byte, consistency string,
	vc []*pb.ClockEntry, idemKey string) (*writeReq, error) {
	t, err := s.tenantOf(ctx, subject)
	if err != nil {
		return nil, err
	}
	if err := keyspace.ValidateKey(key); err != nil {
		return nil, bus.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad key")
	}
	if max := t.GetMaxValueBytes(); uint64(len(value)) > max {
		return nil, bus.Errorf(pb.ErrorCode_VALUE_TOO_LARGE,
			"value is %d bytes; tenant %q allows at most %d", len(value), t.GetTenantId(), max)
	}
	level, err := levelOf(t, consistency)
	if err != nil {
		return nil, err
	}
	if len(idemKey) > 256 {
		return nil, bus.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "idempotency_key is %d bytes; the limit is 256", len(idemKey))
	}
	return &writeReq{op: op, tenant: t, key: key, value: value, context: vc, level: level, idemKey: idemKey}, nil
}

func (s *Service) tenantOf(ctx context.Context, subject string) (*pb.Tenant, error) {
	id, ok := s.cfg.Subjects.TenantOf(subject)
	if !ok {
		return nil, bus.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "subject %q names no tenant", subject)
	}
	return s.tenants.get(ctx, id)
}

func levelOf(t *pb.Tenant, consistency string) (quorum.Level, error) {
	if consistency == "" {
		consistency = t.GetDefaultConsistency()
	}
	l, err := quorum.ParseLevel(consistency)
	if err != nil {
		return 0, bus.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad consistency")
	}
	return l, nil
}

// runIdempotent runs a write at most once per (tenant, idempotency key). On
// a duplicate, resp is replaced by the stored response and markDup is
// called. A failed write releases its claim so the client's retry can run.
func (s *Service) runIdempotent(ctx context.Context, w *writeReq, resp proto.Message, markDup func(), run func() error) error {
	if w.idemKey == "" || s.cfg.Idempotency == nil {
		return run()
	}
	claim, err := s.cfg.Idempotency.Begin(ctx, w.tenant.GetTenantId(), w.idemKey, w.hash())
	if err != nil {
		return err
	}
	if stored, ok := claim.Done(); ok {
		if err := proto.Unmarshal(stored, resp); err != nil {
			return bus.Wrap(pb.ErrorCode_INTERNAL, err, "stored idempotent response is unreadable")
		}
		markDup()
		s.m.idempotencyHits.Inc()
		return nil
	}
	if err := run(); err != nil {
		// The request context may be spent; releasing the claim gets its own
		// deadline.
		actx, cancel := context.WithTimeout(context.Background(), s.cfg.ReplicaTimeout)
		defer cancel()
		if aerr := claim.Abort(actx); aerr != nil {
			s.log.Warn("releasing idempotency claim failed; a retry waits for it to expire",
				zap.String("tenant", w.tenant.GetTenantId()), zap.Error(aerr))
		}
		return err
	}
	data, err := proto.Marshal(resp)
	if err == nil {
		err = claim.Complete(ctx, data)
	}
	if err != nil {
		// The write itself is durable at W replicas; failing the request now
		// would invite a retry that could apply it twice.
		s.log.Warn("write applied but its idempotency record was not saved",
			zap.String("tenant", w.tenant.GetTenantId()), zap.Error(err))
	}
	return nil
}

// hash identifies the payload of a write for idempotency.
func (w *writeReq) hash() []byte {
	return requestHash(w.op, w.key, w.value, w.tombstone, w.context)
}

// write runs the replica protocol: the first reachable replica mints the
// version (apply), the others merge its result, and the answer goes out as
// soon as W replicas hold it. Merges still running then finish in the
// background under their own deadline.
func (s *Service) write(ctx context.Context, w *writeReq) (*pb.Object, int, error) {
	r := s.cfg.Ring.Load()
	tid := w.tenant.GetTenantId()
	n := int(w.tenant.GetReplicationFactor())
	if r.Size() < n {
		return nil, 0, bus.Errorf(pb.ErrorCode_UNAVAILABLE,
			"tenant %q needs %d replicas but the ring has %d storage nodes", tid, n, r.Size())
	}
	prefs := r.Preference(keyspace.Hash(tid, w.key), n)
	need := quorum.Required(w.level, n)
	apply := &pb.ApplyRequest{
		TenantId: tid, Key: w.key, Value: w.value, Tombstone: w.tombstone, Context: w.context,
		Policy: policyOf(w.tenant), MaxSiblings: w.tenant.GetMaxSiblings(), Epoch: r.Epoch(),
	}
	var (
		obj     *pb.Object
		coord   string
		lastErr error
	)
	for _, node := range s.liveness.order(prefs) {
		resp := new(pb.ApplyResponse)
		err := s.callNode(ctx, node, bus.OpApply, apply, resp)
		s.m.replica("writes", node, err)
		if err == nil {
			obj, coord = resp.GetObject(), node
			break
		}
		if !retryElsewhere(err) {
			return nil, 0, err
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if obj == nil {
		s.m.quorumFailure(w.op, w.level.String())
		return nil, 0, bus.Wrap(pb.ErrorCode_QUORUM_NOT_REACHED, lastErr,
			"no replica of key %q could take the write (tried %d)", w.key, n)
	}

	tally := quorum.NewTally(need, n)
	tally.Ack()
	// Buffered for every sender: a merge finishing after the answer never
	// blocks, and its goroutine is owned by s.background.
	results := make(chan error, n)
	merge := &pb.MergeRequest{TenantId: tid, Key: w.key, Object: obj, Policy: apply.Policy, Epoch: r.Epoch()}
	for _, node := range prefs {
		if node == coord {
			continue
		}
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			err := s.callNode(context.Background(), node, bus.OpMerge, merge, new(pb.MergeResponse))
			s.m.replica("writes", node, err)
			if err != nil {
				// Hinted handoff takes these over; until then anti-entropy
				// and read repair close the gap.
				s.log.Debug("replica missed a write", zap.String("node", node), zap.String("tenant", tid), zap.Error(err))
			}
			results <- err
		}()
	}
	for tally.Outcome() == quorum.Pending {
		select {
		case err := <-results:
			if err == nil {
				tally.Ack()
			} else {
				tally.Fail()
			}
		case <-ctx.Done():
			s.m.quorumFailure(w.op, w.level.String())
			return nil, 0, bus.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
				"write reached %d of %d replicas before the deadline; %s needs %d (it may still be applied: retry with the same idempotency key)",
				tally.Acks(), n, w.level, need)
		}
	}
	if tally.Outcome() == quorum.Lost {
		s.m.quorumFailure(w.op, w.level.String())
		return nil, 0, bus.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
			"write reached %d of %d replicas; %s needs %d (it may still be applied: retry with the same idempotency key)",
			tally.Acks(), n, w.level, need)
	}
	return obj, tally.Acks(), nil
}

// errLabel is the error_type metric label of err ("" for success).
func errLabel(err error) string {
	if err == nil {
		return ""
	}
	return bus.CodeOf(err).String()
}
