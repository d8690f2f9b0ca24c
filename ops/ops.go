// Package ops is the HTTP server operators and orchestrators talk to:
// Prometheus metrics on /metrics, liveness on /healthz and readiness on
// /readyz. Every PairDB process that runs for long (coordinator, storage
// node, dev cluster) serves one, on DefaultAddr unless configured otherwise.
//
//   - /metrics writes every injected *metrics.Set in the Prometheus text
//     format, followed by the Go runtime and process metrics
//     (go_*, process_*).
//   - /healthz answers 200 "ok" as long as the process serves HTTP. It checks
//     nothing else on purpose: a failing liveness probe restarts the
//     container, which cures a wedged process but not an unreachable
//     database.
//   - /readyz runs every named Check concurrently, each under CheckTimeout,
//     and answers 200 with a JSON report when all pass, 503 with the same
//     report otherwise. After SetDraining(true) it answers 503 at once
//     without running checks, so load balancers stop routing to a process
//     that is shutting down.
//   - /debug/pprof/ serves Go's runtime profiles (net/http/pprof).
package ops

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
)

const (
	// DefaultPort is the operations port: the Dockerfile, the Kubernetes
	// probes, Services and Prometheus annotations in deploy/ all use it
	// (deploy/deploy_test.go checks they agree).
	DefaultPort = 9090
	// DefaultAddr listens on every interface, because in a container the
	// kubelet and Prometheus reach the pod's IP, not its loopback. On a
	// shared machine pass "127.0.0.1:9090" to keep it local.
	DefaultAddr = ":9090"
	// DefaultCheckTimeout bounds each readiness check. It is short: a
	// readiness probe that waits long tells the orchestrator nothing it
	// would not learn from the next probe.
	DefaultCheckTimeout = 2 * time.Second
	// DefaultShutdownTimeout bounds Stop when its context has no deadline.
	DefaultShutdownTimeout = 5 * time.Second

	// Paths served.
	PathMetrics = "/metrics"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathPprof   = "/debug/pprof/"
)

// Check reports whether one dependency is usable: nil means healthy, an
// error says why not, in words an operator can act on. A Check should return
// once ctx is done. Different checks run concurrently; the server never runs
// two calls of the same check at once (see runChecks).
type Check func(ctx context.Context) error

// Config configures the server. Zero values take the defaults above.
type Config struct {
	// Addr is the listen address, host:port (default DefaultAddr). Port 0
	// picks a free port; Server.Addr reports the one bound.
	Addr string
	// CheckTimeout bounds each readiness check (default
	// DefaultCheckTimeout).
	CheckTimeout time.Duration
	// Logger receives the server's logs; nil discards them.
	Logger *zap.Logger
}

// Server is a running operations server. Its methods are safe for
// concurrent use.
type Server struct {
	cfg      Config
	log      *zap.Logger
	sets     []*metrics.Set
	checks   []*namedCheck
	http     *http.Server
	addr     string
	served   chan struct{} // closed when Serve returned
	draining atomic.Bool

	stopOnce sync.Once
	stopErr  error
}

type namedCheck struct {
	name    string
	check   Check
	running atomic.Bool // a call is in flight (it may have outlived its probe)
}

// Start listens on cfg.Addr and serves until Stop. sets are written to
// /metrics in order (nil and repeated sets are skipped, so parts sharing one
// set may all pass it); ready names the checks /readyz runs. Start returns
// once the listener is bound, so the address is reachable when it returns.
func Start(cfg Config, sets []*metrics.Set, ready map[string]Check) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.CheckTimeout < 0 {
		return nil, errors.Newf("ops: CheckTimeout must not be negative, got %s", cfg.CheckTimeout)
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, served: make(chan struct{})}
	for _, set := range sets {
		if set != nil && !slices.Contains(s.sets, set) {
			s.sets = append(s.sets, set)
		}
	}
	for name, c := range ready {
		if name == "" {
			return nil, errors.New("ops: a readiness check needs a name")
		}
		if c == nil {
			return nil, errors.Newf("ops: readiness check %q is nil", name)
		}
		s.checks = append(s.checks, &namedCheck{name: name, check: c})
	}
	slices.SortFunc(s.checks, func(a, b *namedCheck) int { return strings.Compare(a.name, b.name) })

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathMetrics, s.metrics)
	mux.HandleFunc("GET "+PathHealthz, s.healthz)
	mux.HandleFunc("GET "+PathReadyz, s.readyz)
	// Profiles on demand (go tool pprof http://host:9090/debug/pprof/profile):
	// the way to see where a production process spends its time. They cost
	// nothing until asked for; the port is the operators' one, not clients'.
	mux.HandleFunc("GET "+PathPprof, pprof.Index)
	mux.HandleFunc("GET "+PathPprof+"cmdline", pprof.Cmdline)
	mux.HandleFunc("GET "+PathPprof+"profile", pprof.Profile)
	mux.HandleFunc("GET "+PathPprof+"symbol", pprof.Symbol)
	mux.HandleFunc("GET "+PathPprof+"trace", pprof.Trace)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// Long enough for a scrape of a large set, short enough that a
		// stuck client cannot hold a connection.
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  60 * time.Second,
		ErrorLog:     zap.NewStdLog(s.log.Named("http")),
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, errors.Wrapf(err, "ops: listen on %s", cfg.Addr)
	}
	s.addr = ln.Addr().String()
	go func() {
		defer close(s.served)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ops HTTP server stopped", zap.Error(err))
		}
	}()
	s.log.Info("ops HTTP server listening", zap.String("addr", s.addr),
		zap.Strings("checks", s.checkNames()))
	return s, nil
}

func (s *Server) checkNames() []string {
	names := make([]string, len(s.checks))
	for i := range s.checks {
		names[i] = s.checks[i].name
	}
	return names
}

// Addr is the address bound, host:port (with the real port when Config.Addr
// asked for port 0).
func (s *Server) Addr() string { return s.addr }

// SetDraining switches /readyz to 503 "draining" (true) or back to running
// its checks (false). Call SetDraining(true) first thing at shutdown.
func (s *Server) SetDraining(draining bool) {
	if s.draining.Swap(draining) != draining {
		s.log.Info("readiness draining switched", zap.Bool("draining", draining))
	}
}

// Draining reports the switch set by SetDraining.
func (s *Server) Draining() bool { return s.draining.Load() }

// Stop stops accepting connections and waits for requests in flight, until
// ctx is done (DefaultShutdownTimeout when ctx has no deadline); then it
// closes the remaining connections. Later calls return the first result.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, DefaultShutdownTimeout)
			defer cancel()
		}
		if err := s.http.Shutdown(ctx); err != nil {
			s.stopErr = errors.Wrap(err, "ops: shut down the HTTP server")
			// Connections still open past the deadline are cut.
			s.stopErr = errors.CombineErrors(s.stopErr, s.http.Close())
		}
		// Serve returns as soon as its listener is closed, which both
		// Shutdown and Close do first; this wait is therefore short.
		<-s.served
		s.log.Info("ops HTTP server stopped")
	})
	return s.stopErr
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	for _, set := range s.sets {
		set.WritePrometheus(w)
	}
	metrics.WriteProcessMetrics(w)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// Readiness is the JSON body of /readyz.
type Readiness struct {
	// Status is "ok", "unavailable" (a check failed) or "draining".
	Status string `json:"status"`
	// Checks maps each check's name to "ok" or its error message. It is
	// empty while draining.
	Checks map[string]string `json:"checks,omitempty"`
}

// Readiness statuses.
const (
	StatusOK          = "ok"
	StatusUnavailable = "unavailable"
	StatusDraining    = "draining"
)

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.Draining() {
		writeJSON(w, http.StatusServiceUnavailable, Readiness{Status: StatusDraining})
		return
	}
	report := s.runChecks(r.Context())
	code := http.StatusOK
	if report.Status != StatusOK {
		code = http.StatusServiceUnavailable
		s.log.Debug("not ready", zap.Any("checks", report.Checks))
	}
	writeJSON(w, code, report)
}

// runChecks runs every check at once, each under CheckTimeout, and waits at
// most that long in all. A check that ignores its context is reported as
// timed out; its call keeps running in the background, and until it returns
// the check is reported as still running instead of being started again, so
// frequent probes cannot pile up goroutines behind one stuck dependency.
func (s *Server) runChecks(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
	defer cancel()
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(s.checks))
	report := Readiness{Status: StatusOK, Checks: make(map[string]string, len(s.checks))}
	pending := 0
	for i := range s.checks {
		c := s.checks[i]
		if !c.running.CompareAndSwap(false, true) {
			report.Checks[c.name] = "previous check still running after its deadline"
			report.Status = StatusUnavailable
			continue
		}
		pending++
		go func() {
			defer c.running.Store(false)
			results <- result{i: i, err: runCheck(ctx, c.check)}
		}()
	}
	record := func(r result) {
		msg := StatusOK
		if r.err != nil {
			msg = r.err.Error()
			report.Status = StatusUnavailable
		}
		report.Checks[s.checks[r.i].name] = msg
	}
	for ; pending > 0; pending-- {
		select {
		case r := <-results:
			record(r)
		case <-ctx.Done():
			// Results that raced with the deadline still count.
			for drained := false; !drained; {
				select {
				case r := <-results:
					record(r)
				default:
					drained = true
				}
			}
			for i := range s.checks {
				if _, ok := report.Checks[s.checks[i].name]; !ok {
					report.Checks[s.checks[i].name] = "timed out after " + s.cfg.CheckTimeout.String()
					report.Status = StatusUnavailable
				}
			}
			return report
		}
	}
	return report
}

// runCheck turns a panicking check into a failure instead of a crash of the
// whole process.
func runCheck(ctx context.Context, c Check) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.Newf("check panicked: %v", r)
		}
	}()
	return c(ctx)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
