package storagenode_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/internal/natstest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/storagenode"
	"github.com/pairdb/pairdb/storagenode/heal"
)

// fakeInbox hands out queued hints in batches and records how each one was
// settled.
type fakeInbox struct {
	mu      sync.Mutex
	queue   []*fakeHint
	settled map[string]string // key → "ack", "retry" or "reject"
	changed chan struct{}
}

func newFakeInbox() *fakeInbox {
	return &fakeInbox{settled: map[string]string{}, changed: make(chan struct{}, 1)}
}

func (f *fakeInbox) add(hs ...*fakeHint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range hs {
		h.inbox = f
	}
	f.queue = append(f.queue, hs...)
}

func (f *fakeInbox) Fetch(ctx context.Context, max int) ([]heal.Hint, error) {
	f.mu.Lock()
	n := min(max, len(f.queue))
	batch := f.queue[:n]
	f.queue = f.queue[n:]
	f.mu.Unlock()
	if n == 0 {
		<-ctx.Done() // a long poll with nothing to deliver
		return nil, nil
	}
	out := make([]heal.Hint, n)
	for i, h := range batch {
		out[i] = h
	}
	return out, nil
}

// queued is how many hints have not been fetched yet.
func (f *fakeInbox) queued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue)
}

func (f *fakeInbox) settle(key, how string) error {
	f.mu.Lock()
	f.settled[key] = how
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
	return nil
}

// waitSettled waits until n hints are settled and returns the record.
func (f *fakeInbox) waitSettled(t *testing.T, n int) map[string]string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		if len(f.settled) >= n {
			out := make(map[string]string, len(f.settled))
			for k, v := range f.settled {
				out[k] = v
			}
			f.mu.Unlock()
			return out
		}
		f.mu.Unlock()
		select {
		case <-f.changed:
		case <-deadline:
			t.Fatalf("only %d of %d hints were settled", len(f.settled), n)
		}
	}
}

type fakeHint struct {
	inbox  *fakeInbox
	name   string
	req    *pb.MergeRequest
	err    error
	stored time.Time // zero: now
}

func (h *fakeHint) Request() (*pb.MergeRequest, error) { return h.req, h.err }
func (h *fakeHint) Pending() uint64                    { return 0 }
func (h *fakeHint) Stored() time.Time {
	if h.stored.IsZero() {
		return time.Now()
	}
	return h.stored
}
func (h *fakeHint) Ack() error                { return h.inbox.settle(h.name, "ack") }
func (h *fakeHint) Retry(time.Duration) error { return h.inbox.settle(h.name, "retry") }
func (h *fakeHint) Reject(string) error       { return h.inbox.settle(h.name, "reject") }

func objectOf(actor, value string) dvv.Object {
	return dvv.Update(dvv.Object{}, nil, actor, []byte(value), false, time.Now().UnixMilli(), dvv.Siblings)
}

func hintFor(tenant, key string, o dvv.Object, p pb.ConflictPolicy) *fakeHint {
	return &fakeHint{name: tenant + "/" + key, req: &pb.MergeRequest{
		TenantId: tenant, Key: key, Object: dvvpb.ObjectToProto(o), Policy: p, Epoch: 99,
	}}
}

func TestHintsAreMergedAckedOrRejected(t *testing.T) {
	_, nc := natstest.Start(t)
	inbox := newFakeInbox()
	cfg := testConfig(t, "n1", t.TempDir())
	cfg.Hints = inbox
	startNode(t, nc, cfg)

	a, b := objectOf("x", "a"), objectOf("y", "b")
	bad := hintFor("acme", "corrupt", a, pb.ConflictPolicy_SIBLINGS)
	bad.req.Object.Siblings[0].Dot = nil // a sibling without a dot
	inbox.add(
		hintFor("acme", "k", a, pb.ConflictPolicy_SIBLINGS),
		hintFor("acme", "k", b, pb.ConflictPolicy_SIBLINGS), // concurrent: both kept
		hintFor("acme", "k", a, pb.ConflictPolicy_SIBLINGS), // replayed: nothing changes
		hintFor("lww", "k", a, pb.ConflictPolicy_LAST_WRITE_WINS),
		bad,
		&fakeHint{name: "unreadable", err: errors.New("not a MergeRequest")},
		hintFor("acme", "", a, pb.ConflictPolicy_SIBLINGS), // invalid key
	)
	got := inbox.waitSettled(t, 5)
	require.Equal(t, map[string]string{
		"acme/k": "ack", "lww/k": "ack", "acme/corrupt": "reject", "unreadable": "reject", "acme/": "reject",
	}, got)

	resp := read(t, nc, "n1", "acme", "k")
	require.True(t, dvv.Equal(dvv.Merge(a, b, dvv.Siblings), dvvpb.ObjectFromProto(resp.GetObject())))
	require.True(t, read(t, nc, "n1", "lww", "k").GetFound())
	require.False(t, read(t, nc, "n1", "acme", "corrupt").GetFound())
	require.EqualValues(t, 4, counter(cfg.Metrics, `pairdb_hints_replayed_total{node="n1"}`))
	require.EqualValues(t, 3, counter(cfg.Metrics, `pairdb_hints_rejected_total{node="n1"}`))
}

func TestHintReplayIsPacedByHintRate(t *testing.T) {
	const (
		hints = 120
		rate  = 200 // per second: at least 0.6s for the lot
	)
	_, nc := natstest.Start(t)
	inbox := newFakeInbox()
	cfg := testConfig(t, "n1", t.TempDir())
	cfg.Hints, cfg.HintRate, cfg.HintBatch = inbox, rate, 16
	for i := range hints {
		inbox.add(hintFor("acme", fmt.Sprint(i), objectOf("x", "v"), pb.ConflictPolicy_SIBLINGS))
	}
	start := time.Now()
	startNode(t, nc, cfg)
	inbox.waitSettled(t, hints)
	require.GreaterOrEqual(t, time.Since(start), time.Duration(hints)*time.Second/rate)
}

func TestStopInterruptsAPacedBatch(t *testing.T) {
	_, nc := natstest.Start(t)
	inbox := newFakeInbox()
	cfg := testConfig(t, "n1", t.TempDir())
	// One hint a second, in batches of one: the second waits a second.
	cfg.Hints, cfg.HintRate, cfg.HintBatch = inbox, 1, 1
	inbox.add(hintFor("acme", "a", objectOf("x", "v"), pb.ConflictPolicy_SIBLINGS),
		hintFor("acme", "b", objectOf("x", "v"), pb.ConflictPolicy_SIBLINGS))
	n, err := storagenode.Start(nc, cfg)
	require.NoError(t, err)
	inbox.waitSettled(t, 1)
	// The second hint must be in flight (fetched, waiting on the limiter)
	// when Stop comes, or there is no batch to cut short.
	require.Eventually(t, func() bool { return inbox.queued() == 0 }, 10*time.Second, time.Millisecond)
	require.NoError(t, n.Stop(context.Background()))
	// Had Stop waited for the limiter, b would have been merged and acked:
	// handed back for retry, it was cut short (no clock reading needed).
	got := inbox.waitSettled(t, 2)
	require.Equal(t, map[string]string{"acme/a": "ack", "acme/b": "retry"}, got, "a batch cut short is handed back")
}
