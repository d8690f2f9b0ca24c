package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/cluster"
	storagenode "github.com/pairdb/pairdb/storagenode-adapter"
)

const shutdownGrace = 15 * time.Second

func newDevCmd(g *globals) *cobra.Command {
	var (
		listen, data, pgURL string
		nodes               int
		noSync              bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded NATS server, a coordinator and storage nodes in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			d, err := cluster.StartDev(ctx, cluster.DevConfig{
				Listen: listen, DataDir: data, Nodes: nodes, NoSync: noSync,
				Coordinator: cluster.CoordinatorConfig{Subjects: g.subjects(), PostgresURL: pgURL},
				Logger:      log, Metrics: metrics.NewSet(),
			})
			if err != nil {
				return err
			}
			fmt.Printf("PairDB dev cluster is up: NATS at %s, %d storage nodes (%s), data in %s\n",
				d.ClientURL(), nodes, strings.Join(d.NodeIDs(), ", "), data)
			fmt.Printf("Try:\n  go run ./cmd/pairdb --server %s put hello world\n  go run ./cmd/pairdb --server %s get hello\n",
				d.ClientURL(), d.ClientURL())
			fmt.Printf("  nats --server %s req pairdb.v1.kv.default.get '{\"key\":\"hello\"}' -H Content-Type:application/json\n", d.ClientURL())
			fmt.Println("Ctrl-C stops it; the data stays for the next start.")
			sctx, scancel := untilSignal(log, shutdownGrace)
			defer scancel()
			return d.Close(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:4222", "address of the embedded NATS server")
	f.StringVar(&data, "data", "./pairdb-data", "data directory (NATS JetStream and one dir per storage node)")
	f.IntVar(&nodes, "nodes", 3, "number of storage nodes")
	f.BoolVar(&noSync, "no-sync", false, "skip fsync on storage nodes (benchmarks only: acknowledged writes can be lost on a crash)")
	f.StringVar(&pgURL, "postgres-url", os.Getenv("PAIRDB_POSTGRES_URL"), "keep tenants in this PostgreSQL database instead of JetStream (env PAIRDB_POSTGRES_URL)")
	return cmd
}

// serve runs one long-lived part against an external NATS server: it
// connects, starts the part, waits for a signal and stops it in order.
func serve(g *globals, connName string, start func(ctx context.Context, log *zap.Logger, nc *nats.Conn) (func(context.Context) error, error)) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	nc, err := g.connect(connName)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop, err := start(ctx, log, nc)
	if err != nil {
		return err
	}
	sctx, scancel := untilSignal(log, shutdownGrace)
	defer scancel()
	return stop(sctx)
}

func newCoordinatorCmd(g *globals) *cobra.Command {
	var (
		pgURL          string
		vnodes         int
		streamReplicas int
		idemTTL        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a coordinator against an external NATS server",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return serve(g, "pairdb-coordinator", func(ctx context.Context, log *zap.Logger, nc *nats.Conn) (func(context.Context) error, error) {
				svc, err := cluster.StartCoordinator(ctx, nc, cluster.CoordinatorConfig{
					VirtualNodes: vnodes, Subjects: g.subjects(),
					StreamReplicas: streamReplicas, IdempotencyTTL: idemTTL, PostgresURL: pgURL,
					Logger: log, Metrics: metrics.NewSet(),
				})
				if err != nil {
					return nil, err
				}
				st := svc.Ring.State()
				log.Info("coordinator serving", zap.String("nats", nc.ConnectedUrlRedacted()),
					zap.Uint64("epoch", st.Epoch), zap.Strings("normal_nodes", st.Normal()))
				return svc.Stop, nil
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&vnodes, "virtual-nodes", 150, "virtual nodes per storage node on the ring")
	f.IntVar(&streamReplicas, "stream-replicas", 1, "JetStream replicas of the control-plane buckets (3 on a NATS cluster)")
	f.DurationVar(&idemTTL, "idempotency-ttl", 24*time.Hour, "how long idempotency records are kept")
	f.StringVar(&pgURL, "postgres-url", os.Getenv("PAIRDB_POSTGRES_URL"),
		"keep tenants in this PostgreSQL database, applying migrations at start (env PAIRDB_POSTGRES_URL); empty: the JetStream bucket")
	return cmd
}

func newStorageNodeCmd(g *globals) *cobra.Command {
	var (
		id, data       string
		noSync         bool
		grace          time.Duration
		streamReplicas int
	)
	cmd := &cobra.Command{
		Use:   "storagenode",
		Short: "Run a storage node against an external NATS server",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if id == "" || data == "" {
				return fmt.Errorf("--id and --data are required")
			}
			return serve(g, "pairdb-storagenode-"+id, func(ctx context.Context, log *zap.Logger, nc *nats.Conn) (func(context.Context) error, error) {
				n, err := cluster.StartStorageNode(ctx, nc, storagenode.Config{
					ID: id, DataDir: data, Sync: !noSync, Subjects: g.subjects(), CleanupGrace: grace,
					Logger: log.Named(id), Metrics: metrics.NewSet(),
				}, streamReplicas, 0)
				if err != nil {
					return nil, err
				}
				log.Info("storage node serving", zap.String("id", id), zap.String("incarnation", n.Incarnation()), zap.String("data", data))
				return n.Stop, nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", os.Getenv("PAIRDB_NODE_ID"), "storage node id (env PAIRDB_NODE_ID)")
	f.StringVar(&data, "data", "", "data directory")
	f.BoolVar(&noSync, "no-sync", false, "skip fsync (benchmarks only: acknowledged writes can be lost on a crash)")
	f.DurationVar(&grace, "cleanup-grace", 10*time.Minute, "how long ranges this node no longer replicates are kept after a change")
	f.IntVar(&streamReplicas, "stream-replicas", 1, "JetStream replicas of the control-plane streams (3 on a NATS cluster)")
	return cmd
}
