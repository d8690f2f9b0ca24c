package storagenode

import (
	"context"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// Range transfer and anti-entropy, source side: scan pages of a tenant's
// arc and digest it.

const (
	// maxScanLimit caps the keys of one scan page whatever the request asks.
	maxScanLimit = 4096
	// scanPayloadShare is the share of the NATS payload limit a scan page
	// may fill; the rest is left for framing and headers.
	scanPayloadNum, scanPayloadDen = 3, 4
	// maxDigestRanges caps the ranges of one digests request.
	maxDigestRanges = 256
)

func validateRange(tenant string, r *pb.HashRange) (ring.Arc, error) {
	if err := keyspace.ValidateTenantID(tenant); err != nil {
		return ring.Arc{}, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant_id")
	}
	if r == nil {
		return ring.Arc{}, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"range is required: the ring arc (start, end], with start == end for the whole ring")
	}
	return ring.Arc{Start: r.GetStart(), End: r.GetEnd()}, nil
}

func (n *Node) scan(ctx context.Context, _ string, req *pb.ScanRequest) (*pb.ScanResponse, error) {
	arc, err := validateRange(req.GetTenantId(), req.GetRange())
	if err != nil {
		return nil, err
	}
	if req.GetHasAfter() && !arc.Contains(req.GetAfterHash()) {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
			"after_hash %d lies outside the range (%d, %d]", req.GetAfterHash(), arc.Start, arc.End)
	}
	epoch, err := n.checkEpoch(ctx, bus.OpScan, req.GetEpoch())
	if err != nil {
		return &pb.ScanResponse{Epoch: epoch}, err
	}
	if err := n.sourceTenant(req.GetTenantId(), req.GetTenantIncarnation()); err != nil {
		return &pb.ScanResponse{Epoch: epoch}, err
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = DefaultTransferPageSize
	}
	limit = min(limit, maxScanLimit)
	var after *engine.Position
	if req.GetHasAfter() {
		after = &engine.Position{Hash: req.GetAfterHash(), Key: req.GetAfterKey()}
	}
	maxBytes := int(n.nc.MaxPayload() * scanPayloadNum / scanPayloadDen)
	items, done, err := n.eng.ScanBudget(req.GetTenantId(), arc, after, limit, maxBytes, true)
	if err != nil {
		return &pb.ScanResponse{Epoch: epoch}, n.failed(bus.OpScan, err)
	}
	resp := &pb.ScanResponse{Done: done, Epoch: epoch, Items: make([]*pb.ScanItem, 0, len(items))}
	for _, it := range items {
		resp.Items = append(resp.Items, &pb.ScanItem{Key: it.Key, Hash: it.Hash, Object: dvvpb.ObjectToProto(it.Object)})
	}
	return resp, nil
}

func (n *Node) digest(ctx context.Context, _ string, req *pb.DigestRequest) (*pb.DigestResponse, error) {
	arc, err := validateRange(req.GetTenantId(), req.GetRange())
	if err != nil {
		return nil, err
	}
	epoch, err := n.checkEpoch(ctx, bus.OpDigest, req.GetEpoch())
	if err != nil {
		return &pb.DigestResponse{Epoch: epoch}, err
	}
	if err := n.sourceTenant(req.GetTenantId(), req.GetTenantIncarnation()); err != nil {
		return &pb.DigestResponse{Epoch: epoch}, err
	}
	sum, keys, err := n.eng.Digest(req.GetTenantId(), arc)
	if err != nil {
		return &pb.DigestResponse{Epoch: epoch}, n.failed(bus.OpDigest, err)
	}
	return &pb.DigestResponse{Digest: sum, Keys: keys, Epoch: epoch}, nil
}

// digests serves RangeDigestsRequest: the digests of several arcs at once,
// with due tombstones counted as absent under the requester's cutoff.
func (n *Node) digests(ctx context.Context, _ string, req *pb.RangeDigestsRequest) (*pb.RangeDigestsResponse, error) {
	if err := keyspace.ValidateTenantID(req.GetTenantId()); err != nil {
		return nil, status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant_id")
	}
	if k := len(req.GetRanges()); k == 0 || k > maxDigestRanges {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "ask for 1 to %d ranges, not %d", maxDigestRanges, k)
	}
	epoch, err := n.checkEpoch(ctx, bus.OpDigests, req.GetEpoch())
	if err != nil {
		return &pb.RangeDigestsResponse{Epoch: epoch}, err
	}
	if err := n.sourceTenant(req.GetTenantId(), req.GetTenantIncarnation()); err != nil {
		return &pb.RangeDigestsResponse{Epoch: epoch}, err
	}
	arcs := make([]ring.Arc, 0, len(req.GetRanges()))
	for _, r := range req.GetRanges() {
		arcs = append(arcs, ring.Arc{Start: r.GetStart(), End: r.GetEnd()})
	}
	ds, err := n.eng.DigestArcs(req.GetTenantId(), arcs, req.GetTombstonesBeforeMs())
	if err != nil {
		return &pb.RangeDigestsResponse{Epoch: epoch}, n.failed(bus.OpDigests, err)
	}
	resp := &pb.RangeDigestsResponse{Epoch: epoch, Digests: make([]*pb.RangeDigest, 0, len(ds))}
	for _, d := range ds {
		resp.Digests = append(resp.Digests, &pb.RangeDigest{Digest: d.Digest, Keys: d.Keys})
	}
	return resp, nil
}
