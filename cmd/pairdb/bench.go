package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pairdb/pairdb/bench"
	"github.com/pairdb/pairdb/cluster"
)

// benchFlags are the flags of `pairdb bench`.
type benchFlags struct {
	workload, distribution, consistency string
	records, ops, seed                  uint64
	valueSize, keySize, concurrency     int
	batch                               int
	duration                            time.Duration
	load, idempotency, baseline, asJSON bool
	dev, noSync                         bool
	transportBase                       string
}

func newBenchCmd(g *globals) *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a cluster with the YCSB workloads, optionally next to baselines measured on the same NATS server",
		Long: `Run a YCSB core workload (a, b, c, d, f) or put-only / get-only against a
running cluster (--server) or an embedded one (--dev), with closed-loop clients
on one NATS connection, and print ops/s and latency percentiles per operation.

Workloads: ` + strings.Join(bench.WorkloadNames(), ", ") + `. Updates carry the newest vector_clock
the bench has seen for the key, so they replace the value instead of piling up
siblings; f reads, then writes with that read's clock.

--baseline runs the same workload, with the same sizes and clients, against
(a) the transport ceiling: a responder that fans every request out to three
no-op replicas and answers at the second reply (the messaging of an N=3 QUORUM
operation without the work), and (b) JetStream KV, on a bucket made for the run
and deleted after. The summary prints PairDB's ratio to each. With
--transport-base, a transport whose responder and replicas run as processes of
their own ('pairdb bench transport', as bench/layout.sh starts them) is
measured as well: the ceiling of the same messaging in PairDB's process layout.

--dev starts NATS, a coordinator and storage nodes in this process, in a
temporary directory removed afterwards (fsync on unless --no-sync). Against a
running cluster, --load adds siblings to keys an earlier run loaded without
context: use a fresh --tenant for repeated loads.`,
		Example: `  pairdb bench --dev --baseline --load -w put -c quorum --concurrency 16
  pairdb bench --server nats://127.0.0.1:4222 -w a --duration 30s --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBench(ctx, cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.workload, "workload", "w", "a", "workload: "+strings.Join(bench.WorkloadNames(), ", "))
	fl.StringVar(&f.distribution, "distribution", string(bench.DistZipfian), "key distribution: zipfian (YCSB scrambled, theta 0.99) or uniform (d always favours recent inserts)")
	fl.Uint64Var(&f.records, "records", 1000, "records in the key space")
	fl.IntVar(&f.valueSize, "value-size", 128, "value size in bytes")
	fl.IntVar(&f.keySize, "key-size", 16, "key size in bytes")
	fl.IntVar(&f.batch, "batch", 1, "keys per PairDB request: above 1, reads are get_many and updates put_many of that many keys (ops then count keys; the baselines stay one key a request)")
	fl.IntVar(&f.concurrency, "concurrency", 16, "concurrent clients (each waits for its answer before the next request)")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "length of each run phase")
	fl.Uint64Var(&f.ops, "ops", 0, "stop each run phase after this many operations (0: --duration only)")
	fl.StringVarP(&f.consistency, "consistency", "c", "", "one, quorum or all (default: the tenant's)")
	fl.BoolVar(&f.load, "load", false, "insert --records first (each store, before its run phase)")
	fl.BoolVar(&f.idempotency, "idempotency", true, "send an idempotency key with every write, as the Go client does (false: plain requests)")
	fl.BoolVar(&f.baseline, "baseline", false, "also run the transport ceiling and JetStream KV on the same server")
	fl.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	fl.Uint64Var(&f.seed, "seed", 0, "seed of the key and operation sequences (0: random)")
	fl.BoolVar(&f.dev, "dev", false, "start an embedded cluster for the run (ignores --server)")
	fl.BoolVar(&f.noSync, "no-sync", false, "with --dev: skip fsync on storage nodes")
	fl.StringVar(&f.transportBase, "transport-base", "", "with --baseline: also measure the transport whose parts 'pairdb bench transport' serves under this subject prefix")
	cmd.AddCommand(newBenchTransportCmd(g))
	return cmd
}

func runBench(ctx context.Context, cmd *cobra.Command, g *globals, f benchFlags) error {
	w, err := bench.LookupWorkload(f.workload)
	if err != nil {
		return fmt.Errorf("--workload: %w", err)
	}
	dist, err := bench.ParseDistribution(f.distribution)
	if err != nil {
		return fmt.Errorf("--distribution: %w", err)
	}
	if f.noSync && !f.dev {
		return fmt.Errorf("--no-sync needs --dev (a running cluster's fsync is its own setting)")
	}
	cfg := bench.SuiteConfig{
		Phase: bench.PhaseConfig{
			Workload: w, Distribution: dist, Records: f.records, ValueSize: f.valueSize,
			Keys: bench.KeyFormat{Size: f.keySize}, Concurrency: f.concurrency, Duration: f.duration,
			Ops: f.ops, Timeout: g.timeout, Seed: f.seed, Progress: cmd.ErrOrStderr(), Batch: f.batch,
		},
		PairDB:        bench.PairDBOptions{Subjects: g.subjects(), Tenant: g.tenant, Consistency: f.consistency, Idempotency: f.idempotency},
		Load:          f.load,
		Baseline:      f.baseline,
		TransportBase: f.transportBase,
		Log:           cmd.ErrOrStderr(),
		KVSync:        "as the server is configured (jetstream sync_interval; nats-server's default syncs every 2 minutes, not per write)",
	}
	if err := cfg.Phase.Validate(); err != nil {
		return err
	}
	url := g.server
	if f.dev {
		d, cleanup, err := startBenchDev(ctx, cmd, g, f.noSync)
		if err != nil {
			return err
		}
		defer cleanup()
		url = d.ClientURL()
		cfg.KVSync = "every write (the embedded server syncs always)"
	}
	dial := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(url, g.clientOptions(name)...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(url), err)
		}
		return nc, nil
	}
	cfg.Dial = dial
	nc, err := dial("pairdb-bench")
	if err != nil {
		return err
	}
	defer nc.Close()
	rep, runErr := bench.RunSuite(ctx, nc, cfg)
	if rep != nil {
		if err := writeBenchReport(cmd.OutOrStdout(), rep, f.asJSON); err != nil {
			return err
		}
	}
	return runErr
}

func writeBenchReport(out io.Writer, rep *bench.Report, asJSON bool) error {
	if asJSON {
		return rep.WriteJSON(out)
	}
	return rep.WriteText(out)
}

// startBenchDev starts an embedded cluster in a temporary directory; the
// cleanup stops it (bounded) and removes the directory.
func startBenchDev(ctx context.Context, cmd *cobra.Command, g *globals, noSync bool) (*cluster.Dev, func(), error) {
	dir, err := os.MkdirTemp("", "pairdb-bench-")
	if err != nil {
		return nil, nil, fmt.Errorf("temporary data directory: %w", err)
	}
	log, err := g.logger()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	// The cluster's info lines would interleave with the progress; its
	// warnings and errors still show.
	log = log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d, err := cluster.StartDev(sctx, cluster.DevConfig{
		DataDir: dir, NoSync: noSync, Logger: log, Metrics: metrics.NewSet(),
		Coordinator: cluster.CoordinatorConfig{Subjects: g.subjects()},
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("start the embedded cluster: %w", err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "embedded cluster at %s (fsync %s), data in %s\n", d.ClientURL(), map[bool]string{true: "off", false: "on"}[noSync], dir)
	return d, func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := d.Close(cctx); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "pairdb: stopping the embedded cluster:", err)
		}
		_ = log.Sync()
		_ = os.RemoveAll(dir)
	}, nil
}
