package idempotency_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/jetstream/idempotency"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

var bucketSeq atomic.Int64

type env struct {
	js     jetstream.JetStream
	bucket string
}

func newEnv(t *testing.T, nc *nats.Conn) env {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return env{js: js, bucket: fmt.Sprintf("idem_%d", bucketSeq.Add(1))}
}

func (e env) open(t *testing.T, cfg idempotency.Config) *idempotency.Store {
	t.Helper()
	if cfg.Bucket == "" {
		cfg.Bucket = e.bucket
	}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t)
	}
	s, err := idempotency.Open(ctxT(t), e.js, cfg)
	require.NoError(t, err)
	return s
}

// waitWatchers waits until n waiters are watching the bucket: each waiting
// Begin holds one ordered consumer on the bucket's stream.
func (e env) waitWatchers(t *testing.T, n int) {
	t.Helper()
	ctx := ctxT(t)
	stream, err := e.js.Stream(ctx, "KV_"+e.bucket)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Consumers == n
	}, 10*time.Second, 5*time.Millisecond, "expected %d waiters", n)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func hashOf(value string) []byte {
	sum := sha256.Sum256([]byte(value))
	return sum[:]
}

func requireCode(t *testing.T, want pb.ErrorCode, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, status.CodeOf(err), "error: %v", err)
}

func TestConcurrentDuplicatesExecuteOnce(t *testing.T) {
	srv, nc := natstest.Start(t)
	e := newEnv(t, nc)
	// Two coordinators on two connections share the bucket.
	stores := []*idempotency.Store{
		e.open(t, idempotency.Config{}),
		newEnvOn(t, natstest.Connect(t, srv), e.bucket).open(t, idempotency.Config{}),
	}
	ctx := ctxT(t)
	hash := hashOf("v")
	const n = 20

	claims := make(chan *idempotency.Claim, n)
	results := make([][]byte, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			c, err := stores[i%2].Begin(ctx, "acme", "idem-1", hash, "node-1", "inc-1")
			if err != nil {
				errs[i] = err
				return
			}
			if resp, done := c.Done(); done {
				results[i] = resp
				return
			}
			claims <- c
		})
	}
	close(start)

	var winner *idempotency.Claim
	select {
	case winner = <-claims:
	case <-ctx.Done():
		t.Fatal("nobody claimed the key")
	}
	// Everyone else is now waiting on the PENDING record.
	e.waitWatchers(t, n-1)
	response := []byte("the response")
	require.NoError(t, winner.Complete(ctx, response))
	wg.Wait()
	close(claims)
	require.Empty(t, claims, "more than one Begin got an executable claim")

	executed := 0
	for i := range n {
		require.NoError(t, errs[i])
		if results[i] == nil {
			executed++
			continue
		}
		require.Equal(t, response, results[i])
	}
	require.Equal(t, 1, executed)

	// A later duplicate gets the response straight away.
	c, err := stores[0].Begin(ctx, "acme", "idem-1", hash, "node-1", "inc-1")
	require.NoError(t, err)
	resp, done := c.Done()
	require.True(t, done)
	require.Equal(t, response, resp)
	requireCode(t, pb.ErrorCode_INTERNAL, c.Complete(ctx, []byte("x")))
	requireCode(t, pb.ErrorCode_INTERNAL, c.Abort(ctx))
}

func newEnvOn(t *testing.T, nc *nats.Conn, bucket string) env {
	e := newEnv(t, nc)
	e.bucket = bucket
	return e
}

func TestDifferentPayloadConflicts(t *testing.T) {
	_, nc := natstest.Start(t)
	s := newEnv(t, nc).open(t, idempotency.Config{})
	ctx := ctxT(t)

	c, err := s.Begin(ctx, "acme", "idem", hashOf("a"), "node-1", "inc-1")
	require.NoError(t, err)
	// While PENDING: no waiting, the payload differs.
	_, err = s.Begin(ctx, "acme", "idem", hashOf("b"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_IDEMPOTENCY_KEY_CONFLICT, err)
	require.Contains(t, err.Error(), "different payload")

	require.NoError(t, c.Complete(ctx, []byte("ok")))
	_, err = s.Begin(ctx, "acme", "idem", hashOf("b"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_IDEMPOTENCY_KEY_CONFLICT, err)
}

func TestAbortLetsTheRetryRun(t *testing.T) {
	_, nc := natstest.Start(t)
	s := newEnv(t, nc).open(t, idempotency.Config{})
	ctx := ctxT(t)
	h := hashOf("v")

	c, err := s.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	require.NoError(t, c.Abort(ctx))
	// Once aborted the claim is gone: completing it now must not resurrect it.
	require.True(t, errors.Is(c.Complete(ctx, []byte("late")), idempotency.ErrClaimLost))

	retry, err := s.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	_, done := retry.Done()
	require.False(t, done, "the retry must execute")
	require.True(t, retry.Retry(), "the retry is told an earlier attempt may have been applied")
	require.False(t, retry.TakenOver(), "an aborted attempt was answered as failed")
	require.False(t, c.Retry())
	require.True(t, errors.Is(c.Abort(ctx), idempotency.ErrClaimLost), "the old claim must not release the new one")
	require.NoError(t, retry.Complete(ctx, []byte("r")))

	// After an abort the key still refuses a different payload: the failed
	// attempt may have been applied.
	c2, err := s.Begin(ctx, "acme", "idem-2", h, "node-1", "inc-1")
	require.NoError(t, err)
	require.NoError(t, c2.Abort(ctx))
	_, err = s.Begin(ctx, "acme", "idem-2", hashOf("other"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_IDEMPOTENCY_KEY_CONFLICT, err)
}

func TestWaiterClaimsAfterAbort(t *testing.T) {
	_, nc := natstest.Start(t)
	e := newEnv(t, nc)
	s := e.open(t, idempotency.Config{})
	ctx := ctxT(t)
	h := hashOf("v")

	c, err := s.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	got := make(chan *idempotency.Claim, 1)
	errc := make(chan error, 1)
	go func() {
		c2, err := s.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
		errc <- err
		got <- c2
	}()
	e.waitWatchers(t, 1)
	require.NoError(t, c.Abort(ctx))
	require.NoError(t, <-errc)
	c2 := <-got
	_, done := c2.Done()
	require.False(t, done, "the waiter must get the key to execute after the abort")
	require.NoError(t, c2.Complete(ctx, []byte("second")))
}

func TestAbandonedPendingIsTakenOver(t *testing.T) {
	_, nc := natstest.Start(t)
	e := newEnv(t, nc)
	crashed := e.open(t, idempotency.Config{})
	const timeout = 300 * time.Millisecond
	survivor := e.open(t, idempotency.Config{PendingTimeout: timeout})
	ctx := ctxT(t)
	h := hashOf("v")

	orphan, err := crashed.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	began := time.Now()
	c, err := survivor.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	_, done := c.Done()
	require.False(t, done, "the abandoned record must be taken over")
	require.GreaterOrEqual(t, time.Since(began), timeout-50*time.Millisecond, "taken over before the pending timeout")
	require.True(t, c.Retry() && c.TakenOver(), "the orphan may have been applied, and answered")

	// The presumed-dead coordinator finds out, and cannot clobber the result.
	require.True(t, errors.Is(orphan.Complete(ctx, []byte("stale")), idempotency.ErrClaimLost))
	require.True(t, errors.Is(orphan.Abort(ctx), idempotency.ErrClaimLost))
	require.NoError(t, c.Complete(ctx, []byte("fresh")))

	d, err := crashed.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	resp, done := d.Done()
	require.True(t, done)
	require.Equal(t, []byte("fresh"), resp)
}

func TestDeadlineWhileWaiting(t *testing.T) {
	_, nc := natstest.Start(t)
	e := newEnv(t, nc)
	s := e.open(t, idempotency.Config{})
	ctx := ctxT(t)
	h := hashOf("v")
	c, err := s.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = s.Begin(short, "acme", "idem", h, "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_UNAVAILABLE, err)
	require.Contains(t, err.Error(), "still in progress")
	require.True(t, errors.Is(err, context.DeadlineExceeded))

	// The waiter gave up without touching the claim.
	require.NoError(t, c.Complete(ctx, []byte("ok")))
}

func TestTenantsAreIndependent(t *testing.T) {
	_, nc := natstest.Start(t)
	s := newEnv(t, nc).open(t, idempotency.Config{})
	ctx := ctxT(t)

	a, err := s.Begin(ctx, "tenant-a", "same-key", hashOf("a"), "node-1", "inc-1")
	require.NoError(t, err)
	b, err := s.Begin(ctx, "tenant-b", "same-key", hashOf("b"), "node-1", "inc-1")
	require.NoError(t, err, "another tenant's record must not conflict")
	_, done := b.Done()
	require.False(t, done)
	require.NoError(t, a.Complete(ctx, []byte("A")))
	require.NoError(t, b.Complete(ctx, []byte("B")))

	for tenant, want := range map[string]string{"tenant-a": "A", "tenant-b": "B"} {
		c, err := s.Begin(ctx, tenant, "same-key", hashOf(strings.TrimPrefix(tenant, "tenant-")), "node-1", "inc-1")
		require.NoError(t, err)
		resp, done := c.Done()
		require.True(t, done)
		require.Equal(t, want, string(resp))
	}
}

func TestKeysWithAnyCharacters(t *testing.T) {
	_, nc := natstest.Start(t)
	s := newEnv(t, nc).open(t, idempotency.Config{})
	ctx := ctxT(t)
	for _, k := range []string{"a.b", "*", ">", "with space", "ünïcode", strings.Repeat("x", idempotency.MaxKeyBytes)} {
		c, err := s.Begin(ctx, "acme", k, hashOf(k), "node-1", "inc-1")
		require.NoError(t, err, "key %q", k)
		require.NoError(t, c.Complete(ctx, []byte(k)))
	}
	// Distinct keys stayed distinct records.
	c, err := s.Begin(ctx, "acme", "a.b", hashOf("a.b"), "node-1", "inc-1")
	require.NoError(t, err)
	resp, done := c.Done()
	require.True(t, done)
	require.Equal(t, "a.b", string(resp))
}

func TestRecordsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartServer(t, dir)
	nc := natstest.Connect(t, srv)
	e := newEnv(t, nc)
	s := e.open(t, idempotency.Config{})
	ctx := ctxT(t)
	h := hashOf("v")
	c, err := s.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	require.NoError(t, c.Complete(ctx, []byte("kept")))
	nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()

	srv2 := natstest.StartServer(t, dir)
	s2 := newEnvOn(t, natstest.Connect(t, srv2), e.bucket).open(t, idempotency.Config{})
	d, err := s2.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	resp, done := d.Done()
	require.True(t, done)
	require.Equal(t, []byte("kept"), resp)
	_, err = s2.Begin(ctx, "acme", "idem", hashOf("other"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_IDEMPOTENCY_KEY_CONFLICT, err)
}

func TestInvalidArguments(t *testing.T) {
	_, nc := natstest.Start(t)
	s := newEnv(t, nc).open(t, idempotency.Config{})
	ctx := ctxT(t)
	_, err := s.Begin(ctx, "bad.tenant", "k", hashOf("v"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, err)
	_, err = s.Begin(ctx, "acme", "", hashOf("v"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, err)
	_, err = s.Begin(ctx, "acme", strings.Repeat("x", idempotency.MaxKeyBytes+1), hashOf("v"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, err)
	_, err = s.Begin(ctx, "acme", "k", []byte("short"), "node-1", "inc-1")
	requireCode(t, pb.ErrorCode_INTERNAL, err)
	requireCode(t, pb.ErrorCode_INTERNAL, (&idempotency.Claim{}).Complete(ctx, nil))
}

func TestOpenConfig(t *testing.T) {
	_, nc := natstest.Start(t)
	e := newEnv(t, nc)
	ctx := ctxT(t)
	_, err := idempotency.Open(ctx, e.js, idempotency.Config{Bucket: e.bucket, TTL: time.Second, PendingTimeout: time.Second})
	require.Error(t, err, "pending timeout must be shorter than the TTL")
	_, err = idempotency.Open(ctx, e.js, idempotency.Config{Bucket: e.bucket, Replicas: 9})
	require.Error(t, err)

	e.open(t, idempotency.Config{TTL: time.Hour})
	e.open(t, idempotency.Config{TTL: 2 * time.Hour}) // reopening updates the bucket
	kv, err := e.js.KeyValue(ctx, e.bucket)
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, st.TTL())
	require.Equal(t, int64(1), st.History())
	require.Equal(t, jetstream.FileStorage, st.Config().Storage)
}

// TestMinterTravelsWithTheRecord: the minter proposed with a fresh claim is
// what every later attempt resolves at (retry after an abort, takeover of an
// abandoned claim), and only Reassign changes it, conditionally.
func TestMinterTravelsWithTheRecord(t *testing.T) {
	_, nc := natstest.Start(t)
	e := newEnv(t, nc)
	const timeout = 200 * time.Millisecond
	s := e.open(t, idempotency.Config{PendingTimeout: timeout})
	ctx := ctxT(t)
	h := hashOf("v")

	c, err := s.Begin(ctx, "acme", "idem", h, "node-1", "inc-1")
	require.NoError(t, err)
	node, inc := c.Minter()
	require.Equal(t, []string{"node-1", "inc-1"}, []string{node, inc})
	// node-1 refused for sure: node-2 is named before it is asked.
	require.NoError(t, c.Reassign(ctx, "node-2", "inc-2"))
	require.NoError(t, c.Abort(ctx))

	// A retry proposing another node still resolves at node-2.
	retry, err := s.Begin(ctx, "acme", "idem", h, "node-3", "inc-3")
	require.NoError(t, err)
	require.True(t, retry.Retry())
	node, inc = retry.Minter()
	require.Equal(t, []string{"node-2", "inc-2"}, []string{node, inc})
	// The earlier claim lost the record: it can no longer rename the minter.
	require.True(t, errors.Is(c.Reassign(ctx, "node-4", "inc-4"), idempotency.ErrClaimLost))

	// Abandoned (never completed nor aborted): the takeover keeps it too.
	taken, err := s.Begin(ctx, "acme", "idem", h, "node-5", "inc-5")
	require.NoError(t, err)
	require.True(t, taken.TakenOver())
	node, _ = taken.Minter()
	require.Equal(t, "node-2", node)
	require.NoError(t, taken.Complete(ctx, []byte("done")))
	require.True(t, errors.Is(retry.Reassign(ctx, "node-6", "inc-6"), idempotency.ErrClaimLost))
}
