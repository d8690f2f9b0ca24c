// Package client is the Go client of PairDB: put, get and delete on one
// tenant's keys and the tenant admin API, over plain NATS request-reply.
//
// Every write carries an idempotency key (a fresh random one unless the
// caller gives one), reused on the client's own retries, so a write retried
// after a lost reply is applied once.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Client talks to PairDB coordinators. It is safe for concurrent use.
type Client struct {
	nc       *nats.Conn
	subjects bus.Subjects
	tenant   string
	timeout  time.Duration
	retries  int
	backoff  time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithTenant selects the tenant for key-value calls (default "default").
func WithTenant(t string) Option { return func(c *Client) { c.tenant = t } }

// WithSubjects changes the subject prefix (default "pairdb").
func WithSubjects(s bus.Subjects) Option { return func(c *Client) { c.subjects = s } }

// WithTimeout bounds each attempt when the caller's context has no earlier
// deadline (default 5s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithRetries sets how many times a call is retried after UNAVAILABLE or a
// missed deadline (default 2), with exponential backoff from 50ms.
func WithRetries(n int) Option { return func(c *Client) { c.retries = n } }

// New builds a client on an open NATS connection.
func New(nc *nats.Conn, opts ...Option) *Client {
	c := &Client{nc: nc, tenant: "default", timeout: bus.DefaultTimeout, retries: 2, backoff: 50 * time.Millisecond}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Tenant returns the tenant this client's key-value calls use.
func (c *Client) Tenant() string { return c.tenant }

// WriteOption adjusts a put or delete.
type WriteOption func(*writeOpts)

type writeOpts struct {
	consistency string
	context     []byte
	idemKey     string
}

// ReadOption adjusts a get.
type ReadOption func(*string)

// Consistency sets the level of a write ("one", "quorum", "all").
func Consistency(level string) WriteOption { return func(o *writeOpts) { o.consistency = level } }

// ReadConsistency sets the level of a read.
func ReadConsistency(level string) ReadOption { return func(s *string) { *s = level } }

// WithContext passes the context of an earlier read (GetResponse.Context),
// or of an earlier write of the key, so the write supersedes exactly the
// siblings that read returned. The token is opaque: pass it as it came.
func WithContext(token []byte) WriteOption { return func(o *writeOpts) { o.context = token } }

// IdempotencyKey replaces the generated idempotency key.
func IdempotencyKey(k string) WriteOption { return func(o *writeOpts) { o.idemKey = k } }

func newWriteOpts(opts []WriteOption) writeOpts {
	var o writeOpts
	for _, f := range opts {
		f(&o)
	}
	if o.idemKey == "" {
		o.idemKey = NewIdempotencyKey()
	}
	return o
}

// NewIdempotencyKey returns 128 random bits in hex.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Put stores value under key.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) (*pb.PutResponse, error) {
	o := newWriteOpts(opts)
	req := &pb.PutRequest{Key: key, Value: value, Consistency: o.consistency, IdempotencyKey: o.idemKey, Context: o.context}
	resp := new(pb.PutResponse)
	return resp, c.call(ctx, c.subjects.KV(c.tenant, bus.OpPut), req, resp)
}

// Delete writes a tombstone for key, superseding what the context saw.
func (c *Client) Delete(ctx context.Context, key string, opts ...WriteOption) (*pb.DeleteResponse, error) {
	o := newWriteOpts(opts)
	req := &pb.DeleteRequest{Key: key, Consistency: o.consistency, IdempotencyKey: o.idemKey, Context: o.context}
	resp := new(pb.DeleteResponse)
	return resp, c.call(ctx, c.subjects.KV(c.tenant, bus.OpDelete), req, resp)
}

// Get reads key. A missing (or deleted) key is not an error: the response
// has Found false, and its Context is what to write with.
func (c *Client) Get(ctx context.Context, key string, opts ...ReadOption) (*pb.GetResponse, error) {
	req := &pb.GetRequest{Key: key}
	for _, f := range opts {
		f(&req.Consistency)
	}
	resp := new(pb.GetResponse)
	err := c.call(ctx, c.subjects.KV(c.tenant, bus.OpGet), req, resp)
	if status.Is(err, pb.ErrorCode_KEY_NOT_FOUND) {
		resp.Error = nil
		return resp, nil
	}
	return resp, err
}

// call sends req, retrying transport failures with the same payload (and
// so the same idempotency key).
func (c *Client) call(ctx context.Context, subject string, req, resp proto.Message) error {
	backoff := c.backoff
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.timeout)
		err := bus.Request(actx, c.nc, subject, req, resp)
		cancel()
		if err == nil || attempt >= c.retries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(max(backoff, status.RetryAfterOf(err))):
		case <-ctx.Done():
			return err
		}
		backoff *= 2
		proto.Reset(resp)
	}
}

// retryable: failures after which the same request may run again (a
// RATE_LIMIT_EXCEEDED no sooner than it says). A
// write's OUTCOME_UNKNOWN is retried too: every write here carries an
// idempotency key, so the retry completes or finds the first attempt.
func retryable(err error) bool {
	switch status.CodeOf(err) {
	case pb.ErrorCode_UNAVAILABLE, pb.ErrorCode_DEADLINE_EXCEEDED, pb.ErrorCode_OUTCOME_UNKNOWN, pb.ErrorCode_RATE_LIMIT_EXCEEDED:
		return true
	}
	return false
}
