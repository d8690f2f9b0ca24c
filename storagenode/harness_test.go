package storagenode_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/jetstream/ringlog"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode"
)

// waitTimeout bounds every condition a test waits for.
const waitTimeout = 60 * time.Second

// ringNet is a ring log on an embedded NATS server.
type ringNet struct {
	t        *testing.T
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *ringlog.Log
	progress jetstream.Stream
	f        *ringlog.Follower // the test's own view of the log
}

func newRingNet(t *testing.T, nc *nats.Conn) *ringNet {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	l, err := ringlog.Open(ctx, js, ringlog.Config{Subjects: subjects, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	st, err := ringlog.OpenProgress(ctx, js, subjects, 1)
	require.NoError(t, err)
	r := &ringNet{t: t, nc: nc, js: js, log: l, progress: st}
	r.f = r.follow()
	return r
}

func (r *ringNet) follow() *ringlog.Follower {
	r.t.Helper()
	f, err := r.log.Follow(context.Background())
	require.NoError(r.t, err)
	r.t.Cleanup(f.Stop)
	return f
}

// membershipOf adapts the ring log to the node's Membership, with the
// node's own follower (as the wiring in cluster/ does); what a node asks of
// the coordinators the test does at once, as a coordinator would.
func (r *ringNet) membership() storagenode.Membership {
	return &ringMembership{log: r.log, f: r.follow(), js: r.js}
}

type ringMembership struct {
	log *ringlog.Log
	f   *ringlog.Follower
	js  jetstream.JetStream
}

func (m *ringMembership) State() *membership.State { return m.f.State() }
func (m *ringMembership) Changed() <-chan struct{} { return m.f.Changed() }
func (m *ringMembership) WaitForEpoch(ctx context.Context, e uint64) error {
	return m.f.WaitForEpoch(ctx, e)
}
func (m *ringMembership) Register(ctx context.Context, id, inc string) error {
	return m.log.Register(ctx, m.f, id, inc)
}
func (m *ringMembership) ReportTransferDone(ctx context.Context, seq uint64, _ string, d *pb.TransferDone) (uint64, error) {
	return m.log.Append(ctx, seq, &pb.RingEvent{Event: &pb.RingEvent_TransferDone{TransferDone: d}})
}

// ReportRefilled appends RefillDone unless data moved since the refill's
// fold, as the coordinators do.
func (m *ringMembership) ReportRefilled(ctx context.Context, id, inc string, basis, keys uint64) (uint64, error) {
	if err := m.f.WaitFor(ctx, basis); err != nil {
		return 0, err
	}
	st := m.f.State()
	if basis < st.HoldersSeq {
		return 0, status.Errorf(pb.ErrorCode_VERSION_CONFLICT, "data moved at %d", st.HoldersSeq)
	}
	return m.log.Append(ctx, st.Seq, &pb.RingEvent{Event: &pb.RingEvent_RefillDone{
		RefillDone: &pb.RefillDone{NodeId: id, Incarnation: inc, BasisSeq: basis, Keys: keys}}})
}
func (m *ringMembership) WaitFor(ctx context.Context, seq uint64) error { return m.f.WaitFor(ctx, seq) }
func (m *ringMembership) PublishProgress(ctx context.Context, p *pb.MigrationProgress) error {
	return ringlog.PublishProgress(ctx, m.js, subjects, p)
}

// waitState waits until the test's fold satisfies cond and returns it.
func (r *ringNet) waitState(what string, cond func(*membership.State) bool) *membership.State {
	r.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		ch := r.f.Changed()
		if st := r.f.State(); cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.t.Fatalf("timed out waiting for %s; ring at seq %d", what, r.f.State().Seq)
		}
	}
}

// start appends a change at the current sequence, retrying lost races, and
// returns the fold right after it.
func (r *ringNet) start(c *pb.ChangeStarted) *membership.State {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		st := r.f.State()
		require.NoError(r.t, st.CheckStart(c))
		seq, err := r.log.Append(ctx, st.Seq, &pb.RingEvent{Event: &pb.RingEvent_Started{Started: c}})
		if status.Is(err, pb.ErrorCode_VERSION_CONFLICT) {
			require.NoError(r.t, r.f.WaitFor(ctx, st.Seq+1))
			continue
		}
		require.NoError(r.t, err)
		require.NoError(r.t, r.f.WaitFor(ctx, seq))
		after := r.f.State()
		rec, _, ok := after.Migration(c.GetMigrationId())
		require.True(r.t, ok && rec.StartSeq == seq, "change %s was skipped", c.GetMigrationId())
		return after
	}
}

func registered(ids ...string) func(*membership.State) bool {
	return func(st *membership.State) bool {
		for _, id := range ids {
			if _, ok := st.Nodes[id]; !ok {
				return false
			}
		}
		return true
	}
}

func finished(id string) func(*membership.State) bool {
	return func(st *membership.State) bool {
		_, running, ok := st.Migration(id)
		return ok && !running
	}
}

func (r *ringNet) bootstrap(ids ...string) *membership.State {
	r.t.Helper()
	r.waitState("registration", registered(ids...))
	st := r.start(&pb.ChangeStarted{MigrationId: "boot", Type: pb.ChangeType_BOOTSTRAP, NodeIds: ids, Settings: &pb.ClusterSettings{VirtualNodes: 8}})
	require.Nil(r.t, st.Change, "a bootstrap moves nothing")
	return r.tenant("t")
}

// tenant records tenant id in the ring log, as a coordinator does when it
// creates one (nodes take data only for tenants the log knows), and returns
// the fold right after it.
func (r *ringNet) tenant(id string) *membership.State {
	r.t.Helper()
	return r.tenantRF(id, 1)
}

// tenantRF is tenant with a replication factor.
func (r *ringNet) tenantRF(id string, rf uint32) *membership.State {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	st := r.f.State()
	seq, err := r.log.Append(ctx, st.Seq, &pb.RingEvent{Event: &pb.RingEvent_Tenant{
		Tenant: &pb.TenantChanged{TenantId: id, ReplicationFactor: rf}}})
	require.NoError(r.t, err)
	require.NoError(r.t, r.f.WaitFor(ctx, seq))
	return r.f.State()
}

func memberConfig(t *testing.T, r *ringNet, id, dir string) storagenode.Config {
	cfg := testConfig(t, id, dir)
	cfg.Membership = r.membership()
	cfg.ReconcileInterval = 20 * time.Millisecond
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.EpochWait = 200 * time.Millisecond
	return cfg
}

// writeKeys applies n keys of tenant to node over NATS with epoch, from a
// few concurrent writers, and returns them.
func writeKeys(t *testing.T, nc *nats.Conn, node, tenant string, n int, epoch uint64) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%05d", i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	const writers = 8
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				resp := &pb.ApplyResponse{}
				errs <- bus.Request(context.Background(), nc, subjects.Node(node, bus.OpApply),
					&pb.ApplyRequest{TenantId: tenant, Key: keys[i], Value: []byte("v-" + keys[i]), Epoch: epoch, DeadlineUnixMs: soon()}, resp)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return keys
}

func digest(t *testing.T, nc *nats.Conn, node, tenant string, start, end, epoch uint64) *pb.DigestResponse {
	t.Helper()
	resp := &pb.DigestResponse{}
	require.NoError(t, bus.Request(context.Background(), nc, subjects.Node(node, bus.OpDigest),
		&pb.DigestRequest{TenantId: tenant, Range: &pb.HashRange{Start: start, End: end}, Epoch: epoch}, resp))
	return resp
}

// counter reads one series of a metrics set (0 when absent).
func counter(set *metrics.Set, series string) float64 {
	var out bytes.Buffer
	set.WritePrometheus(&out)
	for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(series+" ")); ok {
			var v float64
			_, _ = fmt.Sscan(string(rest), &v)
			return v
		}
	}
	return 0
}
