package coordinator

import (
	"context"
	"encoding/base64"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	"github.com/pairdb/pairdb/quorum"
	"github.com/pairdb/pairdb/ring"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Listing walks a tenant's keys in hash order, one span of the ring (a
// stretch whose hashes share a replica set) at a time. Each step scans the
// span from the walk's position at R of its serving replicas and merges
// what they return up to the lowest point every one of them has covered
// (the frontier): below it, a key any of them holds is in the page, so a
// key on W replicas with R + W > N is never missed. The position is all a
// page token holds, so the next page may run on another coordinator, under
// another ring.

const (
	// DefaultListPageSize and MaxListPageSize bound a list page's keys.
	DefaultListPageSize = 100
	MaxListPageSize     = 1000
	// listSteps bounds the span scans of one page, and listScanShare the
	// bytes they may read (in NATS max_payloads): the work of a page is
	// bounded on every node even where deleted keys or a prefix leave it
	// empty.
	listSteps     = 16
	listScanShare = 2
	// listPositionVersion is the version of page tokens this coordinator
	// writes and reads.
	listPositionVersion = 1
)

func (s *Service) list(ctx context.Context, subject string, req *pb.ListRequest) (resp *pb.ListResponse, err error) {
	start, level := time.Now(), "invalid"
	defer func() { s.m.request(bus.OpList, level, start, errLabel(err)) }()
	t, inc, err := s.tenantOf(ctx, subject)
	if err != nil {
		return nil, err
	}
	if err := s.admit(t, kindRead); err != nil {
		return nil, err
	}
	l, err := levelOf(t, req.GetConsistency())
	if err != nil {
		return nil, err
	}
	level = l.String()
	size, pos, err := checkList(req)
	if err != nil {
		return nil, err
	}
	w := &listWalk{s: s, t: t, inc: inc, level: l, pos: pos, size: size, req: req,
		budget: int(float64(s.nc.MaxPayload()) * batchBudget), scanBudget: listScanShare * int(s.nc.MaxPayload())}
	if err := w.run(ctx); err != nil {
		return nil, err
	}
	resp = &pb.ListResponse{Items: w.items, Consistency: level}
	if !w.done {
		resp.NextPageToken = encodePosition(w.pos)
	}
	return resp, nil
}

// checkList validates a list request and returns its page size and start.
func checkList(req *pb.ListRequest) (int, *pb.ListPosition, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultListPageSize
	case size > MaxListPageSize:
		return 0, nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "page_size is %d; the limit is %d", size, MaxListPageSize)
	}
	if p := req.GetPrefix(); len(p) > keyspace.MaxKeyBytes || !utf8.ValidString(p) {
		return 0, nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "prefix must be UTF-8 of at most %d bytes", keyspace.MaxKeyBytes)
	}
	pos, err := decodePosition(req.GetPageToken())
	return size, pos, err
}

// encodePosition cannot fail: the only thing that could make the marshal
// fail is a key that is not UTF-8, and keys come from the nodes' validated
// store.
func encodePosition(p *pb.ListPosition) string {
	p.Version = listPositionVersion
	b, _ := proto.Marshal(p)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePosition(token string) (*pb.ListPosition, error) {
	if token == "" {
		return &pb.ListPosition{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	p := new(pb.ListPosition)
	if err == nil {
		err = proto.Unmarshal(b, p)
	}
	if err != nil || p.GetVersion() != listPositionVersion || (p.GetAfter() && keyspace.ValidateKey(p.GetKey()) != nil) {
		return nil, status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "page_token is not one a list answered")
	}
	return p, nil
}

// listWalk is one page's walk.
type listWalk struct {
	s      *Service
	t      *pb.Tenant
	inc    uint64
	level  quorum.Level
	req    *pb.ListRequest
	size   int
	budget int // bytes of items the answer may carry
	used   int
	// scanned counts the bytes the replicas returned, up to scanBudget.
	scanned, scanBudget int
	pos                 *pb.ListPosition
	items               []*pb.ListItem
	done                bool
}

// run fills the page: spans scanned from the position until the page is
// full, the walk is over, or listSteps scans were spent.
func (w *listWalk) run(ctx context.Context) error {
	stale := 0
	for step := 0; step < listSteps && len(w.items) < w.size && w.used < w.budget && w.scanned < w.scanBudget; step++ {
		st := w.s.cfg.Membership.State()
		rf, _ := st.TenantRF(w.t.GetTenantId())
		if rf == 0 {
			return status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, "the ring log has no tenant %q", w.t.GetTenantId())
		}
		spans := ring.Spans(st.Current(), int(rf))
		if len(spans) == 0 {
			return status.Errorf(pb.ErrorCode_UNAVAILABLE, "the ring has no storage nodes")
		}
		sp := spans[ring.SpanOf(spans, w.pos.GetHash())]
		sp.Lo = w.pos.GetHash()
		got, newer, err := w.s.scanSpan(ctx, w, st, sp)
		if newer > 0 && stale < maxEpochRetries {
			stale++
			if err := w.s.catchUp(ctx, newer); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if w.take(got) {
			return nil
		}
		switch {
		case !got.spanDone:
			w.pos = &pb.ListPosition{Hash: got.frontier.hash, Key: got.frontier.key, After: true}
		case sp.Hi == math.MaxUint64:
			w.done = true
			return nil
		default:
			w.pos = &pb.ListPosition{Hash: sp.Hi + 1}
		}
	}
	return nil
}

// take adds a span scan's keys to the page, in order, leaving out deleted
// keys and keys outside the prefix, and reports whether the page filled up
// (the position is then the last key taken).
func (w *listWalk) take(got spanScan) bool {
	for _, k := range got.keys {
		w.pos = &pb.ListPosition{Hash: k.hash, Key: k.key, After: true}
		live := k.obj.Live()
		if len(live) == 0 || !strings.HasPrefix(k.key, w.req.GetPrefix()) {
			continue
		}
		clock := dvvpb.ClockToProto(k.obj.Clock)
		it := &pb.ListItem{Key: k.key, VectorClock: clock, Context: w.s.sealContext(w.t.GetTenantId(), k.key, clock)}
		if !w.req.GetKeysOnly() {
			for _, sib := range live {
				it.Siblings = append(it.Siblings, &pb.Sibling{Value: sib.Value, TimestampMs: sib.TimestampMs})
			}
		}
		w.items = append(w.items, it)
		w.used += proto.Size(it)
		if len(w.items) >= w.size || w.used >= w.budget {
			return true
		}
	}
	return false
}
