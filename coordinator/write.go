package coordinator

import (
	"context"
	"crypto/sha256"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// writeReq is a validated put or delete.
type writeReq struct {
	op        string
	tenant    *pb.Tenant
	key       string
	value     []byte
	tombstone bool
	// context is the causal context, opened from the request's token.
	context dvv.VV
	level   quorum.Level
	idemKey string
	// payload hashes the request for idempotency (set with idemKey).
	payload []byte
	// origin names the request on the sibling it writes (from the
	// idempotency key).
	origin []byte
	// claim is the idempotency claim (nil without a key).
	claim IdempotencyClaim
	// inc is the tenant's incarnation in the ring log (hints carry it, so a
	// hint of a deleted tenant never lands in one created again).
	inc uint64
}

// writeOutcome is what a write's answer reports.
type writeOutcome struct {
	clock []*pb.ClockEntry
	acks  int
	// existing: an earlier attempt of this request had minted the write.
	existing bool
}

func (s *Service) put(ctx context.Context, subject string, req *pb.PutRequest) (resp *pb.PutResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpPut, level, start, errLabel(err)) }()
	w, err := s.prepareWrite(ctx, subject, bus.OpPut, req.GetKey(), req.GetValue(), req.GetConsistency(), false,
		req.GetContext(), req.GetVectorClock(), req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	level = w.level.String()
	resp = &pb.PutResponse{Key: w.key, Consistency: level, IdempotencyKey: w.idemKey}
	err = s.serveWrite(ctx, w, resp, func(o writeOutcome) {
		resp.VectorClock, resp.ReplicaCount = o.clock, uint32(o.acks)
		resp.Context = s.sealContext(w.tenant.GetTenantId(), w.key, o.clock)
	}, func() { resp.Duplicate = true })
	return resp, err
}

func (s *Service) delete(ctx context.Context, subject string, req *pb.DeleteRequest) (resp *pb.DeleteResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpDelete, level, start, errLabel(err)) }()
	w, err := s.prepareWrite(ctx, subject, bus.OpDelete, req.GetKey(), nil, req.GetConsistency(), true,
		req.GetContext(), req.GetVectorClock(), req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	level = w.level.String()
	resp = &pb.DeleteResponse{Key: w.key, Consistency: level, IdempotencyKey: w.idemKey}
	err = s.serveWrite(ctx, w, resp, func(o writeOutcome) {
		resp.VectorClock, resp.ReplicaCount = o.clock, uint32(o.acks)
		resp.Context = s.sealContext(w.tenant.GetTenantId(), w.key, o.clock)
	}, func() { resp.Duplicate = true })
	return resp, err
}

// prepareWrite validates a write, opens its context and loads its tenant.
func (s *Service) prepareWrite(ctx context.Context, subject, op, key string, value []byte, consistency string,
	tombstone bool, token []byte, readable []*pb.ClockEntry, idemKey string) (*writeReq, error) {
	t, inc, err := s.tenantOf(ctx, subject)
	if err != nil {
		return nil, err
	}
	if err := s.admit(t, kindWrite); err != nil {
		return nil, err
	}
	if err := keyspace.ValidateKey(key); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad key")
	}
	if max := t.GetMaxValueBytes(); uint64(len(value)) > max {
		return nil, status.Errorf(pb.ErrorCode_VALUE_TOO_LARGE,
			"value is %d bytes; tenant %q allows at most %d", len(value), t.GetTenantId(), max)
	}
	level, err := levelOf(t, consistency)
	if err != nil {
		return nil, err
	}
	if len(idemKey) > 256 {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "idempotency_key is %d bytes; the limit is 256", len(idemKey))
	}
	causal, err := s.openContext(t.GetTenantId(), key, token, readable)
	if err != nil {
		return nil, err
	}
	w := &writeReq{op: op, tenant: t, key: key, value: value, tombstone: tombstone, context: causal, level: level, idemKey: idemKey, inc: inc}
	if idemKey != "" {
		w.payload = requestHash(op, key, value, tombstone, dvvpb.ClockToProto(causal))
		w.origin = originOf(t.GetTenantId(), idemKey, w.payload)
	}
	return w, nil
}

// tenantOf loads the tenant a key-value subject names, and its incarnation
// in the ring log.
func (s *Service) tenantOf(ctx context.Context, subject string) (*pb.Tenant, uint64, error) {
	id, ok := s.cfg.Subjects.TenantOf(subject)
	if !ok {
		return nil, 0, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "subject %q names no tenant", subject)
	}
	t, err := s.tenants.get(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	inc, err := s.knownToRing(ctx, t)
	if err != nil {
		return nil, 0, err
	}
	return t, inc, nil
}

func levelOf(t *pb.Tenant, consistency string) (quorum.Level, error) {
	if consistency == "" {
		consistency = t.GetDefaultConsistency()
	}
	l, err := quorum.ParseLevel(consistency)
	if err != nil {
		return 0, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "bad consistency")
	}
	return l, nil
}

// serveWrite runs a validated put or delete at most once per idempotency
// key; fill records the outcome in the response, markDup flags a
// duplicate. On a duplicate, resp is replaced by the stored response. A
// failed write releases its claim (RETRY, naming its minter) so the
// client's retry resolves it.
func (s *Service) serveWrite(ctx context.Context, w *writeReq, resp proto.Message,
	fill func(writeOutcome), markDup func()) error {
	if w.idemKey == "" || s.cfg.Idempotency == nil {
		out, err := s.write(ctx, w)
		if err != nil {
			return err
		}
		fill(out)
		return nil
	}
	minter, inc, err := s.proposeMinter(w)
	if err != nil {
		return err
	}
	claim, err := s.cfg.Idempotency.Begin(ctx, w.tenant.GetTenantId(), w.idemKey, w.payload, minter, inc)
	if err != nil {
		return err
	}
	if stored, ok := claim.Done(); ok {
		if err := proto.Unmarshal(stored, resp); err != nil {
			return status.Wrap(pb.ErrorCode_INTERNAL, err, "stored idempotent response is unreadable")
		}
		markDup()
		s.m.idempotencyHits.Inc()
		return nil
	}
	w.claim = claim
	out, err := s.write(ctx, w)
	if err != nil {
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
	fill(out)
	if out.existing && claim.TakenOver() {
		// An earlier attempt applied it and may have answered, but its
		// record was never completed: to the client, a duplicate. (A
		// retry of an attempt that failed its quorum is not: that client
		// was told it failed, and this retry completed it.)
		markDup()
	}
	data, err := proto.Marshal(resp)
	if err != nil {
		return status.Wrap(pb.ErrorCode_INTERNAL, err, "encode the response for its idempotency record")
	}
	// The answer does not wait for the DONE record (one JetStream fsync
	// less on every keyed write): until it lands, a duplicate finds the
	// claim PENDING and waits for it; if it never lands, the claim is
	// abandoned and the retry that takes it over finds this write at its
	// minter and answers it instead of writing again. Either way the write
	// has one effect.
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		cctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReplicaTimeout)
		defer cancel()
		if err := claim.Complete(cctx, data); err != nil {
			s.log.Warn("write applied but its idempotency record was not saved; a retry will find the write at its minter",
				zap.String("tenant", w.tenant.GetTenantId()), zap.Error(err))
		}
	}()
	return nil
}

// proposeMinter picks the replica a fresh keyed write will ask first, to
// name it in the idempotency record (a retry keeps the earlier attempt's).
func (s *Service) proposeMinter(w *writeReq) (node, incarnation string, err error) {
	st := s.cfg.Membership.State()
	p, err := placeFor(st, w.tenant, keyspace.Hash(w.tenant.GetTenantId(), w.key))
	if err != nil {
		return "", "", err
	}
	if c := s.minterCandidates(st, p.all); len(c) > 0 {
		return c[0], st.Nodes[c[0]].Incarnation, nil
	}
	return "", "", status.Errorf(pb.ErrorCode_UNAVAILABLE,
		"no replica of key %q can mint the write: every one is down or its clock is off by more than %s", w.key, s.cfg.MaxClockSkew)
}

// maxEpochRetries bounds how often one request follows a newer ring.
const maxEpochRetries = 3

// originOf names the request with idempotency key idemKey and payload hash
// in tenant: the same for every attempt, distinct across keys, tenants and
// payloads. The payload is part of it so that a key reused with another
// value after its record expired is a new write, never taken for a copy of
// the old one by a replica's origin check.
func originOf(tenant, idemKey string, payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte("pairdb.origin.v2\x00"))
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(idemKey))
	h.Write([]byte{0})
	h.Write(payload)
	return h.Sum(nil)[:16]
}

// catchUp waits (bounded) until this coordinator has folded epoch.
func (s *Service) catchUp(ctx context.Context, epoch uint64) error {
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReplicaTimeout)
	defer cancel()
	if err := s.cfg.Membership.WaitForEpoch(wctx, epoch); err != nil {
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "a replica is at ring epoch %d and this coordinator could not catch up", epoch)
	}
	return nil
}

// errLabel is the error_type metric label of err ("" for success).
func errLabel(err error) string {
	if err == nil {
		return ""
	}
	return status.CodeOf(err).String()
}
