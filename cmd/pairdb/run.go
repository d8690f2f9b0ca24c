package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/config"
	"github.com/pairdb/pairdb/ops"
)

// startTimeout bounds the start of a part: connecting its stores, opening
// the ring log and Pebble. Past it the process exits and its supervisor
// restarts it.
const startTimeout = 30 * time.Second

// part is a started component as the process lifecycle sees it.
type part struct {
	// stop stops the component in its own order (drain subscriptions,
	// finish in-flight requests, close stores), bounded by ctx.
	stop func(ctx context.Context) error
	// checks are the readiness checks, by name; every name listed in the
	// process spec must be here.
	checks map[string]ops.Check
	// ready, if set, runs once the part serves (a banner, a log line).
	ready func(opsAddr string)
	// awaitReady holds ready back until every check passes (or
	// startTimeout), so what it announces is true when it is printed.
	awaitReady bool
}

// process describes one long-running command.
type process struct {
	name     string // for logs: "coordinator", "storage node", "dev cluster"
	settings config.Process
	metrics  []*metrics.Set
	// checkNames are the readiness checks the part will provide.
	checkNames []string
	start      func(ctx context.Context) (*part, error)
}

// errNotStarted is what every readiness check answers until the part is up.
var errNotStarted = errors.New("starting")

// run is the life of a long-running command:
//
//  1. listen for SIGTERM and SIGINT (a first one shuts down in order, a
//     second exits at once);
//  2. start the operations server, so /healthz answers while the part
//     starts and a taken ops_addr fails the process before it joins the
//     cluster; /readyz answers 503 "starting" until the part is up;
//  3. start the part (bounded by startTimeout, cut short by a signal);
//  4. on the first signal: switch /readyz to draining, stop the part, stop
//     the operations server, all within shutdown_timeout.
func run(log *zap.Logger, p process) error {
	for _, name := range config.UnknownEnv(os.Environ()) {
		log.Warn("environment variable is not a PairDB setting (a typo?); see `pairdb config docs`", zap.String("name", name))
	}
	sig := watchSignals(log, p.settings.ShutdownTimeout)
	defer sig.stop()
	return runUntil(sig.ctx, log, p)
}

// runUntil is run with the first signal replaced by the end of shutdown.
func runUntil(shutdown context.Context, log *zap.Logger, p process) error {
	var cur atomic.Pointer[part]
	checks := make(map[string]ops.Check, len(p.checkNames))
	for _, name := range p.checkNames {
		checks[name] = func(ctx context.Context) error {
			pt := cur.Load()
			if pt == nil {
				return errNotStarted
			}
			c := pt.checks[name]
			if c == nil {
				return errors.Newf("the %s has no check %q", p.name, name)
			}
			return c(ctx)
		}
	}
	srv, err := ops.Start(ops.Config{Addr: p.settings.OpsAddr, Logger: log.Named("ops")}, p.metrics, checks)
	if err != nil {
		return fmt.Errorf("ops_addr: %w", err)
	}
	stopOps := func(ctx context.Context) error { return srv.Stop(ctx) }

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	stopCancel := context.AfterFunc(shutdown, cancel)
	pt, err := p.start(ctx)
	stopCancel()
	cancel()
	if err != nil {
		sctx, scancel := context.WithTimeout(context.Background(), p.settings.ShutdownTimeout)
		defer scancel()
		_ = stopOps(sctx)
		if shutdown.Err() != nil {
			log.Info("stopped during start", zap.Error(err))
			return nil
		}
		return fmt.Errorf("start the %s: %w", p.name, err)
	}
	cur.Store(pt)
	if pt.ready != nil {
		if pt.awaitReady {
			if err := awaitChecks(shutdown, checks); err != nil {
				log.Warn(p.name+" is not ready yet; see "+ops.PathReadyz, zap.Error(err))
			}
		}
		if shutdown.Err() == nil {
			pt.ready(srv.Addr())
		}
	}
	log.Info(p.name+" serving", zap.String("ops_addr", srv.Addr()),
		zap.String("metrics", "http://"+srv.Addr()+ops.PathMetrics))

	<-shutdown.Done()
	began := time.Now()
	sctx, scancel := context.WithTimeout(context.Background(), p.settings.ShutdownTimeout)
	defer scancel()
	// Readiness first: orchestrators and load balancers stop routing here
	// while the part drains.
	srv.SetDraining(true)
	errs := pt.stop(sctx)
	errs = errors.CombineErrors(errs, stopOps(sctx))
	if errs != nil {
		log.Error(p.name+" stopped with errors", zap.Error(errs), zap.Duration("took", time.Since(began)))
		return errs
	}
	log.Info(p.name+" stopped", zap.Duration("took", time.Since(began)))
	return nil
}

// readyPoll is how often awaitChecks runs the checks again.
const readyPoll = 50 * time.Millisecond

// awaitChecks returns nil once every check passes in one round, or the last
// failure when startTimeout passes or shutdown begins.
func awaitChecks(shutdown context.Context, checks map[string]ops.Check) error {
	ctx, cancel := context.WithTimeout(shutdown, startTimeout)
	defer cancel()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		var failed error
		for name, check := range checks {
			if err := check(ctx); err != nil {
				failed = errors.Wrapf(err, "check %s", name)
				break
			}
		}
		if failed == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return failed
		case <-tick.C:
		}
	}
}

// adviceError appends advice to an error's message, keeping the error as the
// cause (errors.Wrap would put the advice in front of what went wrong).
type adviceError struct {
	cause  error
	advice string
}

func withAdvice(err error, advice string) error { return &adviceError{cause: err, advice: advice} }

func (e *adviceError) Error() string { return e.cause.Error() + "; " + e.advice }

func (e *adviceError) Unwrap() error { return e.cause }

// signals turns the first SIGTERM or SIGINT into a cancelled context and a
// second one into an immediate exit.
type signals struct {
	ctx    context.Context
	cancel context.CancelFunc
	ch     chan os.Signal
	quit   chan struct{}
	done   chan struct{}
}

func watchSignals(log *zap.Logger, grace time.Duration) *signals {
	ctx, cancel := context.WithCancel(context.Background())
	s := &signals{ctx: ctx, cancel: cancel, ch: make(chan os.Signal, 2), quit: make(chan struct{}), done: make(chan struct{})}
	signal.Notify(s.ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		defer close(s.done)
		select {
		case sig := <-s.ch:
			log.Info("shutting down; send the signal again to exit at once",
				zap.String("signal", sig.String()), zap.Duration("deadline", grace))
			cancel()
		case <-s.quit:
			return
		}
		select {
		case <-s.ch:
			fmt.Fprintln(os.Stderr, "pairdb: second signal, exiting now")
			_ = log.Sync()
			os.Exit(1)
		case <-s.quit:
		}
	}()
	return s
}

// stop stops listening; signals then take their default action again.
func (s *signals) stop() {
	signal.Stop(s.ch)
	close(s.quit)
	<-s.done
	s.cancel()
}

// redactURL hides passwords in a comma-separated list of NATS URLs.
func redactURL(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
