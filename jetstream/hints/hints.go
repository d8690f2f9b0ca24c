// Package hints keeps hinted handoff in a JetStream stream (DESIGN.md §3,
// §6): when a replica misses a write, the coordinator appends the merged
// object it could not deliver to that node's hint subject; the node drains
// its subject with a durable pull consumer when it runs again, merges, and
// acks after its batch is committed.
//
// Layout: one stream (DefaultStream) with subjects <prefix>.v1.hints.<node>,
// file storage, limits retention, and three limits, all discard-old. What a
// node still has to replay is its durable consumer's pending count; acked
// hints stay in the stream until a limit removes them, oldest first. (Work-
// queue retention would delete each hint at its ack, but a deletion on a
// server that fsyncs every write costs an fsync: measured, that capped
// replay near 2,700 hints/s on one server, against ~100,000/s without.)
// Because acked hints are the oldest, the limits drop them before any
// pending one:
//
//   - MaxAge (default 3h): a hint older than this is dropped; anti-entropy
//     repairs what it carried. Tombstone collection must wait longer.
//   - MaxPerNode (default 1,000,000 hints): the per-node cap. JetStream has a
//     per-subject message limit but no per-subject byte limit (nats-server
//     v2.15 / nats.go v1.55 StreamConfig: MaxMsgsPerSubject only), so the
//     per-node cap is a count; with DiscardOld the oldest hints of that node
//     go first and the newest writes are kept.
//   - MaxBytes (default 1 GiB): the byte cap of the whole stream, shared by
//     all nodes; over it the oldest hints of any node go first.
//
// Drops are not counted here: the server removes messages over MaxAge or a
// limit without an advisory or a counter, so nothing a client sees reports
// them. Operators see them as pairdb_hints_stored_total minus
// pairdb_hints_replayed_total minus pairdb_hints_pending for a node that has
// drained; anti-entropy is what heals them.
//
// Merges are idempotent, commutative and associative (dvv), so a hint may be
// delivered more than once or out of order with newer writes and changes
// nothing; a hint whose key moved to other nodes merges harmlessly and is
// removed by range cleanup.
package hints

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/jetstream/jsbucket"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Defaults for zero Config fields.
const (
	// DefaultStream names the hints stream.
	DefaultStream = "PAIRDB_HINTS"
	// DefaultMaxAge is how long an undelivered hint is kept. A node down
	// longer than this is healed by anti-entropy, not by hints.
	DefaultMaxAge = 3 * time.Hour
	// DefaultMaxPerNode caps the hints kept for one node (about 1 GiB at
	// 1 KiB objects).
	DefaultMaxPerNode int64 = 1_000_000
	// DefaultMaxBytes caps the stream as a whole.
	DefaultMaxBytes int64 = 1 << 30
	// DefaultAckWait is how long a fetched hint may stay unacknowledged
	// before it is delivered again. A batch is paced and committed well
	// within it.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxDeliver bounds redeliveries of one hint. Only a node that
	// cannot commit for a long time (or keeps crashing mid-batch) reaches
	// it; anti-entropy then covers the hint. Malformed hints are terminated
	// at once instead.
	DefaultMaxDeliver = 50
)

// Config locates and limits the stream. Coordinators create or update the
// stream with it, so every coordinator must use the same limits; storage
// nodes never create it (their NATS users may not): they wait for it.
type Config struct {
	// Stream names the stream; "" means DefaultStream.
	Stream string
	// Subjects gives the subject prefix.
	Subjects bus.Subjects
	// Replicas of the stream: 1 on a single server (default), 3 on a
	// cluster.
	Replicas int
	// MaxAge of an undelivered hint (default 3h).
	MaxAge time.Duration
	// MaxPerNode is the per-node cap in hints (default 1,000,000).
	MaxPerNode int64
	// MaxBytes is the stream's byte cap (default 1 GiB).
	MaxBytes int64
	// AckWait and MaxDeliver configure each node's consumer (defaults 30s
	// and 50).
	AckWait    time.Duration
	MaxDeliver int
	// Logger; nil discards.
	Logger *zap.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxPerNode == 0 {
		c.MaxPerNode = DefaultMaxPerNode
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return c, errors.Newf("hints: replicas must be between 1 and 5, got %d", c.Replicas)
	case c.MaxAge < 0 || c.AckWait < 0:
		return c, errors.Newf("hints: MaxAge (%s) and AckWait (%s) must be positive", c.MaxAge, c.AckWait)
	case c.MaxPerNode < 0 || c.MaxBytes < 0 || c.MaxDeliver < 0:
		return c, errors.Newf("hints: MaxPerNode (%d), MaxBytes (%d) and MaxDeliver (%d) must be positive",
			c.MaxPerNode, c.MaxBytes, c.MaxDeliver)
	}
	return c, nil
}

func (c Config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "PairDB hinted handoff: replica writes a node missed, one subject per node",
		Subjects:    []string{Subject(c.Subjects, "*")},
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		// Acks move the node's consumer; hints leave by the limits below.
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            c.MaxAge,
		MaxMsgsPerSubject: c.MaxPerNode,
		MaxBytes:          c.MaxBytes,
	}
}

// Subject is node's hint subject: <prefix>.v1.hints.<node>.
func Subject(s bus.Subjects, node string) string { return s.Hints(node) }

// DurableName is the durable consumer node drains its hints with.
func DurableName(node string) string { return "pairdb-hints-" + node }

// Queue appends hints. It is safe for concurrent use.
type Queue struct {
	js  jetstream.JetStream
	cfg Config
}

// Open creates the stream or updates it to cfg's limits (idempotent, so
// every coordinator calls it at start) and returns the queue.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Queue, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, cfg.streamConfig()); err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err,
			"create or update hints stream %s (max age %s, %d hints per node, %d bytes)", cfg.Stream, cfg.MaxAge, cfg.MaxPerNode, cfg.MaxBytes)
	}
	return &Queue{js: js, cfg: cfg}, nil
}

// Add appends m, the merge node missed, to node's hints. It returns once the
// stream has stored it (bounded by ctx, or jsbucket.DefaultTimeout without a
// deadline).
func (q *Queue) Add(ctx context.Context, node string, m *pb.MergeRequest) error {
	if err := keyspace.ValidateTenantID(node); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "hint for an invalid node id")
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return status.Wrap(pb.ErrorCode_INTERNAL, err, "encode hint for node %s", node)
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	subject := Subject(q.cfg.Subjects, node)
	if _, err := q.js.Publish(ctx, subject, data); err != nil {
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "store hint for node %s on %s", node, subject)
	}
	return nil
}

// Inbox is one node's durable consumer of its hints. Fetch is meant for one
// goroutine at a time; hints may be acked from any goroutine.
type Inbox struct {
	cons jetstream.Consumer
	node string
	log  *zap.Logger
}

// OpenInbox returns node's inbox: it waits (until ctx ends) for a
// coordinator to create the stream — coordinators own it and its limits —
// then creates or updates the node's durable consumer, filtered to the
// node's own subject (the one consumer a node's NATS user may create on
// the stream). The consumer lives in the stream (file storage), so a
// restarted node, coordinator or server resumes where the node left off.
func OpenInbox(ctx context.Context, js jetstream.JetStream, cfg Config, node string) (*Inbox, error) {
	if err := keyspace.ValidateTenantID(node); err != nil {
		return nil, errors.Wrap(err, "hints: node id")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	stream, err := jsbucket.WaitStream(ctx, js, cfg.Stream, func() {
		cfg.Logger.Info("waiting for a coordinator to create the hints stream", zap.String("stream", cfg.Stream), zap.String("node", node))
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "open hints stream %s", cfg.Stream)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       DurableName(node),
		Description:   "PairDB hints of storage node " + node,
		FilterSubject: Subject(cfg.Subjects, node),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    cfg.MaxDeliver,
		Replicas:      cfg.Replicas,
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "create hint consumer %s", DurableName(node))
	}
	return &Inbox{cons: cons, node: node, log: cfg.Logger.With(zap.String("node", node))}, nil
}

// Hint is one delivered hint. Exactly one of Ack, Retry or Reject should be
// called; an unsettled hint is delivered again after AckWait.
type Hint struct {
	msg jetstream.Msg
	req *pb.MergeRequest
	err error
	// pending is the consumer's undelivered count after this hint.
	pending uint64
	stored  time.Time
}

// Request is the merge the node missed, or why the hint is unreadable
// (then Reject it: no delivery will ever read it).
func (h *Hint) Request() (*pb.MergeRequest, error) { return h.req, h.err }

// Pending is how many hints of this node were still undelivered when this
// one was.
func (h *Hint) Pending() uint64 { return h.pending }

// Stored is when the hint was stored (the stream's timestamp; zero when
// unknown).
func (h *Hint) Stored() time.Time { return h.stored }

// Ack settles the hint: it is not delivered again. Acks are not confirmed:
// a lost ack only means the hint is merged again, which changes nothing.
func (h *Hint) Ack() error { return errors.Wrap(h.msg.Ack(), "ack hint") }

// Retry asks for the hint again after delay (its delivery count grows).
func (h *Hint) Retry(delay time.Duration) error {
	return errors.Wrap(h.msg.NakWithDelay(delay), "nak hint")
}

// Reject drops a hint no delivery can apply, with reason kept in the
// server's advisory.
func (h *Hint) Reject(reason string) error {
	return errors.Wrap(h.msg.TermWithReason(reason), "terminate hint")
}

// Fetch returns up to max hints: at once what is there, else it waits
// until ctx ends (it should carry a deadline: a long poll) for the first one
// and returns it with whatever else has arrived. None and a nil error means
// none arrived in time.
func (in *Inbox) Fetch(ctx context.Context, max int) ([]*Hint, error) {
	// A pull request completes when its batch is full or it expires, so a
	// backlog is taken without waiting and an idle inbox long-polls for
	// one hint; neither waits on a partly filled batch.
	hs, err := in.pull(ctx, max, true)
	if err != nil || len(hs) > 0 {
		return hs, err
	}
	if hs, err = in.pull(ctx, 1, false); err != nil || len(hs) == 0 || max == 1 {
		return hs, err
	}
	more, err := in.pull(ctx, max-1, true)
	if err != nil {
		// Keep the one in hand; the rest stays in the stream.
		in.log.Debug("fetching more hints failed", zap.Error(err))
	}
	return append(hs, more...), nil
}

// pull runs one pull request: noWait returns what is available now, else
// it waits until ctx ends or batch hints arrived.
func (in *Inbox) pull(ctx context.Context, batch int, noWait bool) ([]*Hint, error) {
	if ctx.Err() != nil {
		return nil, nil
	}
	var (
		mb  jetstream.MessageBatch
		err error
	)
	if noWait {
		mb, err = in.cons.FetchNoWait(batch)
	} else {
		mb, err = in.cons.Fetch(batch, jetstream.FetchContext(ctx))
	}
	if err != nil {
		return nil, errors.Wrapf(err, "fetch hints of node %s", in.node)
	}
	var out []*Hint
	for msg := range mb.Messages() {
		h := &Hint{msg: msg, req: new(pb.MergeRequest)}
		if meta, err := msg.Metadata(); err == nil {
			h.pending, h.stored = meta.NumPending, meta.Timestamp
		}
		if err := proto.Unmarshal(msg.Data(), h.req); err != nil {
			h.req, h.err = nil, errors.Wrapf(err, "hint on %s is not a MergeRequest", msg.Subject())
		}
		out = append(out, h)
	}
	if err := mb.Error(); err != nil && ctx.Err() == nil && len(out) == 0 {
		return nil, errors.Wrapf(err, "fetch hints of node %s", in.node)
	}
	return out, nil
}

// Pending is how many hints wait for the node: undelivered plus delivered
// and not yet acked.
func (in *Inbox) Pending(ctx context.Context) (uint64, error) {
	ctx, cancel := jsbucket.WithDefaultTimeout(ctx)
	defer cancel()
	info, err := in.cons.Info(ctx)
	if err != nil {
		return 0, errors.Wrapf(err, "read hint consumer of node %s", in.node)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}
