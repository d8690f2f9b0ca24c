package client

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// MaxBatchItems is the most items one batch request may carry; the batch
// methods split longer lists into requests of this size.
const MaxBatchItems = 1000

// GetMany reads keys (get_many), in batches of MaxBatchItems, and returns
// one answer per key in order. As with Get, a missing key has Found false
// and no error; any other failure of one key is in its answer's Error, and
// the error returned is for a batch that failed as a whole.
func (c *Client) GetMany(ctx context.Context, keys []string, opts ...ReadOption) ([]*pb.GetResponse, error) {
	var consistency string
	for _, f := range opts {
		f(&consistency)
	}
	out := make([]*pb.GetResponse, 0, len(keys))
	for start := 0; start < len(keys); start += MaxBatchItems {
		chunk := keys[start:min(start+MaxBatchItems, len(keys))]
		resp := new(pb.GetManyResponse)
		req := &pb.GetManyRequest{Keys: chunk, Consistency: consistency}
		if err := c.call(ctx, c.subjects.KV(c.tenant, bus.OpGetMany), req, resp); err != nil {
			return nil, err
		}
		if len(resp.GetItems()) != len(chunk) {
			return nil, errors.Newf("get_many answered %d items for %d keys", len(resp.GetItems()), len(chunk))
		}
		for _, it := range resp.GetItems() {
			if it.GetError().GetCode() == pb.ErrorCode_KEY_NOT_FOUND {
				it.Error = nil
			}
		}
		out = append(out, resp.GetItems()...)
	}
	return out, nil
}

// PutMany writes items (put_many), in batches of MaxBatchItems, and returns
// one answer per item in order; an item's failure is in its answer's
// Error. Each item carries its own Context; an item without an
// IdempotencyKey gets a generated one, so the items that fail with a
// retryable error (UNAVAILABLE, DEADLINE_EXCEEDED, OUTCOME_UNKNOWN) are sent
// again, with the same key, as Put retries. Of opts only Consistency
// applies (to the items that leave theirs empty).
func (c *Client) PutMany(ctx context.Context, items []*pb.PutRequest, opts ...WriteOption) ([]*pb.PutResponse, error) {
	o := batchOpts(opts)
	for _, it := range items {
		if it.IdempotencyKey == "" {
			it.IdempotencyKey = NewIdempotencyKey()
		}
	}
	return batchWithRetries(ctx, c, items, func(ctx context.Context, chunk []*pb.PutRequest) ([]*pb.PutResponse, error) {
		resp := new(pb.PutManyResponse)
		err := c.call(ctx, c.subjects.KV(c.tenant, bus.OpPutMany), &pb.PutManyRequest{Items: chunk, Consistency: o.consistency}, resp)
		return resp.GetItems(), err
	})
}

// DeleteMany deletes items (delete_many) as PutMany writes them. A delete
// removes what its item's Context saw: without one it removes nothing.
func (c *Client) DeleteMany(ctx context.Context, items []*pb.DeleteRequest, opts ...WriteOption) ([]*pb.DeleteResponse, error) {
	o := batchOpts(opts)
	for _, it := range items {
		if it.IdempotencyKey == "" {
			it.IdempotencyKey = NewIdempotencyKey()
		}
	}
	return batchWithRetries(ctx, c, items, func(ctx context.Context, chunk []*pb.DeleteRequest) ([]*pb.DeleteResponse, error) {
		resp := new(pb.DeleteManyResponse)
		err := c.call(ctx, c.subjects.KV(c.tenant, bus.OpDeleteMany), &pb.DeleteManyRequest{Items: chunk, Consistency: o.consistency}, resp)
		return resp.GetItems(), err
	})
}

func batchOpts(opts []WriteOption) writeOpts {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	return o
}

// batchItem is an answer that carries its own error.
type batchItem interface{ GetError() *pb.Error }

// batchWithRetries sends items in chunks of MaxBatchItems through send, then
// sends the items whose answers failed retryably again (same requests, so
// the same idempotency keys), up to the client's retries, and returns the
// last answer of every item in order.
func batchWithRetries[Req any, Resp batchItem](ctx context.Context, c *Client, items []Req,
	send func(context.Context, []Req) ([]Resp, error)) ([]Resp, error) {
	out := make([]Resp, len(items))
	todo := make([]int, len(items))
	for i := range todo {
		todo[i] = i
	}
	backoff := c.backoff
	for attempt := 0; len(todo) > 0; attempt++ {
		var again []int
		wait := backoff
		for start := 0; start < len(todo); start += MaxBatchItems {
			idx := todo[start:min(start+MaxBatchItems, len(todo))]
			chunk := make([]Req, len(idx))
			for j, i := range idx {
				chunk[j] = items[i]
			}
			got, err := send(ctx, chunk)
			if err != nil {
				return nil, err
			}
			if len(got) != len(chunk) {
				return nil, errors.Newf("the batch answered %d items for %d", len(got), len(chunk))
			}
			for j, i := range idx {
				out[i] = got[j]
				if err := status.FromProto(got[j].GetError()); err != nil && retryable(err) {
					again = append(again, i)
					wait = max(wait, status.RetryAfterOf(err))
				}
			}
		}
		if len(again) == 0 || attempt >= c.retries {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return out, nil
		}
		backoff *= 2
		todo = again
	}
	return out, nil
}
