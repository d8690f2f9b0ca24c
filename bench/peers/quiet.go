package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/pairdb/pairdb/bench"
)

// quiet makes phases wait for, and prefer, a machine on which processes
// outside the layout are idle: on a shared VM another session's build or
// test run can take half of the two cores for minutes, and a phase it
// overlaps measures that rather than the store. Waits and repeated phases
// draw on one budget, so a machine that never quiets down bounds the run.
type quiet struct {
	wait    time.Duration // longest wait before a phase for a quiet second
	cores   float64       // quiet: processes outside the layout used fewer cores
	retries int           // times a disturbed phase is run again
	budget  time.Duration // total time the waits and repeated phases may take
}

// spend takes d from the budget and says whether there was any left.
func (q *quiet) spend(d time.Duration) bool {
	if q.budget <= 0 {
		return false
	}
	q.budget -= d
	return true
}

// waitQuiet waits until processes outside the layout used fewer than
// q.cores over one second, for at most q.wait.
func (q *quiet) waitQuiet(ctx context.Context, procs []proc) {
	if q.wait <= 0 || q.budget <= 0 {
		return
	}
	start := time.Now()
	defer func() { q.spend(time.Since(start)) }()
	for time.Since(start) < q.wait && q.budget > time.Since(start) {
		m := startMeter(procs, "")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if m.stop(0).others < q.cores {
			return
		}
	}
}

// runPhase runs one phase after waiting for a quiet machine, again (up to
// q.retries times, within the budget) while processes outside the layout
// disturbed it, and keeps the least disturbed run.
func (q *quiet) runPhase(ctx context.Context, cfg config, rep int, store string, st bench.Store, pc *bench.PhaseConfig, log io.Writer) (Sample, error) {
	var best Sample
	for attempt := 1; ; attempt++ {
		q.waitQuiet(ctx, cfg.procs)
		m := startMeter(cfg.procs, store)
		res, err := bench.Run(ctx, store, st, *pc)
		if err != nil {
			return best, err
		}
		s := newSample(rep, store, res, pc.Concurrency, m.stop(res.Ops-res.Errors))
		s.Attempt = attempt
		fmt.Fprintf(log, "rep %d: %-15s %-4s %3d clients: %8.0f ops/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  idle layout %.2f cores, others %.2f (try %d)\n",
			rep, store, pc.Workload.Name, pc.Concurrency, s.OpsPerSec, s.P50Us/1e3, s.P99Us/1e3, s.Errors, s.IdleCores, s.OtherCores, attempt)
		if attempt == 1 || s.OtherCores < best.OtherCores {
			best = s
		}
		if s.OtherCores < q.cores || attempt > q.retries || ctx.Err() != nil || !q.spend(cfg.duration) {
			return best, nil
		}
	}
}
