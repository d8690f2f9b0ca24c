// Command peers runs `pairdb bench`'s put and get workloads against PairDB
// and its peers, one after the other with the same sizes, keys and clients:
// the transport ceiling (in this process and in processes of its own),
// JetStream KV with three replicas on a three-server NATS cluster, and a
// three-member etcd cluster. Repetitions are outermost (every store once,
// then every store again); the summary reports medians and PairDB's ratio
// to each store, and each process's CPU time per operation.
//
// bench/layout.sh --peers starts the processes and runs it. It is a module
// of its own so that the etcd client stays out of PairDB's dependencies.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/bench"
)

// config is what the flags set.
type config struct {
	reps                int
	duration, timeout   time.Duration
	records             uint64
	keySize, valueSize  int
	concurrency         []int
	workloads           []bench.Workload
	stores              []string
	pairdbServer        string
	tenantPrefix        string
	consistency         string
	idempotency         bool
	batch               int
	transportBase       string
	jskvServers         string
	jskvReplicas        int
	etcdEndpoints       string
	procs               []proc
	jsonOut             string
	quiet               *quiet
	storeList, workList string
	concList            string
}

func parseFlags(args []string) (config, error) {
	cfg := config{quiet: &quiet{}}
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.DurationVar(&cfg.quiet.wait, "quiet-wait", 30*time.Second, "before each phase, wait at most this long for a second in which processes outside the layout are quiet")
	fs.Float64Var(&cfg.quiet.cores, "quiet-cores", 0.25, "quiet: processes outside the layout use fewer cores than this")
	fs.IntVar(&cfg.quiet.retries, "quiet-retries", 1, "run a phase they disturbed more than that again, at most this many times (the least disturbed run counts)")
	fs.DurationVar(&cfg.quiet.budget, "quiet-budget", 10*time.Minute, "total time the waits and repeated phases may add to the run")
	fs.IntVar(&cfg.reps, "reps", 3, "repetitions (each runs every store once)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of each run phase")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "bound of one operation")
	fs.Uint64Var(&cfg.records, "records", 20_000, "records loaded into each store, read and overwritten uniformly")
	fs.IntVar(&cfg.keySize, "key-size", 16, "key size in bytes")
	fs.IntVar(&cfg.valueSize, "value-size", 128, "value size in bytes")
	fs.StringVar(&cfg.concList, "concurrency", "16,64", "client counts, comma-separated")
	fs.StringVar(&cfg.workList, "workloads", "put,get", "workloads, comma-separated: "+strings.Join(bench.WorkloadNames(), ", "))
	fs.StringVar(&cfg.storeList, "stores", strings.Join(allStores, ","), "stores, in the order each repetition runs them (those without an address are skipped)")
	fs.StringVar(&cfg.pairdbServer, "pairdb-server", "", "NATS URL of PairDB's server (the transports use it too)")
	fs.StringVar(&cfg.tenantPrefix, "tenant-prefix", "bench-peers-", "PairDB tenant of repetition n: this prefix and n (N=3 tenants made beforehand)")
	fs.StringVar(&cfg.consistency, "consistency", "quorum", "PairDB consistency of puts and gets")
	fs.BoolVar(&cfg.idempotency, "idempotency", false, "PairDB puts with idempotency keys (the peers have none)")
	fs.IntVar(&cfg.batch, "batch", 1, "above 1, store pairdb-batch also runs: PairDB's gets as get_many and puts as put_many of that many keys, counted as keys (every other store one key a request)")
	fs.StringVar(&cfg.transportBase, "transport-base", "", "subject prefix of the transport served by 'pairdb bench transport' processes")
	fs.StringVar(&cfg.jskvServers, "jskv-servers", "", "NATS URLs of the JetStream cluster, comma-separated")
	fs.IntVar(&cfg.jskvReplicas, "jskv-replicas", 3, "replicas of the JetStream KV bucket")
	fs.StringVar(&cfg.etcdEndpoints, "etcd-endpoints", "", "etcd client URLs, comma-separated")
	fs.Func("proc", "store[,store...]:role=pid, a process whose CPU time the stores are charged (repeatable)", func(s string) error {
		p, err := parseProc(s)
		cfg.procs = append(cfg.procs, p)
		return err
	})
	fs.StringVar(&cfg.jsonOut, "json", "", "also write every sample, with bench's full phase results, to this file")
	if err := fs.Parse(args); err != nil {
		return cfg, errors.Wrap(err, "flags")
	}
	return cfg, cfg.finish()
}

// finish parses the list flags and checks the rest.
func (cfg *config) finish() error {
	if cfg.pairdbServer == "" || cfg.reps < 1 {
		return errors.New("--pairdb-server is required and --reps must be at least 1")
	}
	for _, s := range strings.Split(cfg.concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return errors.Newf("--concurrency: %q is not a client count", s)
		}
		cfg.concurrency = append(cfg.concurrency, n)
	}
	for _, s := range strings.Split(cfg.workList, ",") {
		w, err := bench.LookupWorkload(strings.TrimSpace(s))
		if err != nil {
			return errors.Wrap(err, "--workloads")
		}
		cfg.workloads = append(cfg.workloads, w)
	}
	for _, s := range strings.Split(cfg.storeList, ",") {
		if s = strings.TrimSpace(s); !slices.Contains(allStores, s) {
			return errors.Newf("--stores: unknown store %q (want %s)", s, strings.Join(allStores, ", "))
		}
		if available(*cfg, s) {
			cfg.stores = append(cfg.stores, s)
		}
	}
	return cfg.phase(1).Validate()
}

// phase is the bench configuration every store runs with.
func (cfg config) phase(concurrency int) *bench.PhaseConfig {
	return &bench.PhaseConfig{
		Workload: cfg.workloads[0], Distribution: bench.DistUniform, Records: cfg.records, ValueSize: cfg.valueSize,
		Keys: bench.KeyFormat{Size: cfg.keySize}, Concurrency: concurrency, Duration: cfg.duration, Timeout: cfg.timeout,
	}
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "peers: %+v\n", err)
		os.Exit(1)
	}
}

// labels name the stores in the summary.
var labels = map[string]string{
	storePairDB:         "PairDB",
	storePairDBBatch:    "PairDB batches (keys/s)",
	storeTransport:      "transport (a)",
	storeTransportProcs: "transport in processes",
	storeJSKV:           "JetStream KV R3",
	storeEtcd:           "etcd",
}

func run(ctx context.Context, cfg config, out, log io.Writer) error {
	c, err := dial(cfg)
	if err != nil {
		return err
	}
	defer c.close()
	fmt.Fprintf(out, "stores: %s; %d repetitions; workloads %s at %s clients; %s per phase\n",
		strings.Join(cfg.stores, ", "), cfg.reps, cfg.workList, cfg.concList, cfg.duration)
	var samples []Sample
	var errs error
	for rep := 1; rep <= cfg.reps && ctx.Err() == nil; rep++ {
		var repSamples []Sample
		for _, st := range cfg.stores {
			ss, err := runStore(ctx, cfg, c, st, rep, log)
			repSamples = append(repSamples, ss...)
			if err != nil {
				fmt.Fprintf(log, "rep %d: %s failed: %v\n", rep, st, err)
				errs = errors.CombineErrors(errs, errors.Wrapf(err, "repetition %d, %s", rep, st))
			}
			if ctx.Err() != nil {
				break
			}
		}
		if err := writeRep(out, cfg, rep, repSamples); err != nil {
			return err
		}
		samples = append(samples, repSamples...)
	}
	if err := WriteSummary(out, Summarize(samples, cfg.stores, storePairDB), storePairDB, labels); err != nil {
		return err
	}
	if cfg.jsonOut != "" {
		b, err := json.MarshalIndent(samples, "", "  ")
		if err != nil {
			return errors.Wrap(err, "encode samples")
		}
		errs = errors.CombineErrors(errs, errors.Wrap(os.WriteFile(cfg.jsonOut, b, 0o644), "write samples"))
	}
	return errs
}

// runStore loads store's records for repetition rep (if it keeps data),
// then runs every workload at every client count, reading the CPU time of
// the store's processes around each run phase.
func runStore(ctx context.Context, cfg config, c *conns, store string, rep int, log io.Writer) (out []Sample, err error) {
	o, err := c.open(ctx, cfg, store, rep)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.CombineErrors(err, o.done(context.WithoutCancel(ctx))) }()
	if o.load {
		pc := cfg.phase(slices.Max(cfg.concurrency))
		fmt.Fprintf(log, "rep %d: %s: loading %d records\n", rep, store, cfg.records)
		res, err := bench.Load(ctx, store+" load", o.store, *pc)
		if err != nil {
			return nil, err
		}
		if res.Errors > 0 {
			return nil, errors.Newf("load: %d errors, the first: %s", res.Errors, res.FirstError)
		}
	}
	for _, w := range cfg.workloads {
		for _, n := range cfg.concurrency {
			pc := cfg.phase(n)
			pc.Workload = w
			if store == storePairDBBatch {
				pc.Batch = cfg.batch
			}
			s, err := cfg.quiet.runPhase(ctx, cfg, rep, store, o.store, pc, log)
			if err != nil {
				return out, err
			}
			out = append(out, s)
			if err := ctx.Err(); err != nil {
				return out, errors.Wrap(err, "interrupted")
			}
		}
	}
	return out, nil
}

// writeRep prints a repetition's phases with bench's own report, one table
// per workload and client count.
func writeRep(out io.Writer, cfg config, rep int, samples []Sample) error {
	for _, g := range Summarize(samples, cfg.stores, storePairDB) {
		r := &bench.Report{Config: bench.ReportConfig{
			Workload: g.Workload, Distribution: string(bench.DistUniform), Records: cfg.records, KeySize: cfg.keySize,
			ValueSize: cfg.valueSize, Concurrency: g.Concurrency, Duration: cfg.duration.String(),
			Tenant: cfg.tenantPrefix + strconv.Itoa(rep), Consistency: cfg.consistency, Idempotency: cfg.idempotency, Load: true,
			KVSync: "every write (sync_interval: always), " + strconv.Itoa(cfg.jskvReplicas) + " replicas",
		}}
		for _, s := range samples {
			if s.Workload == g.Workload && s.Concurrency == g.Concurrency {
				r.Phases = append(r.Phases, s.Result)
			}
		}
		fmt.Fprintf(out, "\n--- repetition %d ---\n", rep)
		if err := r.WriteText(out); err != nil {
			return err
		}
	}
	return nil
}
