package storagenode

import (
	"context"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/storagenode/engine"
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

// hintDrainer is the node's hint consumer: one goroutine, owned by the Node,
// started by Start and stopped by Stop before Pebble closes. It fetches a
// batch, waits for the rate limiter to allow that many hints, merges the
// batch into Pebble (one commit per tenant and policy in the batch) and
// acks each hint only after the commit that holds it.
//
// A hint is checked like any merge (tenant incarnation, actors, policy),
// and is obsolete, so acked without merging, when it is older than the
// cluster's hint_max_age (a tombstone it predates may be purged), or when
// this node gained the key's arc after the hint's epoch (the transfer
// brought what the replicas hold, gains.go). If the key's arc moved away
// from this node meanwhile, the merged copy is harmless: range cleanup
// removes it, and a later gain of the arc clears it first.
type hintDrainer struct {
	n      *Node
	inbox  HintInbox
	lim    *rate.Limiter
	batch  int
	cancel context.CancelFunc
	done   chan struct{}

	replayed *metrics.Counter
	rejected *metrics.Counter
	pending  *metrics.Gauge
}

// startHints starts draining n's hints when the node has an inbox.
func (n *Node) startHints() {
	if n.cfg.Hints == nil {
		return
	}
	set, id := n.cfg.Metrics, n.cfg.ID
	ctx, cancel := context.WithCancel(context.Background())
	d := &hintDrainer{
		n:        n,
		inbox:    n.cfg.Hints,
		batch:    hintBatchSize(n.cfg.HintRate, n.cfg.HintBatch),
		cancel:   cancel,
		done:     make(chan struct{}),
		replayed: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_hints_replayed_total{node=%q}`, id)),
		rejected: set.GetOrCreateCounter(fmt.Sprintf(`pairdb_hints_rejected_total{node=%q}`, id)),
		pending:  set.GetOrCreateGauge(fmt.Sprintf(`pairdb_hints_pending{node=%q}`, id), nil),
	}
	d.lim = rate.NewLimiter(rate.Limit(n.cfg.HintRate), d.batch)
	// Start with an empty bucket: a node that comes back replays at the
	// configured pace from the first hint, with no initial burst.
	d.lim.AllowN(time.Now(), d.batch)
	n.hints = d
	go d.run(ctx)
}

// hintBatchSize is the fetch size: at most configured, and no more than a
// second's worth of hints, so a fetched batch never waits long for the
// limiter (it must be merged and acked well within the consumer's AckWait).
func hintBatchSize(hintRate float64, configured int) int {
	return max(1, min(configured, int(hintRate)))
}

// stop cancels the drainer and waits for it; every wait inside it is bound
// to the cancelled context.
func (d *hintDrainer) stop() {
	d.cancel()
	<-d.done
}

func (d *hintDrainer) run(ctx context.Context) {
	defer close(d.done)
	log := d.n.log
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
func (d *hintDrainer) round(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, hintPoll)
	hs, err := d.inbox.Fetch(fctx, d.batch)
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

// groupKey is one MergeBatch: a tenant under one conflict policy.
type groupKey struct {
	tenant string
	policy pb.ConflictPolicy
}

// apply merges a batch and settles each hint: acked after its commit,
// rejected when malformed, retried when the commit failed.
func (d *hintDrainer) apply(hs []Hint) error {
	groups := map[groupKey][]Hint{}
	var order []groupKey
	for _, h := range hs {
		req, err := h.Request()
		if err == nil {
			err = validateTarget(req.GetTenantId(), req.GetKey())
		}
		if err == nil && req.GetObject() == nil {
			err = errors.New("hint carries no object")
		}
		if err != nil {
			d.reject(h, err)
			continue
		}
		k := groupKey{tenant: req.GetTenantId(), policy: req.GetPolicy()}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], h)
	}
	var errs error
	for _, k := range order {
		errs = errors.CombineErrors(errs, d.applyGroup(k, groups[k]))
	}
	return errs
}

func (d *hintDrainer) applyGroup(k groupKey, hs []Hint) error {
	inc, gone, err := d.n.localTenant(k.tenant)
	if err != nil {
		for _, h := range hs {
			d.retry(h)
		}
		return errors.Wrapf(err, "replay %d hints of tenant %s", len(hs), k.tenant)
	}
	// A hint for an incarnation of the tenant that is gone (deleted, and
	// maybe created again) is settled without merging: that data is gone.
	kept := hs[:0:0]
	for _, h := range hs {
		req, _ := h.Request()
		if gone || (inc != 0 && req.GetTenantIncarnation() != 0 && req.GetTenantIncarnation() != inc) {
			d.ack(h)
			continue
		}
		kept = append(kept, h)
	}
	hs = kept
	if len(hs) == 0 {
		return nil
	}
	// Under the placement lock, so a gain (which takes it exclusively)
	// is either seen by the check or clears after the merge.
	d.n.placeMu.RLock()
	defer d.n.placeMu.RUnlock()
	hs = d.dropObsolete(k.tenant, hs)
	if len(hs) == 0 {
		return nil
	}
	items := make([]engine.MergeItem, len(hs))
	for i, h := range hs {
		req, _ := h.Request()
		items[i] = engine.MergeItem{Key: req.GetKey(), Object: dvvpb.ObjectFromProto(req.GetObject()), Minted: req.GetMinted()}
	}
	policy := dvvpb.PolicyFromProto(d.n.policyOf(k.tenant, k.policy))
	err = d.mergeBatch(k.tenant, items, policy)
	if status.CodeOf(err) == pb.ErrorCode_INVALID_ARGUMENT {
		// One malformed object fails the whole batch: merge one by one to
		// reject only the culprits.
		var errs error
		for i, h := range hs {
			err := d.mergeBatch(k.tenant, items[i:i+1], policy)
			switch {
			case err == nil:
				d.ack(h)
			case status.CodeOf(err) == pb.ErrorCode_INVALID_ARGUMENT:
				d.reject(h, err)
			default:
				d.retry(h)
				errs = errors.CombineErrors(errs, err)
			}
		}
		return errs
	}
	if err != nil {
		for _, h := range hs {
			d.retry(h)
		}
		return errors.Wrapf(err, "merge %d hints of tenant %s", len(hs), k.tenant)
	}
	for _, h := range hs {
		d.ack(h)
	}
	return nil
}

// dropObsolete acks the hints of hs that are obsolete (see hintDrainer)
// and returns the rest.
func (d *hintDrainer) dropObsolete(tenant string, hs []Hint) []Hint {
	maxAge := hintMaxAge
	if d.n.mem != nil {
		maxAge = d.n.mem.State().Settings.HintMaxAge
	}
	kept := hs[:0:0]
	for _, h := range hs {
		req, _ := h.Request()
		old := !h.Stored().IsZero() && time.Since(h.Stored()) > maxAge
		if old || (req.GetEpoch() > 0 && d.n.gainedSince(tenant, req.GetKey(), req.GetEpoch())) {
			d.n.met.hintsObsolete.Inc()
			d.ack(h)
			continue
		}
		kept = append(kept, h)
	}
	return kept
}

// mergeBatch commits items; the caller holds the placement lock shared,
// like a merge request, so it is ordered against range cleanup and gains.
func (d *hintDrainer) mergeBatch(tenant string, items []engine.MergeItem, p dvv.Policy) error {
	changed, err := d.n.mergeBatch(tenant, items, p)
	if changed > 0 {
		d.n.met.mergeChanged.Add(changed)
	}
	return err
}

// ack counts the hint before settling it, so that whoever sees it settled
// (the stream, a test) also sees it counted.
func (d *hintDrainer) ack(h Hint) {
	d.replayed.Inc()
	if err := h.Ack(); err != nil {
		// Delivered again after AckWait and merged again: harmless.
		d.n.log.Debug("hint ack failed", zap.Error(err))
	}
}

func (d *hintDrainer) retry(h Hint) {
	if err := h.Retry(hintRetryDelay); err != nil {
		d.n.log.Debug("hint nak failed", zap.Error(err))
	}
}

func (d *hintDrainer) reject(h Hint, cause error) {
	d.rejected.Inc()
	d.n.log.Error("dropping a hint that cannot be applied", zap.Error(cause))
	if err := h.Reject(cause.Error()); err != nil {
		d.n.log.Debug("hint term failed", zap.Error(err))
	}
}

func (d *hintDrainer) settle(hs []Hint, f func(Hint) error) {
	for _, h := range hs {
		if err := f(h); err != nil {
			d.n.log.Debug("settling a hint failed", zap.Error(err))
		}
	}
}
