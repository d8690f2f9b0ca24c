// Package ringlog keeps the ring log in a JetStream stream: membership and
// replication-factor changes as durable events. Appends are conditional on
// the last sequence the writer folded, so of two racing admins exactly one
// wins; followers fold the stream into membership.State and follow it live.
package ringlog

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/jetstream/jsbucket"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// DefaultStream names the ring log stream.
const DefaultStream = "PAIRDB_RING"

// Config locates the log.
type Config struct {
	Stream   string
	Subjects bus.Subjects
	// Replicas of the stream: 1 on a single server, 3 on a cluster.
	Replicas int
	Logger   *zap.Logger
}

// Log is the ring log.
type Log struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string
	cfg     Config
}

func (cfg Config) withDefaults() Config {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return cfg
}

// Open creates the stream if needed (idempotently) and returns the log.
// Coordinators open it; storage nodes Attach.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Log, error) {
	cfg = cfg.withDefaults()
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	subject := cfg.Subjects.Events(bus.EventsRing)
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "PairDB ring log: membership and replication-factor changes",
		Subjects:    []string{subject},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		// Every event is kept: the ring is the fold of all of them, and they
		// are few (one per membership change and node start).
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardNew,
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "create ring log stream %s", cfg.Stream)
	}
	return &Log{js: js, stream: st, subject: subject, cfg: cfg}, nil
}

// Attach returns the log for reading, waiting (until ctx ends) for a
// coordinator to create the stream: storage nodes follow the log but
// neither create nor write it (their NATS users may not).
func Attach(ctx context.Context, js jetstream.JetStream, cfg Config) (*Log, error) {
	cfg = cfg.withDefaults()
	st, err := jsbucket.WaitStream(ctx, js, cfg.Stream, func() {
		cfg.Logger.Info("waiting for a coordinator to create the ring log", zap.String("stream", cfg.Stream))
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "open ring log stream %s", cfg.Stream)
	}
	return &Log{js: js, stream: st, subject: cfg.Subjects.Events(bus.EventsRing), cfg: cfg}, nil
}

// Append adds ev if the log's last sequence is still expectedSeq (the Seq of
// the state the caller decided on). A lost race is VERSION_CONFLICT: fold
// the newer events and decide again.
func (l *Log) Append(ctx context.Context, expectedSeq uint64, ev *pb.RingEvent) (uint64, error) {
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	if ev.GetUnixMs() == 0 {
		ev.UnixMs = time.Now().UnixMilli()
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return 0, status.Wrap(pb.ErrorCode_INTERNAL, err, "encode ring event")
	}
	ack, err := l.js.Publish(ctx, l.subject, data, jetstream.WithExpectLastSequence(expectedSeq))
	if err != nil {
		if jsbucket.IsConflict(err) {
			return 0, status.Wrap(pb.ErrorCode_VERSION_CONFLICT, err, "the ring changed since sequence %d; fold and retry", expectedSeq)
		}
		return 0, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "append to the ring log")
	}
	return ack.Sequence, nil
}

// LastSeq is the log's last sequence now (one stream info request).
func (l *Log) LastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "read the ring log's last sequence")
	}
	return info.State.LastSeq, nil
}

// Follower folds the log into a State and keeps following it.
type Follower struct {
	log    *zap.Logger
	mu     sync.Mutex
	state  *membership.State
	notify chan struct{} // closed and replaced on every new state
	cc     jetstream.ConsumeContext
	once   sync.Once
}

// Follow reads the whole log, then keeps folding new events. It returns
// once the state has caught up with the log as it was at the call (bounded
// by ctx), so the caller starts with a loaded ring.
func (l *Log) Follow(ctx context.Context) (*Follower, error) {
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	info, err := l.stream.Info(ctx)
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "read ring log info")
	}
	last := info.State.LastSeq
	f := &Follower{
		log:    l.cfg.Logger,
		state:  membership.New(),
		notify: make(chan struct{}),
	}
	// An ordered consumer: in-order, gap-free, recreated by the client after
	// a server or connection loss, resuming from the last folded sequence.
	// Filtered to the log's one subject: the consumer is then created on
	// an API subject that names it, the only form storage nodes' NATS
	// users may use on this stream (deploy/nats).
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: []string{l.subject},
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "follow ring log")
	}
	f.cc, err = cons.Consume(f.handle)
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "follow ring log")
	}
	if err := f.WaitFor(ctx, last); err != nil {
		f.Stop()
		return nil, errors.Wrap(err, "catch up with the ring log")
	}
	return f, nil
}

func (f *Follower) handle(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		f.log.Error("ring event without metadata", zap.Error(err))
		return
	}
	var ev pb.RingEvent
	if err := proto.Unmarshal(m.Data(), &ev); err != nil {
		// Skipped identically by every folder; the sequence still advances.
		f.log.Error("undecodable ring event skipped", zap.Uint64("seq", meta.Sequence.Stream), zap.Error(err))
		ev.Reset()
	}
	f.mu.Lock()
	next, skipped := f.state.Apply(meta.Sequence.Stream, &ev)
	if skipped != nil {
		f.log.Debug("ring event skipped", zap.Uint64("seq", meta.Sequence.Stream), zap.Error(skipped))
	}
	f.state = next
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

// State is the latest fold. It is immutable; hold it as long as needed.
func (f *Follower) State() *membership.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

// Changed returns a channel closed at the next folded event.
func (f *Follower) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notify
}

// WaitFor blocks until the fold has reached log sequence seq, or ctx ends.
func (f *Follower) WaitFor(ctx context.Context, seq uint64) error {
	for {
		f.mu.Lock()
		st, ch := f.state, f.notify
		f.mu.Unlock()
		if st.Seq >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return status.Wrap(pb.ErrorCode_UNAVAILABLE, ctx.Err(), "ring log at sequence %d, waiting for %d", st.Seq, seq)
		}
	}
}

// WaitForEpoch blocks until the fold's epoch is at least epoch, or ctx ends.
func (f *Follower) WaitForEpoch(ctx context.Context, epoch uint64) error {
	for {
		f.mu.Lock()
		st, ch := f.state, f.notify
		f.mu.Unlock()
		if st.Epoch >= epoch {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return status.Wrap(pb.ErrorCode_UNAVAILABLE, ctx.Err(), "ring at epoch %d, waiting for %d", st.Epoch, epoch)
		}
	}
}

// Stop ends following; idempotent.
func (f *Follower) Stop() {
	f.once.Do(func() {
		if f.cc != nil {
			f.cc.Stop()
		}
	})
}

// Register appends NodeRegistered for (id, incarnation) unless the log
// already knows it, retrying lost races.
func (l *Log) Register(ctx context.Context, f *Follower, id, incarnation string) error {
	for {
		st := f.State()
		if n, ok := st.Nodes[id]; ok && n.Incarnation == incarnation {
			return nil
		}
		_, err := l.Append(ctx, st.Seq, &pb.RingEvent{Event: &pb.RingEvent_Registered{
			Registered: &pb.NodeRegistered{NodeId: id, Incarnation: incarnation},
		}})
		if err == nil || !status.Is(err, pb.ErrorCode_VERSION_CONFLICT) {
			return err
		}
		if err := f.WaitFor(ctx, st.Seq+1); err != nil {
			return err
		}
	}
}

// Migrations is where target nodes publish transfer progress; the last
// message per subject is that node's progress.
const MigrationsStream = "PAIRDB_MIGRATIONS"

// OpenProgress creates the migration progress stream idempotently.
func OpenProgress(ctx context.Context, js jetstream.JetStream, subjects bus.Subjects, replicas int) (jetstream.Stream, error) {
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              MigrationsStream,
		Description:       "PairDB migration progress, one subject per (migration, target node)",
		Subjects:          []string{subjects.Events(bus.EventsMigrations) + ".>"},
		Storage:           jetstream.FileStorage,
		Replicas:          max(replicas, 1),
		MaxMsgsPerSubject: 1,
		MaxAge:            30 * 24 * time.Hour,
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "create migrations stream")
	}
	return st, nil
}

// ProgressSubject is where node publishes progress of migration id.
func ProgressSubject(subjects bus.Subjects, id, node string) string {
	return subjects.Events(bus.EventsMigrations) + "." + id + "." + node
}

// PublishProgress records p; the stream keeps the last one per subject.
func PublishProgress(ctx context.Context, js jetstream.JetStream, subjects bus.Subjects, p *pb.MigrationProgress) error {
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	data, err := proto.Marshal(p)
	if err != nil {
		return errors.Wrap(err, "encode progress")
	}
	_, err = js.Publish(ctx, ProgressSubject(subjects, p.GetMigrationId(), p.GetNodeId()), data)
	return errors.Wrap(err, "publish migration progress")
}

// Progress reads the last progress of every target of migration id.
func Progress(ctx context.Context, st jetstream.Stream, subjects bus.Subjects, id string, nodes []string) map[string]*pb.MigrationProgress {
	out := map[string]*pb.MigrationProgress{}
	for _, n := range nodes {
		m, err := st.GetLastMsgForSubject(ctx, ProgressSubject(subjects, id, n))
		if err != nil {
			continue
		}
		var p pb.MigrationProgress
		if proto.Unmarshal(m.Data, &p) == nil {
			out[n] = &p
		}
	}
	return out
}
