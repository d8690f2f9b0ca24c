package client

import (
	"context"
	"iter"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// ListPage reads one page of the tenant's keys (list): in hash order, with
// next_page_token naming where the next page starts (empty at the end).
func (c *Client) ListPage(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	resp := new(pb.ListResponse)
	return resp, c.call(ctx, c.subjects.KV(c.tenant, bus.OpList), req, resp)
}

// List walks every key of the tenant that starts with req's prefix, page
// after page from req's page token, and yields each with its live values
// (none with KeysOnly) and its context. It stops at the first error, which
// it yields; a walk resumes from the token of the last page it finished
// (see ListPage) on any coordinator.
func (c *Client) List(ctx context.Context, req *pb.ListRequest) iter.Seq2[*pb.ListItem, error] {
	return func(yield func(*pb.ListItem, error) bool) {
		page := &pb.ListRequest{Prefix: req.GetPrefix(), PageSize: req.GetPageSize(), PageToken: req.GetPageToken(),
			Consistency: req.GetConsistency(), KeysOnly: req.GetKeysOnly()}
		for {
			resp, err := c.ListPage(ctx, page)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, it := range resp.GetItems() {
				if !yield(it, nil) {
					return
				}
			}
			if resp.GetNextPageToken() == "" {
				return
			}
			page.PageToken = resp.GetNextPageToken()
		}
	}
}
