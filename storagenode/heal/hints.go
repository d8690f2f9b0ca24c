package heal

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// HintInbox is this node's hinted-handoff queue (jetstream/hints behind an
// adapter in cluster/). Fetch is called from one goroutine at a time and
// must return when ctx ends; hints may be settled from any goroutine.
type HintInbox interface {
	// Fetch waits, until ctx ends, for up to max hints; none and a nil
	// error means none arrived in time.
	Fetch(ctx context.Context, max int) ([]Hint, error)
}

// Hint is one delivered hint. Exactly one of Ack, Retry or Reject is called.
type Hint interface {
	// Request is the merge this node missed, or why the hint is unreadable.
	Request() (*pb.MergeRequest, error)
	// Pending is how many hints were still undelivered after this one.
	Pending() uint64
	// Stored is when the hint was stored.
	Stored() time.Time
	// Ack settles the hint once its merge is committed.
	Ack() error
	// Retry has the hint delivered again after delay.
	Retry(delay time.Duration) error
	// Reject drops a hint that no delivery can apply.
	Reject(reason string) error
}

const (
	// hintPoll is how long one fetch waits for hints when there are none:
	// a long poll, cut short by Stop.
	hintPoll = 5 * time.Second
	// hintRetryDelay is how soon a hint whose merge failed is tried again.
	hintRetryDelay = time.Second
	// hintMaxBackoff bounds the pause after failed fetches (NATS away).
	hintMaxBackoff = 30 * time.Second
	// hintMaxAge is the hint age past which a node without membership
	// (static mode) drops a hint; members use the ring log's.
	hintMaxAge = 3 * time.Hour
)

// HintsConfig is what hint replay is built from. Every field is required
// except Ring, which is nil in static mode.
type HintsConfig struct {
	Inbox HintInbox
	// Rate is the replay pace in hints per second; Batch the hints fetched
	// and committed together (capped at a second's worth).
	Rate  float64
	Batch int
	Store Store
	// Ring is the ring log the node follows, for the cluster's
	// hint_max_age; nil in static mode, where hintMaxAge applies.
	Ring Ring
	// GainedSince reports whether this node gained the arc holding
	// (tenant, key) in a change that started after epoch: a hint minted at
	// epoch is then obsolete here (the node's gain records).
	GainedSince func(tenant, key string, epoch uint64) bool
	// Placement is the shared side of the node's placement lock
	// (RWMutex.RLocker): merges hold it, so a gain or a range cleanup
	// (which take it exclusively) is ordered against them.
	Placement sync.Locker
	Logger    *zap.Logger
	Metrics   *Metrics
}

// Hints is the node's hint consumer: one goroutine, owned by the node,
// started by StartHints and stopped by Stop before Pebble closes. It
// fetches a batch, waits for the rate limiter to allow that many hints,
// merges the batch into Pebble (one commit per tenant and policy in the
// batch) and acks each hint only after the commit that holds it.
//
// A hint is checked like any merge (tenant incarnation, actors, policy),
// and is obsolete, so acked without merging, when it is older than the
// cluster's hint_max_age (a tombstone it predates may be purged), or when
// this node gained the key's arc after the hint's epoch (the transfer
// brought what the replicas hold, see HintsConfig.GainedSince). If the
// key's arc moved away from this node meanwhile, the merged copy is
// harmless: range cleanup removes it, and a later gain of the arc clears
// it first.
type Hints struct {
	cfg    HintsConfig
	log    *zap.Logger
	met    *Metrics
	lim    *rate.Limiter
	batch  int
	cancel context.CancelFunc
	done   chan struct{}

	replayed *metrics.Counter
	rejected *metrics.Counter
	pending  *metrics.Gauge
}

// StartHints starts draining cfg.Inbox.
func StartHints(cfg HintsConfig) *Hints {
	set, id := cfg.Metrics.set, cfg.Metrics.node
	ctx, cancel := context.WithCancel(context.Background())
	d := &Hints{
		cfg:      cfg,
		log:      cfg.Logger,
		met:      cfg.Metrics,
		batch:    hintBatchSize(cfg.Rate, cfg.Batch),
		cancel:   cancel,
		done:     make(chan struct{}),
		replayed: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_hints_replayed_total{node=%q}`, id)),
		rejected: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_hints_rejected_total{node=%q}`, id)),
		pending:  set.GetOrCreateGauge(fmt.Sprintf(`pairdb_hints_pending{node=%q}`, id), nil),
	}
	d.lim = rate.NewLimiter(rate.Limit(cfg.Rate), d.batch)
	// Start with an empty bucket: a node that comes back replays at the
	// configured pace from the first hint, with no initial burst.
	d.lim.AllowN(time.Now(), d.batch)
	go d.run(ctx)
	return d
}

// hintBatchSize is the fetch size: at most configured, and no more than a
// second's worth of hints, so a fetched batch never waits long for the
// limiter (it must be merged and acked well within the consumer's AckWait).
func hintBatchSize(hintRate float64, configured int) int {
	return max(1, min(configured, int(hintRate)))
}

// Stop cancels the drainer and waits for it; every wait inside it is bound
// to the cancelled context.
func (d *Hints) Stop() {
	d.cancel()
	<-d.done
}

func (d *Hints) run(ctx context.Context) {
	defer close(d.done)
	log := d.log
	var backoff time.Duration
	for ctx.Err() == nil {
		err := d.round(ctx)
		if err == nil {
			if backoff > 0 {
				log.Info("hint replay recovered")
			}
			backoff = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if backoff == 0 {
			log.Warn("hint replay failed; will retry", zap.Error(err))
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), hintMaxBackoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// round fetches, paces, merges and settles one batch.
func (d *Hints) round(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, hintPoll)
	hs, err := d.cfg.Inbox.Fetch(fctx, d.batch)
	cancel()
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		d.pending.Set(0)
		return nil
	}
	if err := d.lim.WaitN(ctx, len(hs)); err != nil {
		// Stopping: have them delivered again at once to the next run.
		d.settle(hs, func(h Hint) error { return h.Retry(0) })
		return errors.Wrap(err, "pace hints")
	}
	d.pending.Set(float64(hs[len(hs)-1].Pending()))
	return d.apply(hs)
}
