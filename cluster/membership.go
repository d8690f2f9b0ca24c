package cluster

import (
	"context"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/jetstream/ringlog"
	"github.com/pairdb/pairdb/membership"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Ring is a coordinator's view of the ring log: the log, a follower folding
// it, and the migration progress stream; coordinators create both streams
// and are the only writers (storage nodes follow the log through NodeRing
// and ask the coordinators to append for them).
type Ring struct {
	*ringlog.Follower
	log      *ringlog.Log
	js       jetstream.JetStream
	progress jetstream.Stream
	subjects bus.Subjects
}

// RingConfig locates the ring log.
type RingConfig struct {
	Subjects       bus.Subjects
	StreamReplicas int
	Logger         *zap.Logger
}

// OpenRing opens the ring log and follows it until Close.
func OpenRing(ctx context.Context, nc *nats.Conn, cfg RingConfig) (*Ring, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, errors.Wrap(err, "open JetStream")
	}
	log, err := ringlog.Open(ctx, js, ringlog.Config{
		Subjects: cfg.Subjects, Replicas: cfg.StreamReplicas, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	progress, err := ringlog.OpenProgress(ctx, js, cfg.Subjects, cfg.StreamReplicas)
	if err != nil {
		return nil, err
	}
	f, err := log.Follow(ctx)
	if err != nil {
		return nil, err
	}
	return &Ring{Follower: f, log: log, js: js, progress: progress, subjects: cfg.Subjects}, nil
}

// Close stops following.
func (r *Ring) Close() { r.Follower.Stop() }

// Append adds an event to the ring log if it is still at expectedSeq.
func (r *Ring) Append(ctx context.Context, expectedSeq uint64, ev *pb.RingEvent) (uint64, error) {
	return r.log.Append(ctx, expectedSeq, ev)
}

// CatchUp returns once the fold holds every event the log held at the call.
func (r *Ring) CatchUp(ctx context.Context) error {
	seq, err := r.log.LastSeq(ctx)
	if err != nil {
		return err
	}
	return r.WaitFor(ctx, seq)
}

// PublishProgress records a target node's transfer progress.
func (r *Ring) PublishProgress(ctx context.Context, p *pb.MigrationProgress) error {
	return ringlog.PublishProgress(ctx, r.js, r.subjects, p)
}

// Progress reads the last progress of each target of migration id.
func (r *Ring) Progress(ctx context.Context, id string, nodes []string) map[string]*pb.MigrationProgress {
	return ringlog.Progress(ctx, r.progress, r.subjects, id, nodes)
}

// Bootstrap makes ids the first members of an empty ring once they have all
// registered, recording the cluster's settings; it does nothing when the
// ring already has members.
func (r *Ring) Bootstrap(ctx context.Context, ids []string, settings membership.Settings) error {
	if err := settings.Validate(); err != nil {
		return errors.Wrap(err, "bootstrap settings")
	}
	for {
		st := r.State()
		if len(st.Normal()) > 0 {
			return nil
		}
		missing := false
		for _, id := range ids {
			if _, ok := st.Nodes[id]; !ok {
				missing = true
			}
		}
		if missing {
			select {
			case <-r.Changed():
				continue
			case <-ctx.Done():
				return errors.Wrap(ctx.Err(), "waiting for the storage nodes to register")
			}
		}
		c := &pb.ChangeStarted{MigrationId: "bootstrap", Type: pb.ChangeType_BOOTSTRAP, NodeIds: ids, Settings: settings.Proto()}
		if err := st.CheckStart(c); err != nil {
			return err
		}
		seq, err := r.Append(ctx, st.Seq, &pb.RingEvent{Event: &pb.RingEvent_Started{Started: c}})
		if status.Is(err, pb.ErrorCode_VERSION_CONFLICT) {
			continue
		}
		if err != nil {
			return err
		}
		return r.WaitFor(ctx, seq)
	}
}

var _ interface {
	State() *membership.State
} = (*Ring)(nil)
