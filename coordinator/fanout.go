package coordinator

import (
	"context"
	"slices"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// fanout brings one minted version to the key's replicas and reports
// their answers: the acks of the replicas its minter forwarded to
// (collectForwarded), and of the coordinator's merges to every replica not
// reached yet (send). Which replicas to send to and when the write is won
// is the write machine's to decide (writemachine.go); fanout does the
// calls. It outlives a STALE_EPOCH refusal: the machine sends the same
// version under the newer ring to the replicas it adds. Sends still running
// at the answer finish in the background under their own deadline (results
// has room for every one).
type fanout struct {
	s       *Service
	w       *writeReq
	m       *minted
	results chan replicaResult
}

type replicaResult struct {
	node  string
	err   error
	epoch uint64
}

func (s *Service) newFanout(w *writeReq, m *minted, epoch uint64) *fanout {
	f := &fanout{s: s, w: w, m: m, results: make(chan replicaResult, maxSends)}
	if m.fw != nil {
		s.background.Add(1)
		go s.collectForwarded(m.fw, w.tenant, f.merge(epoch), f.results)
	}
	return f
}

// merge is the merge request that carries the version at epoch.
func (f *fanout) merge(epoch uint64) *pb.MergeRequest {
	return &pb.MergeRequest{
		TenantId: f.w.tenant.GetTenantId(), Key: f.w.key, Object: f.m.obj, Policy: policyOf(f.w.tenant),
		Epoch: epoch, Minted: f.m.fresh, TenantIncarnation: f.w.inc,
	}
}

// send merges the version into nodes at epoch, each in the background; its
// result arrives on results, and a miss is settled (hinted or resent).
func (f *fanout) send(nodes []string, epoch uint64) {
	s, w := f.s, f.w
	merge := f.merge(epoch)
	for _, node := range nodes {
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			resp := new(pb.MergeResponse)
			var err error
			if s.cfg.Hints != nil && s.liveness.health(node, time.Now()) == Down {
				// No call: it would find no responders or time out.
				err = status.Errorf(pb.ErrorCode_UNAVAILABLE, "node %s is down; its merge is hinted", node)
			} else {
				err = s.callNode(context.Background(), node, bus.OpMerge, merge, resp)
				s.m.replica("writes", node, err)
			}
			// The answer does not wait for this: results has room.
			f.results <- replicaResult{node: node, err: err, epoch: resp.GetEpoch()}
			s.settleMiss(w.tenant, node, merge, err, resp.GetEpoch())
		}()
	}
}

// await waits for the next replica result, or the request's deadline.
func (f *fanout) await(ctx context.Context) writeEvent {
	select {
	case r := <-f.results:
		switch {
		case r.err == nil:
			return writeEvent{kind: evMergeAck, node: r.node}
		case status.Is(r.err, pb.ErrorCode_STALE_EPOCH):
			return writeEvent{kind: evMergeStale, node: r.node, epoch: r.epoch}
		}
		return writeEvent{kind: evMergeFail, node: r.node, err: r.err}
	case <-ctx.Done():
		return writeEvent{kind: evDeadline}
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
	case !status.Is(err, pb.ErrorCode_STALE_EPOCH):
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
		// A forward's deadline fenced the minter's copy; this resend is
		// of a version the minter answered, so it needs none.
		again.DeadlineUnixMs = 0
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
	if merge.GetDeadlineUnixMs() != 0 {
		merge = proto.Clone(merge).(*pb.MergeRequest)
		merge.DeadlineUnixMs = 0
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
