package coordinator

import (
	"context"
	"crypto/sha256"
	"slices"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
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
	// payload hashes the request for idempotency (set with idemKey).
	payload []byte
	// origin names the request on the siblings it writes (from the
	// idempotency key); retry says an earlier attempt may have landed,
	// takenOver that it may even have been answered (its claim was taken
	// over), and recovered that it had landed: this attempt completed it.
	origin    []byte
	retry     bool
	takenOver bool
	recovered bool
}

func (s *Service) put(ctx context.Context, subject string, req *pb.PutRequest) (resp *pb.PutResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpPut, level, start, errLabel(err)) }()
	w, err := s.prepareWrite(ctx, subject, bus.OpPut, req.GetKey(), req.GetValue(), req.GetConsistency(), false, req.GetVectorClock(), req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	level = w.level.String()
	resp = &pb.PutResponse{Key: w.key, Consistency: level, IdempotencyKey: w.idemKey}
	err = s.serveWrite(ctx, w, resp, func(vc []*pb.ClockEntry, acks uint32) { resp.VectorClock, resp.ReplicaCount = vc, acks },
		func() { resp.Duplicate = true })
	return resp, err
}

func (s *Service) delete(ctx context.Context, subject string, req *pb.DeleteRequest) (resp *pb.DeleteResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpDelete, level, start, errLabel(err)) }()
	w, err := s.prepareWrite(ctx, subject, bus.OpDelete, req.GetKey(), nil, req.GetConsistency(), true, req.GetVectorClock(), req.GetIdempotencyKey())
	if err != nil {
		return nil, err
	}
	level = w.level.String()
	resp = &pb.DeleteResponse{Key: w.key, Consistency: level, IdempotencyKey: w.idemKey}
	err = s.serveWrite(ctx, w, resp, func(vc []*pb.ClockEntry, acks uint32) { resp.VectorClock, resp.ReplicaCount = vc, acks },
		func() { resp.Duplicate = true })
	return resp, err
}

// serveWrite runs a validated put or delete at most once per idempotency
// key; fill records the outcome in the response, markDup flags a duplicate.
func (s *Service) serveWrite(ctx context.Context, w *writeReq, resp proto.Message,
	fill func(vc []*pb.ClockEntry, acks uint32), markDup func()) error {
	return s.runIdempotent(ctx, w, resp, markDup, func() error {
		obj, acks, err := s.write(ctx, w)
		if err != nil {
			return err
		}
		fill(obj.GetClock(), uint32(acks))
		if w.recovered && w.takenOver {
			// An earlier attempt applied it and may have answered, but its
			// record was never completed: to the client, a duplicate. (A
			// retry of an attempt that failed its quorum is not: that
			// client was told it failed, and this retry completed it.)
			markDup()
		}
		return nil
	})
}

// prepareWrite validates a write and loads its tenant.
func (s *Service) prepareWrite(ctx context.Context, subject, op, key string, value []byte, consistency string,
	tombstone bool, vc []*pb.ClockEntry, idemKey string) (*writeReq, error) {
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
	w := &writeReq{op: op, tenant: t, key: key, value: value, tombstone: tombstone, context: vc, level: level, idemKey: idemKey}
	if idemKey != "" {
		w.payload = requestHash(op, key, value, tombstone, vc)
		w.origin = originOf(t.GetTenantId(), idemKey, w.payload)
	}
	return w, nil
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
	claim, err := s.cfg.Idempotency.Begin(ctx, w.tenant.GetTenantId(), w.idemKey, w.payload)
	if err != nil {
		return err
	}
	w.retry, w.takenOver = claim.Retry(), claim.TakenOver()
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
	if err != nil {
		return bus.Wrap(pb.ErrorCode_INTERNAL, err, "encode the response for its idempotency record")
	}
	// The answer does not wait for the DONE record (one JetStream fsync
	// less on every keyed write): until it lands, a duplicate finds the
	// claim PENDING and waits for it; if it never lands, the claim is
	// abandoned and the retry that takes it over finds this write's origin
	// on the replicas and completes it instead of writing again
	// (recoverAttempt). Either way the write has one effect.
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		cctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReplicaTimeout)
		defer cancel()
		if err := claim.Complete(cctx, data); err != nil {
			s.log.Warn("write applied but its idempotency record was not saved; a retry will find the write on the replicas",
				zap.String("tenant", w.tenant.GetTenantId()), zap.Error(err))
		}
	}()
	return nil
}

// write runs the replica protocol: the first reachable replica mints the
// version (apply) and forwards it to the others, which merge it and ack to
// this coordinator (see applyFirst), and the answer goes out as
// soon as W replicas hold it — in the current replica set and, while a
// membership change runs, in the next one too. A replica that has folded a
// newer ring epoch refuses (STALE_EPOCH): the coordinator catches up and
// sends the same object to the replicas the newer ring adds. Merges still
// running at the answer finish in the background under their own deadline.
func (s *Service) write(ctx context.Context, w *writeReq) (*pb.Object, int, error) {
	tid := w.tenant.GetTenantId()
	var (
		obj     *pb.Object
		coord   string
		sent    = map[string]bool{}
		acked   = map[string]bool{}
		failed  = map[string]bool{}
		results = make(chan replicaResult, maxSends) // every sender finds room, even after the answer
		pending int
	)
	hash := keyspace.Hash(tid, w.key)
	policy := policyOf(w.tenant)
	for attempt := 0; ; attempt++ {
		st := s.cfg.Membership.State()
		p, err := placeFor(st, w.tenant, hash)
		if err != nil {
			return nil, 0, err
		}
		if obj == nil && w.retry {
			// An earlier attempt may have written the value on some replica:
			// finish that write instead of writing it a second time.
			if obj = s.recoverAttempt(ctx, w, p, st.Epoch); obj != nil {
				w.recovered = true
				s.log.Info("retry found its earlier attempt on a replica; completing it", zap.String("tenant", tid))
			}
		}
		if obj == nil {
			var (
				stale uint64
				fw    *gather
			)
			obj, coord, fw, stale, err = s.applyFirst(ctx, w, p, st.Epoch)
			if err != nil {
				return nil, 0, err
			}
			if obj == nil {
				if stale > 0 && attempt < maxEpochRetries {
					if err := s.catchUp(ctx, stale); err != nil {
						return nil, 0, err
					}
					continue
				}
				s.m.quorumFailure(w.op, w.level.String())
				return nil, 0, bus.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
					"no replica of key %q could take the write", w.key)
			}
			sent[coord], acked[coord] = true, true
			if fw != nil {
				for _, node := range fw.nodes {
					sent[node] = true
					pending++
				}
				s.background.Add(1)
				go s.collectForwarded(fw, w.tenant,
					&pb.MergeRequest{TenantId: tid, Key: w.key, Object: obj, Policy: policy, Epoch: st.Epoch}, results)
			}
		}
		merge := &pb.MergeRequest{TenantId: tid, Key: w.key, Object: obj, Policy: policy, Epoch: st.Epoch}
		for _, node := range p.all {
			if sent[node] {
				continue
			}
			sent[node] = true
			pending++
			s.background.Add(1)
			go func() {
				defer s.background.Done()
				resp := new(pb.MergeResponse)
				var err error
				if s.cfg.Hints != nil && s.liveness.health(node, time.Now()) == Down {
					// No call: it would find no responders or time out.
					err = bus.Errorf(pb.ErrorCode_UNAVAILABLE, "node %s is down; its merge is hinted", node)
				} else {
					err = s.callNode(context.Background(), node, bus.OpMerge, merge, resp)
					s.m.replica("writes", node, err)
				}
				// The answer does not wait for this: results has room.
				results <- replicaResult{node: node, err: err, epoch: resp.GetEpoch()}
				s.settleMiss(w.tenant, node, merge, err, resp.GetEpoch())
			}()
		}
		var stale uint64
		for {
			switch p.outcome(w.level, acked, failed) {
			case quorum.Won:
				return obj, len(acked), nil
			case quorum.Pending:
			case quorum.Lost:
				if pending > 0 && stale == 0 {
					break // a stale refusal may still arrive
				}
				if stale > 0 && attempt < maxEpochRetries {
					goto refresh
				}
				s.m.quorumFailure(w.op, w.level.String())
				return nil, 0, bus.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
					"write reached %d of its replicas; %s needs %s (it may still be applied: retry with the same idempotency key)",
					len(acked), w.level, p.need(w.level))
			}
			if pending == 0 {
				if stale > 0 && attempt < maxEpochRetries {
					goto refresh
				}
				s.m.quorumFailure(w.op, w.level.String())
				return nil, 0, bus.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
					"write reached %d of its replicas; %s needs %s", len(acked), w.level, p.need(w.level))
			}
			select {
			case r := <-results:
				pending--
				switch {
				case r.err == nil:
					acked[r.node] = true
				case bus.Is(r.err, pb.ErrorCode_STALE_EPOCH):
					stale = max(stale, r.epoch)
					// Resent under the newer ring.
					delete(sent, r.node)
				default:
					failed[r.node] = true
				}
			case <-ctx.Done():
				s.m.quorumFailure(w.op, w.level.String())
				return nil, 0, bus.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
					"write reached %d of its replicas before the deadline; %s needs %s (it may still be applied: retry with the same idempotency key)",
					len(acked), w.level, p.need(w.level))
			}
		}
	refresh:
		if err := s.catchUp(ctx, stale); err != nil {
			return nil, 0, err
		}
	}
}

// settleMiss makes sure a replica that did not take a merge gets it later.
// A failure is hinted. A STALE_EPOCH refusal (the replica has folded a
// newer ring) is sent again under the newer ring if the replica still holds
// the key there: the write loop does that too while it runs, but once the
// answer is out nobody else would, and the replica would lack the write
// until read repair or anti-entropy. A second merge when both do it is
// harmless (merges are idempotent) and happens only around ring changes.
func (s *Service) settleMiss(t *pb.Tenant, node string, merge *pb.MergeRequest, err error, refused uint64) {
	switch {
	case err == nil:
	case !bus.Is(err, pb.ErrorCode_STALE_EPOCH):
		s.missedWrite(node, merge, err)
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.ReplicaTimeout)
		defer cancel()
		if cerr := s.catchUp(ctx, refused); cerr != nil {
			s.missedWrite(node, merge, cerr)
			return
		}
		st := s.cfg.Membership.State()
		p, perr := placeFor(st, t, keyspace.Hash(merge.GetTenantId(), merge.GetKey()))
		if perr != nil || !slices.Contains(p.all, node) {
			return // no longer a replica of the key: nothing to deliver
		}
		again := proto.Clone(merge).(*pb.MergeRequest)
		again.Epoch = st.Epoch
		s.m.staleResends.Inc()
		err := s.callNode(ctx, node, bus.OpMerge, again, new(pb.MergeResponse))
		s.m.replica("writes", node, err)
		if err != nil {
			s.missedWrite(node, again, err)
		}
	}
}

// missedWrite hands a merge that node missed to hinted handoff, bounded by
// the replica timeout. A hint never counts toward W. Without a hint queue,
// or when storing the hint fails, anti-entropy and read repair close the
// gap. (A STALE_EPOCH refusal is not a miss: the write is sent again under
// the newer ring.)
func (s *Service) missedWrite(node string, merge *pb.MergeRequest, cause error) {
	log := s.log.With(zap.String("node", node), zap.String("tenant", merge.GetTenantId()))
	if s.cfg.Hints == nil {
		log.Debug("replica missed a write", zap.Error(cause))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ReplicaTimeout)
	defer cancel()
	err := s.cfg.Hints.Add(ctx, node, merge)
	s.m.hint(node, err)
	if err != nil {
		log.Warn("replica missed a write and its hint could not be stored", zap.NamedError("miss", cause), zap.Error(err))
		return
	}
	log.Debug("replica missed a write; hinted", zap.Error(cause))
}

// maxEpochRetries bounds how often one request follows a newer ring.
const maxEpochRetries = 3

type replicaResult struct {
	node  string
	err   error
	epoch uint64
}

// applyFirst asks the replicas in turn (healthy first) to mint the version
// and to pass it on to the other replicas of p itself, whose acks come
// straight back here (fw): a write costs one round of fsyncs and one less
// hop than minting, answering, then replicating. Replicas known to be down
// are left out of the forwards; the caller hints them. It returns the
// object, who minted it and the forwarded writes to collect; or nil and, if
// a replica knew a newer ring, that epoch.
func (s *Service) applyFirst(ctx context.Context, w *writeReq, p placement, epoch uint64) (
	*pb.Object, string, *gather, uint64, error) {
	apply := &pb.ApplyRequest{
		TenantId: w.tenant.GetTenantId(), Key: w.key, Value: w.value, Tombstone: w.tombstone, Context: w.context,
		Policy: policyOf(w.tenant), MaxSiblings: w.tenant.GetMaxSiblings(), Epoch: epoch, Origin: w.origin,
	}
	now := time.Now()
	for _, node := range s.liveness.order(p.all) {
		fw := s.openForwards(p.all, node, now)
		apply.Forwards = forwardsOf(fw)
		resp := new(pb.ApplyResponse)
		err := s.callNode(ctx, node, bus.OpApply, apply, resp)
		s.m.replica("writes", node, err)
		if err == nil {
			return resp.GetObject(), node, fw, 0, nil
		}
		// Acks of a failed apply (it may have forwarded before its commit
		// failed) are not counted: the outcome is reported as unknown or the
		// write minted again elsewhere, as without forwarding.
		if fw != nil {
			fw.close()
		}
		switch {
		case bus.Is(err, pb.ErrorCode_STALE_EPOCH):
			return nil, "", nil, max(resp.GetEpoch(), epoch+1), nil
		case !retryElsewhere(err):
			return nil, "", nil, 0, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", nil, 0, nil
}

// openForwards opens a gather for the merges minter will forward: every
// node of all but minter and those known down. nil when there are none.
func (s *Service) openForwards(all []string, minter string, now time.Time) *gather {
	var nodes []string
	for _, node := range all {
		if node == minter || (s.cfg.Hints != nil && s.liveness.health(node, now) == Down) {
			continue
		}
		nodes = append(nodes, node)
	}
	if len(nodes) == 0 {
		return nil
	}
	return s.sentElsewhere(nodes, bus.OpMerge)
}

// forwardsOf names fw's nodes and reply subjects for an ApplyRequest.
func forwardsOf(fw *gather) []*pb.Forward {
	if fw == nil {
		return nil
	}
	out := make([]*pb.Forward, len(fw.nodes))
	for i, node := range fw.nodes {
		out[i] = &pb.Forward{NodeId: node, Reply: fw.w.Subject(i)}
	}
	return out
}

// collectForwarded turns the acks of forwarded writes into results, as the
// coordinator's own merge calls do; a replica that has not answered within
// the replica timeout has missed the write and is hinted. It runs in the
// background, owned by s.background: the answer does not wait for it
// (results has room).
func (s *Service) collectForwarded(fw *gather, t *pb.Tenant, merge *pb.MergeRequest, results chan<- replicaResult) {
	defer s.background.Done()
	defer fw.close()
	for fw.left > 0 {
		r, _ := fw.next(nil, nil) // bounded by the replica timeout
		resp := new(pb.MergeResponse)
		err := fw.decode(r, "writes", resp)
		results <- replicaResult{node: r.node, err: err, epoch: resp.GetEpoch()}
		s.settleMiss(t, r.node, merge, err, resp.GetEpoch())
	}
}

// recoverAttempt reads the key from every replica that answers in time and
// returns the merged object if any replica holds a sibling written by this
// request's earlier attempt; nil otherwise. (A replica that holds it but does
// not answer now can still make the value appear twice; the window is the
// retry of a failed write to an unreachable replica.)
func (s *Service) recoverAttempt(ctx context.Context, w *writeReq, p placement, epoch uint64) *pb.Object {
	g := s.gather(p.all, bus.OpRead, &pb.ReadRequest{TenantId: w.tenant.GetTenantId(), Key: w.key, Epoch: epoch}, len(p.all))
	defer g.close()
	policy := dvvpb.PolicyFromProto(policyOf(w.tenant))
	var merged dvv.Object
	for g.left > 0 {
		rep, status := g.readReply(ctx.Done(), nil)
		if status != gotReply {
			break
		}
		if rep.err == nil {
			merged = dvv.Merge(merged, rep.obj, policy)
		}
	}
	if !merged.HasOrigin(w.origin) {
		return nil
	}
	return dvvpb.ObjectToProto(merged)
}

// originOf names the request with idempotency key idemKey and payload hash
// in tenant: the same for every attempt, distinct across keys, tenants and
// payloads. The payload is part of it so that a key reused with another
// value after its record expired is a new write, never taken for a copy of
// the old one (by the replica's origin check or by dvv.Visible).
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
		return bus.Wrap(pb.ErrorCode_UNAVAILABLE, err, "a replica is at ring epoch %d and this coordinator could not catch up", epoch)
	}
	return nil
}

// errLabel is the error_type metric label of err ("" for success).
func errLabel(err error) string {
	if err == nil {
		return ""
	}
	return bus.CodeOf(err).String()
}
