// Package bench is PairDB's load generator: the YCSB core workloads (and
// put-only, get-only) against PairDB, and the same workloads against two
// baselines on the same NATS server, so every figure comes with a
// reference measured in the same run.
package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/pairdb/pairdb/status"
)

// PhaseConfig is what one measured phase needs.
type PhaseConfig struct {
	Workload     Workload
	Distribution Distribution
	// Records is the key space of reads and updates: indexes [0, Records).
	Records     uint64
	ValueSize   int
	Keys        KeyFormat
	Concurrency int
	// Duration bounds a run phase; Ops, when set, stops it after that many
	// operations (whichever comes first).
	Duration time.Duration
	Ops      uint64
	// Timeout bounds one operation.
	Timeout time.Duration
	// Batch, above 1, makes every read a get_many and every update a
	// put_many of that many keys (the store must be a BatchStore); ops
	// and ops/s then count keys, latencies are per batch.
	Batch int
	// Seed makes the key and operation sequences repeatable (0: random).
	Seed uint64
	// Progress, when set, receives a line every ProgressEvery.
	Progress      io.Writer
	ProgressEvery time.Duration
}

// Validate checks the configuration and fills defaults.
func (c *PhaseConfig) Validate() error {
	switch {
	case c.Records == 0:
		return errors.New("records must be at least 1")
	case c.ValueSize < 0 || c.ValueSize > 4<<20:
		return errors.Newf("value size %d is outside 0–4 MiB", c.ValueSize)
	case c.Concurrency < 1 || c.Concurrency > 100_000:
		return errors.Newf("concurrency %d is outside 1–100000", c.Concurrency)
	case c.Duration <= 0 && c.Ops == 0:
		return errors.New("a run needs a duration or an operation count")
	case c.Timeout <= 0:
		return errors.New("the operation timeout must be positive")
	case c.Batch < 0 || c.Batch > 1000:
		return errors.Newf("batch %d is outside 0–1000", c.Batch)
	case c.Batch > 1 && (c.Workload.Insert > 0 || c.Workload.RMW > 0):
		return errors.Newf("batches are for reads and updates only; workload %s inserts or reads-modifies-writes", c.Workload.Name)
	}
	if c.Distribution == "" {
		c.Distribution = DistZipfian
	}
	if _, err := ParseDistribution(string(c.Distribution)); err != nil {
		return err
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = time.Second
	}
	// Workload D inserts past Records; leave room for a billion inserts.
	return c.Keys.Validate(c.Records + 1_000_000_000)
}

// PhaseResult is the outcome of one phase.
type PhaseResult struct {
	Name       string        `json:"name"`
	Workload   string        `json:"workload"`
	Elapsed    time.Duration `json:"-"`
	Seconds    float64       `json:"seconds"`
	Ops        uint64        `json:"ops"`
	OpsPerSec  float64       `json:"ops_per_sec"`
	Errors     uint64        `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	PerOp      []OpResult    `json:"per_op"`
}

// OpResult summarises one kind of operation. Latencies are in microseconds.
type OpResult struct {
	Op         string            `json:"op"`
	Count      uint64            `json:"count"`
	Errors     uint64            `json:"errors"`
	ErrorCodes map[string]uint64 `json:"error_codes,omitempty"`
	NotFound   uint64            `json:"not_found"`
	OpsPerSec  float64           `json:"ops_per_sec"`
	MeanUs     float64           `json:"mean_us"`
	P50Us      float64           `json:"p50_us"`
	P95Us      float64           `json:"p95_us"`
	P99Us      float64           `json:"p99_us"`
	P999Us     float64           `json:"p999_us"`
	MaxUs      float64           `json:"max_us"`
}

// Op returns the summary of one kind of operation, if the phase ran it.
func (r *PhaseResult) Op(op Op) (OpResult, bool) {
	return r.opByName(op.String())
}

// worker is one closed-loop client: it issues the next operation when the
// last one answered. Its state is its own; results are merged at the end.
type worker struct {
	rng      *mrand.Rand
	keys     KeyChooser
	value    []byte
	hists    [numOps]*Histogram
	errs     [numOps]map[string]uint64
	notFound [numOps]uint64
	firstErr error
}

func newWorker(seed uint64, id int, valueSize int, keys KeyChooser) *worker {
	w := &worker{rng: mrand.New(mrand.NewPCG(seed, uint64(id))), keys: keys, value: make([]byte, valueSize)}
	_, _ = rand.Read(w.value)
	for i := range w.hists {
		w.hists[i] = NewHistogram()
	}
	return w
}

func (w *worker) fail(op Op, err error) {
	if w.errs[op] == nil {
		w.errs[op] = map[string]uint64{}
	}
	w.errs[op][status.CodeOf(err).String()]++
	if w.firstErr == nil {
		w.firstErr = errors.Wrapf(err, "%s", op)
	}
}

// phase is the shared state of one running phase.
type phase struct {
	cfg      PhaseConfig
	store    Store
	name     string
	ops      atomic.Uint64 // operations finished (success or error)
	errs     atomic.Uint64
	claimed  atomic.Uint64 // operations started, against cfg.Ops
	inserts  atomic.Uint64 // next insert index
	inserted atomic.Uint64 // inserts acknowledged, for the latest distribution
}

// Run runs cfg.Workload against store with cfg.Concurrency closed-loop
// workers until cfg.Duration passes or cfg.Ops operations were issued, or
// ctx ends. Operation errors are counted, not returned; the error is for a
// configuration that cannot run.
func Run(ctx context.Context, name string, store Store, cfg PhaseConfig) (*PhaseResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &phase{cfg: cfg, store: store, name: name}
	p.inserts.Store(cfg.Records)
	seed := cfg.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	var zipf Zipfian
	if cfg.Workload.Latest {
		zipf = NewZipfian(cfg.Records, ZipfianConstant)
	}
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		var keys KeyChooser
		switch {
		case cfg.Workload.Latest:
			keys = NewLatest(zipf, func() uint64 { return cfg.Records + p.inserted.Load() })
		case cfg.Distribution == DistUniform:
			keys = Uniform{N: cfg.Records}
		default:
			keys = NewScrambledZipfian(cfg.Records)
		}
		workers[i] = newWorker(seed, i, cfg.ValueSize, keys)
	}
	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	elapsed := p.drive(runCtx, workers, func(w *worker) bool {
		if cfg.Ops > 0 && p.claimed.Add(1) > cfg.Ops {
			return false
		}
		p.one(ctx, w, cfg.Workload.Next(w.rng))
		return true
	})
	return p.result(cfg.Workload.Name, workers, elapsed), nil
}

// Load inserts records [0, cfg.Records) with cfg.Concurrency workers. It
// ignores Duration and Ops: it ends when every record was written once (or
// ctx ends).
func Load(ctx context.Context, name string, store Store, cfg PhaseConfig) (*PhaseResult, error) {
	cfg.Ops = max(cfg.Ops, 1) // Validate wants a bound; the record count is it.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &phase{cfg: cfg, store: store, name: name}
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		workers[i] = newWorker(cfg.Seed, i, cfg.ValueSize, nil)
	}
	elapsed := p.drive(ctx, workers, func(w *worker) bool {
		i := p.inserts.Add(1) - 1
		if i >= cfg.Records {
			return false
		}
		p.timed(ctx, w, OpInsert, func(octx context.Context) (bool, error) {
			return true, store.Put(octx, cfg.Keys.Key(i), w.value, nil)
		})
		return true
	})
	return p.result("load", workers, elapsed), nil
}

// drive runs step on every worker until it returns false or ctx ends, with
// a progress line every cfg.ProgressEvery, and returns the elapsed time.
func (p *phase) drive(ctx context.Context, workers []*worker, step func(*worker) bool) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil && step(w) {
			}
		})
	}
	done := make(chan struct{})
	var progress sync.WaitGroup
	if p.cfg.Progress != nil {
		progress.Go(func() { p.report(start, done) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(done)
	progress.Wait()
	return elapsed
}

func (p *phase) report(start time.Time, done <-chan struct{}) {
	tick := time.NewTicker(p.cfg.ProgressEvery)
	defer tick.Stop()
	last, lastAt := uint64(0), start
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			ops := p.ops.Load()
			fmt.Fprintf(p.cfg.Progress, "%s: %4.0fs %10d ops %9.0f ops/s (last %s: %.0f ops/s) errors %d\n",
				p.name, now.Sub(start).Seconds(), ops, float64(ops)/now.Sub(start).Seconds(),
				p.cfg.ProgressEvery, float64(ops-last)/now.Sub(lastAt).Seconds(), p.errs.Load())
			last, lastAt = ops, now
		}
	}
}

// one issues one operation of kind op.
func (p *phase) one(ctx context.Context, w *worker, op Op) {
	if p.weight(op) > 1 {
		p.batch(ctx, w, op, p.store.(BatchStore))
		return
	}
	switch op {
	case OpRead:
		key := p.cfg.Keys.Key(w.keys.Next(w.rng))
		p.timed(ctx, w, op, func(octx context.Context) (bool, error) {
			r, err := p.store.Get(octx, key)
			return r.Found, err
		})
	case OpUpdate:
		key := p.cfg.Keys.Key(w.keys.Next(w.rng))
		p.timed(ctx, w, op, func(octx context.Context) (bool, error) {
			return true, p.store.Put(octx, key, w.value, nil)
		})
	case OpInsert:
		i := p.inserts.Add(1) - 1
		ok := p.timed(ctx, w, op, func(octx context.Context) (bool, error) {
			return true, p.store.Put(octx, p.cfg.Keys.Key(i), w.value, nil)
		})
		if ok {
			p.inserted.Add(1)
		}
	case OpRMW:
		key := p.cfg.Keys.Key(w.keys.Next(w.rng))
		p.timed(ctx, w, op, func(octx context.Context) (bool, error) {
			r, err := p.store.Get(octx, key)
			if err != nil {
				return false, err
			}
			return r.Found, p.store.Put(octx, key, w.value, &r)
		})
	}
}

// batch issues one get_many or put_many of cfg.Batch keys; it counts as
// that many operations.
func (p *phase) batch(ctx context.Context, w *worker, op Op, bs BatchStore) {
	keys := make([]string, p.cfg.Batch)
	seen := make(map[string]bool, len(keys))
	for i := range keys {
		k := p.cfg.Keys.Key(w.keys.Next(w.rng))
		for seen[k] { // put_many refuses a key twice
			k = p.cfg.Keys.Key(w.keys.Next(w.rng))
		}
		seen[k], keys[i] = true, k
	}
	p.timedN(ctx, w, op, uint64(len(keys)), func(octx context.Context) (bool, error) {
		if op == OpRead {
			found, err := bs.GetMany(octx, keys)
			return found == len(keys), err
		}
		return true, bs.PutMany(octx, keys, w.value)
	})
}

// timed runs fn under the operation timeout and records its latency, or
// its error. An operation cut short because ctx ended is not counted.
func (p *phase) timed(ctx context.Context, w *worker, op Op, fn func(context.Context) (found bool, err error)) bool {
	return p.timedN(ctx, w, op, 1, fn)
}

// timedN is timed for an operation that counts as n.
func (p *phase) timedN(ctx context.Context, w *worker, op Op, n uint64, fn func(context.Context) (found bool, err error)) bool {
	octx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	start := time.Now()
	found, err := fn(octx)
	took := time.Since(start)
	cancel()
	if ctx.Err() != nil {
		return false
	}
	p.ops.Add(n)
	if err != nil {
		p.errs.Add(1)
		w.fail(op, err)
		return false
	}
	w.hists[op].Record(took)
	if !found {
		w.notFound[op]++
	}
	return true
}

func (p *phase) result(workload string, workers []*worker, elapsed time.Duration) *PhaseResult {
	r := &PhaseResult{Name: p.name, Workload: workload, Elapsed: elapsed, Seconds: elapsed.Seconds()}
	for op := range numOps {
		h := NewHistogram()
		var notFound, errs uint64
		codes := map[string]uint64{}
		for _, w := range workers {
			h.Merge(w.hists[op])
			notFound += w.notFound[op]
			for c, n := range w.errs[op] {
				codes[c] += n
				errs += n
			}
			if w.firstErr != nil && r.FirstError == "" {
				r.FirstError = w.firstErr.Error()
			}
		}
		if h.Count()+errs == 0 {
			continue
		}
		if len(codes) == 0 {
			codes = nil
		}
		// A batch counts as its keys; its latency is the batch's.
		k := p.weight(op)
		count := h.Count() * k
		errs *= k
		r.Ops += count + errs
		r.Errors += errs
		r.PerOp = append(r.PerOp, OpResult{
			Op: op.String(), Count: count, Errors: errs, ErrorCodes: codes, NotFound: notFound,
			OpsPerSec: float64(count) / elapsed.Seconds(),
			MeanUs:    us(h.Mean()), P50Us: us(h.Quantile(0.5)), P95Us: us(h.Quantile(0.95)),
			P99Us: us(h.Quantile(0.99)), P999Us: us(h.Quantile(0.999)), MaxUs: us(h.Max()),
		})
	}
	r.OpsPerSec = float64(r.Ops-r.Errors) / elapsed.Seconds()
	return r
}

// weight is how many keys one operation of kind op covers: cfg.Batch for
// the reads and updates of a batch store, else 1.
func (p *phase) weight(op Op) uint64 {
	if _, ok := p.store.(BatchStore); ok && p.cfg.Batch > 1 && (op == OpRead || op == OpUpdate) {
		return uint64(p.cfg.Batch)
	}
	return 1
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
