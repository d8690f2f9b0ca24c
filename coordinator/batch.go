package coordinator

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Batches (get_many, put_many, delete_many) run each item through the
// single-key path, so every item keeps every guarantee of its own request:
// its deadline, its idempotency key, its quorum, its read repair. What a
// batch saves is the client's round trips and the per-request work at the
// edges, not replica messages. Items run concurrently, batchParallel at a
// time; a batch is not a transaction, and one item's error never fails the
// others.

// MaxBatchItems bounds the items of one batch request.
const MaxBatchItems = 1000

// batchParallel bounds the items of one batch in flight at once: enough to
// keep every replica busy, few enough that one batch cannot take all of a
// coordinator's capacity (its MaxConcurrent counts the batch as one).
const batchParallel = 32

// batchItemsInFlight bounds the batch items one coordinator runs at once,
// across all batches; the rest wait for a slot within their batch's
// deadline. Each item is a request to every replica of its key, and a
// storage node sheds work past its own MaxConcurrent (256 by default) with
// UNAVAILABLE: measured with 64 clients sending batches of 100 keys, a
// pool of MaxConcurrent (4,096) items pushed the nodes past that and most
// items failed, where queueing them here keeps every one within the nodes'
// capacity. Single-key requests are bounded by the clients' concurrency.
const batchItemsInFlight = 128

// batchBudget is the share of the NATS max_payload a batch answer fills with
// items; the rest is room for the JSON encoding (base64 grows values by a
// third, and field names add more).
const batchBudget = 0.6

func (s *Service) getMany(ctx context.Context, subject string, req *pb.GetManyRequest) (*pb.GetManyResponse, error) {
	keys := req.GetKeys()
	if err := checkBatchSize(len(keys)); err != nil {
		return nil, err
	}
	items, errs := runBatch(ctx, s.batchItems, len(keys), func(ctx context.Context, i int) (*pb.GetResponse, error) {
		return s.get(ctx, subject, &pb.GetRequest{Key: keys[i], Consistency: req.GetConsistency()})
	}, func(i int) *pb.GetResponse { return &pb.GetResponse{Key: keys[i]} })
	for i, err := range errs {
		items[i].Error = errorOrNil(err)
	}
	s.fitAnswer(items)
	return &pb.GetManyResponse{Items: items}, nil
}

// fitAnswer keeps a get_many answer within one NATS message: the items
// past the budget keep their key and get VALUE_TOO_LARGE instead of their
// values (the client reads them again on their own or in a smaller batch).
func (s *Service) fitAnswer(items []*pb.GetResponse) {
	budget := int(float64(s.nc.MaxPayload()) * batchBudget)
	used := 0
	for i, it := range items {
		used += proto.Size(it)
		if used <= budget {
			continue
		}
		items[i] = &pb.GetResponse{Key: it.GetKey(), Consistency: it.GetConsistency(), Error: status.ToProto(status.Errorf(
			pb.ErrorCode_VALUE_TOO_LARGE, "the batch's answer would not fit in one NATS message (max_payload %d bytes) with this key's values; "+
				"read it on its own or in a smaller batch", s.nc.MaxPayload()))}
		used += proto.Size(items[i]) - proto.Size(it)
	}
}

func (s *Service) putMany(ctx context.Context, subject string, req *pb.PutManyRequest) (*pb.PutManyResponse, error) {
	items := req.GetItems()
	if err := checkWriteBatch(len(items), func(i int) string { return items[i].GetKey() }); err != nil {
		return nil, err
	}
	out, errs := runBatch(ctx, s.batchItems, len(items), func(ctx context.Context, i int) (*pb.PutResponse, error) {
		it := items[i]
		if it.GetConsistency() == "" {
			it.Consistency = req.GetConsistency()
		}
		return s.put(ctx, subject, it)
	}, func(i int) *pb.PutResponse {
		return &pb.PutResponse{Key: items[i].GetKey(), IdempotencyKey: items[i].GetIdempotencyKey()}
	})
	for i, err := range errs {
		out[i].Error = errorOrNil(err)
	}
	return &pb.PutManyResponse{Items: out}, nil
}

func (s *Service) deleteMany(ctx context.Context, subject string, req *pb.DeleteManyRequest) (*pb.DeleteManyResponse, error) {
	items := req.GetItems()
	if err := checkWriteBatch(len(items), func(i int) string { return items[i].GetKey() }); err != nil {
		return nil, err
	}
	out, errs := runBatch(ctx, s.batchItems, len(items), func(ctx context.Context, i int) (*pb.DeleteResponse, error) {
		it := items[i]
		if it.GetConsistency() == "" {
			it.Consistency = req.GetConsistency()
		}
		return s.delete(ctx, subject, it)
	}, func(i int) *pb.DeleteResponse {
		return &pb.DeleteResponse{Key: items[i].GetKey(), IdempotencyKey: items[i].GetIdempotencyKey()}
	})
	for i, err := range errs {
		out[i].Error = errorOrNil(err)
	}
	return &pb.DeleteManyResponse{Items: out}, nil
}

func checkBatchSize(n int) error {
	switch {
	case n == 0:
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "the batch has no items")
	case n > MaxBatchItems:
		return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT, "the batch has %d items; the limit is %d", n, MaxBatchItems)
	}
	return nil
}

// checkWriteBatch refuses a write batch that names a key twice: its two
// items would be concurrent writes of the key, each superseding what the
// same context saw, which leaves siblings no caller meant.
func checkWriteBatch(n int, keyOf func(int) string) error {
	if err := checkBatchSize(n); err != nil {
		return err
	}
	seen := make(map[string]int, n)
	for i := range n {
		k := keyOf(i)
		if j, dup := seen[k]; dup {
			return status.Errorf(pb.ErrorCode_INVALID_ARGUMENT,
				"items %d and %d both write key %q; a batch writes each key at most once", j, i, k)
		}
		seen[k] = i
	}
	return nil
}

// runBatch runs do for items 0..n-1, batchParallel at a time, each also
// holding a slot of the coordinator's shared pool (so that many batches at
// once do not push the storage nodes past what they take), and returns
// their answers and errors in order (blank makes the answer of an item that
// failed without one). Items not started by the deadline are not started
// at all, and say so.
func runBatch[Resp proto.Message](ctx context.Context, pool chan struct{}, n int,
	do func(context.Context, int) (Resp, error), blank func(int) Resp) ([]Resp, []error) {
	out, errs := make([]Resp, n), make([]error, n)
	sem := make(chan struct{}, batchParallel)
	var wg sync.WaitGroup
	for i := range n {
		started := acquire(ctx, sem)
		if started && !acquire(ctx, pool) {
			<-sem
			started = false
		}
		if !started {
			out[i], errs[i] = blank(i), status.Errorf(pb.ErrorCode_DEADLINE_EXCEEDED,
				"the batch's deadline passed before this item started; nothing of it was written")
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-pool; <-sem; wg.Done() }()
			resp, err := do(ctx, i)
			if !resp.ProtoReflect().IsValid() {
				resp = blank(i)
			}
			out[i], errs[i] = resp, err
		}()
	}
	wg.Wait()
	return out, errs
}

// acquire takes a slot of sem, or reports false when ctx has ended. A
// slot that frees just as ctx ends may win the select; it is given back,
// so nothing starts past the deadline.
func acquire(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		if ctx.Err() != nil {
			<-sem
			return false
		}
		return true
	case <-ctx.Done():
		return false
	}
}

// errorOrNil is err as a batch item's error field.
func errorOrNil(err error) *pb.Error {
	if err == nil {
		return nil
	}
	return status.ToProto(err)
}
