package bench

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Store is a key-value backend a workload runs against. Implementations
// are safe for concurrent use; every call is bounded by ctx.
type Store interface {
	// Get reads key. A missing key is not an error (Found is false).
	Get(ctx context.Context, key string) (ReadResult, error)
	// Put writes value under key. rmw, when not nil, is the read this
	// write follows (read-modify-write): the write supersedes what it saw.
	Put(ctx context.Context, key string, value []byte, rmw *ReadResult) error
}

// ReadResult is what a Get saw.
type ReadResult struct {
	Found bool
	// Context is the read's context token (PairDB only).
	Context []byte
}

// PairDBOptions configure the PairDB store.
type PairDBOptions struct {
	Subjects    bus.Subjects
	Tenant      string
	Consistency string
	// Idempotency sends every write through the Go client with a fresh
	// idempotency key; off sends plain requests without one.
	Idempotency bool
}

// PairDB runs operations against PairDB coordinators.
//
// A put with no context is concurrent with everything stored and adds a
// sibling, so blind YCSB updates would pile siblings up to the tenant's
// limit. Every put therefore carries the newest vector_clock this store
// has seen for the key (from any get or put response), as an application
// that keeps its contexts would; a read-modify-write carries its own read's.
// Puts racing on one key can still leave a few siblings until the next put.
type PairDB struct {
	nc     *nats.Conn
	c      *client.Client
	opts   PairDBOptions
	put    string
	get    string
	clocks clockCache
}

// NewPairDB builds the store on nc. Client retries are off: a failed
// request counts as an error rather than hiding in the latency.
func NewPairDB(nc *nats.Conn, opts PairDBOptions) *PairDB {
	if opts.Tenant == "" {
		opts.Tenant = "default"
	}
	return &PairDB{
		nc:   nc,
		c:    client.New(nc, client.WithTenant(opts.Tenant), client.WithSubjects(opts.Subjects), client.WithRetries(0)),
		opts: opts,
		put:  opts.Subjects.KV(opts.Tenant, bus.OpPut),
		get:  opts.Subjects.KV(opts.Tenant, bus.OpGet),
	}
}

// Get reads key at the configured consistency.
func (s *PairDB) Get(ctx context.Context, key string) (ReadResult, error) {
	resp := new(pb.GetResponse)
	err := bus.Request(ctx, s.nc, s.get, &pb.GetRequest{Key: key, Consistency: s.opts.Consistency}, resp)
	if err != nil && !status.Is(err, pb.ErrorCode_KEY_NOT_FOUND) {
		return ReadResult{}, err
	}
	s.clocks.set(key, resp.GetContext())
	return ReadResult{Found: resp.GetFound(), Context: resp.GetContext()}, nil
}

// Put writes value under key with the read's context, or the newest one seen.
func (s *PairDB) Put(ctx context.Context, key string, value []byte, rmw *ReadResult) error {
	vc := s.clocks.get(key)
	if rmw != nil {
		vc = rmw.Context
	}
	var (
		resp *pb.PutResponse
		err  error
	)
	if s.opts.Idempotency {
		resp, err = s.c.Put(ctx, key, value, client.Consistency(s.opts.Consistency), client.WithContext(vc))
	} else {
		resp = new(pb.PutResponse)
		err = bus.Request(ctx, s.nc, s.put, &pb.PutRequest{Key: key, Value: value, Consistency: s.opts.Consistency, Context: vc}, resp)
	}
	if err != nil {
		return err
	}
	s.clocks.set(key, resp.GetContext())
	return nil
}

// clockCache keeps the newest context seen per key, in shards so
// concurrent workers rarely contend. The zero value is ready.
type clockCache struct {
	shards [64]clockShard
}

type clockShard struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *clockCache) shard(key string) *clockShard {
	return &c.shards[fnv64String(key)%uint64(len(c.shards))]
}

func (c *clockCache) get(key string) []byte {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key]
}

func (c *clockCache) set(key string, vc []byte) {
	if len(vc) == 0 {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[key] = vc
}

func fnv64String(s string) uint64 {
	h := uint64(0xCBF29CE484222325)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// BatchStore is a Store that also reads and writes many keys in one
// request (PairDB's get_many and put_many).
type BatchStore interface {
	Store
	// GetMany reads keys and returns how many were found.
	GetMany(ctx context.Context, keys []string) (found int, err error)
	// PutMany writes value under every key, each with the newest context
	// seen for it.
	PutMany(ctx context.Context, keys []string, value []byte) error
}

// GetMany reads keys with one get_many request; a key that failed fails
// the batch.
func (s *PairDB) GetMany(ctx context.Context, keys []string) (int, error) {
	items, err := s.c.GetMany(ctx, keys, client.ReadConsistency(s.opts.Consistency))
	if err != nil {
		return 0, err
	}
	found := 0
	for _, it := range items {
		if err := status.FromProto(it.GetError()); err != nil {
			return found, err
		}
		s.clocks.set(it.GetKey(), it.GetContext())
		if it.GetFound() {
			found++
		}
	}
	return found, nil
}

// PutMany writes keys with one put_many request: through the Go client
// (an idempotency key per item) with Idempotency, raw without; a key that
// failed fails the batch.
func (s *PairDB) PutMany(ctx context.Context, keys []string, value []byte) error {
	items := make([]*pb.PutRequest, len(keys))
	for i, k := range keys {
		items[i] = &pb.PutRequest{Key: k, Value: value, Context: s.clocks.get(k)}
	}
	var answers []*pb.PutResponse
	var err error
	if s.opts.Idempotency {
		answers, err = s.c.PutMany(ctx, items, client.Consistency(s.opts.Consistency))
	} else {
		resp := new(pb.PutManyResponse)
		err = bus.Request(ctx, s.nc, s.opts.Subjects.KV(s.opts.Tenant, bus.OpPutMany),
			&pb.PutManyRequest{Items: items, Consistency: s.opts.Consistency}, resp)
		answers = resp.GetItems()
	}
	if err != nil {
		return err
	}
	for _, a := range answers {
		if err := status.FromProto(a.GetError()); err != nil {
			return err
		}
		s.clocks.set(a.GetKey(), a.GetContext())
	}
	return nil
}
