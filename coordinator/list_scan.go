package coordinator

import (
	"cmp"
	"context"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/quorum"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// spanScan is what R replicas hold of a span from the walk's position: the
// keys up to the frontier, merged, in hash order.
type spanScan struct {
	keys []listedKey
	// frontier is the last position every replica scanned reached; with
	// spanDone every replica reached the span's end.
	frontier listedKey
	spanDone bool
}

type listedKey struct {
	hash uint64
	key  string
	obj  dvv.Object
}

func (a listedKey) compare(b listedKey) int {
	return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.key, b.key))
}

type scanReply struct {
	node string
	resp *pb.ScanResponse
	err  error
}

// scanSpan scans sp from the walk's position at R of its serving replicas
// (healthy first; a replica that fails is replaced by the next) and merges
// their keys up to the frontier. A replica on a newer ring refuses with
// STALE_EPOCH, and stale is its epoch.
func (s *Service) scanSpan(ctx context.Context, w *listWalk, st *membership.State, sp ring.Span) (_ spanScan, stale uint64, _ error) {
	epoch := st.Epoch
	var serving []string
	for _, n := range sp.Replicas {
		if st.Serving(n) {
			serving = append(serving, n)
		}
	}
	candidates := s.liveness.order(serving)
	need := quorum.Required(w.level, len(sp.Replicas))
	if len(candidates) < need {
		return spanScan{}, 0, status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"listing needs %d of the %d replicas of hashes %d to %d, and %d serve", need, len(sp.Replicas), sp.Lo, sp.Hi, len(candidates))
	}
	req := &pb.ScanRequest{
		TenantId: w.t.GetTenantId(), Range: &pb.HashRange{Start: sp.Arc().Start, End: sp.Arc().End},
		HasAfter: w.pos.GetAfter(), AfterHash: w.pos.GetHash(), AfterKey: w.pos.GetKey(),
		Limit: uint32(w.size - len(w.items)), Epoch: epoch, TenantIncarnation: w.inc,
	}
	// Room for every reply: a scan still running when this returns (a
	// stale refusal came first) finishes under its own replica timeout,
	// owned by s.background, and is dropped.
	replies := make(chan scanReply, len(candidates))
	ask := func(node string) {
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			resp := new(pb.ScanResponse)
			err := s.callNode(ctx, node, bus.OpScan, req, resp)
			s.m.replica("reads", node, err)
			replies <- scanReply{node: node, resp: resp, err: err}
		}()
	}
	for _, n := range candidates[:need] {
		ask(n)
	}
	next, pending := need, need
	var got []*pb.ScanResponse
	var lastErr error
	for len(got) < need {
		if pending == 0 {
			return spanScan{}, 0, status.Wrap(pb.ErrorCode_QUORUM_NOT_REACHED, lastErr,
				"listing reached %d of the %d replicas it needs", len(got), need)
		}
		r := <-replies
		pending--
		if r.err == nil {
			got = append(got, r.resp)
			w.scanned += proto.Size(r.resp)
			continue
		}
		if status.Is(r.err, pb.ErrorCode_STALE_EPOCH) {
			return spanScan{}, max(r.resp.GetEpoch(), epoch+1), r.err
		}
		lastErr = r.err
		if next < len(candidates) {
			ask(candidates[next])
			next, pending = next+1, pending+1
		}
	}
	return mergeScans(got, dvvpb.PolicyFromProto(policyOf(w.t))), 0, nil
}

// mergeScans merges the scans of one span up to their frontier.
func mergeScans(scans []*pb.ScanResponse, policy dvv.Policy) spanScan {
	out := spanScan{spanDone: true}
	for _, sc := range scans {
		items := sc.GetItems()
		if sc.GetDone() || len(items) == 0 {
			continue
		}
		last := listedKey{hash: items[len(items)-1].GetHash(), key: items[len(items)-1].GetKey()}
		if out.spanDone || last.compare(out.frontier) < 0 {
			out.frontier, out.spanDone = last, false
		}
	}
	byKey := map[string]int{}
	for _, sc := range scans {
		for _, it := range sc.GetItems() {
			k := listedKey{hash: it.GetHash(), key: it.GetKey()}
			if !out.spanDone && k.compare(out.frontier) > 0 {
				break
			}
			o := dvvpb.ObjectFromProto(it.GetObject())
			if i, ok := byKey[k.key]; ok {
				out.keys[i].obj = dvv.Merge(out.keys[i].obj, o, policy)
				continue
			}
			k.obj = o
			byKey[k.key] = len(out.keys)
			out.keys = append(out.keys, k)
		}
	}
	slices.SortFunc(out.keys, listedKey.compare)
	return out
}
