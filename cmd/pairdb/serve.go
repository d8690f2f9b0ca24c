package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/bus/embedded"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/config"
	"github.com/pairdb/pairdb/jetstream/hints"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/ops"
	"github.com/pairdb/pairdb/storagenode"
)

func newDevCmd(g *globals) *cobra.Command {
	cfg := config.DefaultDev()
	cmd := &cobra.Command{
		Use:         "dev",
		Annotations: map[string]string{longRunning: "yes"},
		Short:       "Run an embedded NATS server, a coordinator and storage nodes in one process",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, g, config.SectionDev, &cfg, func(log *zap.Logger, set *metrics.Set) process {
				return process{
					name: "dev cluster", settings: cfg.Process,
					checkNames: []string{checkNATS, checkRing, checkCoordinator, checkStorage},
					start: func(ctx context.Context) (*part, error) {
						return startDev(ctx, g, cfg, log, set)
					},
				}
			})
		},
	}
	config.Bind(cmd.Flags(), config.SectionDev, &cfg)
	return cmd
}

// serve runs a long-running command: its settings resolved into cfg (of
// section), a logger and a metrics set for the process that build makes.
func serve(cmd *cobra.Command, g *globals, section string, cfg interface{ Validate() error }, build func(*zap.Logger, *metrics.Set) process) error {
	if err := g.resolve(cmd, section, cfg); err != nil {
		return err
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	set := metrics.NewSet()
	p := build(log, set)
	p.metrics = []*metrics.Set{set}
	return run(log, p)
}

func startDev(ctx context.Context, g *globals, cfg config.Dev, log *zap.Logger, set *metrics.Set) (*part, error) {
	// First, before NATS or Pebble open anything in the directory.
	lock, err := lockDataDir(cfg.Data)
	if err != nil {
		return nil, err
	}
	d, err := cluster.StartDev(ctx, cluster.DevConfig{
		Listen: cfg.Listen, DataDir: cfg.Data, Nodes: cfg.Nodes, NoSync: cfg.NoSync,
		Coordinator: cluster.CoordinatorConfig{Subjects: g.subjects(), PostgresURL: cfg.PostgresURL},
		Logger:      log, Metrics: set,
	})
	if err != nil {
		lock.release()
		if errors.Is(err, embedded.ErrAddrInUse) {
			return nil, withAdvice(err, "pick a free one with --listen, such as --listen 127.0.0.1:4333, "+
				"and give the client commands --server nats://127.0.0.1:4333")
		}
		return nil, err
	}
	closeDev := func(ctx context.Context) error {
		defer lock.release()
		return d.Close(ctx)
	}
	// The process's own connection: readiness watches NATS and the storage
	// nodes' heartbeats through it.
	nc, err := dial(d.ClientURL(), "pairdb-dev-ops", "", log)
	if err != nil {
		return nil, errors.CombineErrors(err, closeDev(context.WithoutCancel(ctx)))
	}
	want := map[string]string{}
	for _, id := range d.NodeIDs() {
		want[id] = ""
	}
	hb, err := watchHeartbeats(nc, g.subjects(), want)
	if err != nil {
		nc.Close()
		return nil, errors.CombineErrors(err, closeDev(context.WithoutCancel(ctx)))
	}
	return &part{
		stop: func(ctx context.Context) error {
			hb.stop()
			nc.Close()
			return closeDev(ctx)
		},
		// The banner waits for /readyz: the storage nodes' first heartbeats
		// come up to a second after the start.
		awaitReady: true,
		checks:     devChecks(d, nc, hb),
		ready:      func(opsAddr string) { printDevBanner(d, cfg, opsAddr) },
	}, nil
}

// devChecks are the dev process's readiness checks: NATS, every
// coordinator's ring and readiness, the storage nodes' heartbeats.
func devChecks(d *cluster.Dev, nc *nats.Conn, hb *heartbeats) map[string]ops.Check {
	return map[string]ops.Check{
		checkNATS: natsCheck(nc),
		checkRing: func(ctx context.Context) error {
			for _, c := range d.Coordinators() {
				if err := ringCheck(c.Ring)(ctx); err != nil {
					return err
				}
			}
			return nil
		},
		checkCoordinator: func(ctx context.Context) error {
			cs := d.Coordinators()
			if len(cs) == 0 {
				return errors.New("no coordinator running")
			}
			for _, c := range cs {
				if err := c.Ready(ctx); err != nil {
					return err
				}
			}
			return nil
		},
		checkStorage: hb.engineCheck,
	}
}

// printDevBanner tells a newcomer where everything is and what to try.
func printDevBanner(d *cluster.Dev, cfg config.Dev, opsAddr string) {
	url := d.ClientURL()
	fmt.Printf("PairDB dev cluster is up: NATS at %s, %d storage nodes (%s), data in %s\n",
		url, cfg.Nodes, strings.Join(d.NodeIDs(), ", "), cfg.Data)
	fmt.Printf("Metrics at http://%s%s, health at %s and %s\n", opsAddr, ops.PathMetrics, ops.PathHealthz, ops.PathReadyz)
	// The client commands reach this cluster without --server only on
	// the default address.
	server := ""
	if url != config.DefaultGlobal().Server {
		server = " --server " + url
	}
	fmt.Printf("Try, from another terminal (build once: go build -o pairdb ./cmd/pairdb):\n")
	fmt.Printf("  ./pairdb%s put hello world\n  ./pairdb%s get hello\n", server, server)
	fmt.Printf("  nats --server %s req pairdb.v1.kv.default.get '{\"key\":\"hello\"}' -H Content-Type:application/json\n", url)
	fmt.Println("Ctrl-C stops it; the data stays for the next start.")
}

func newCoordinatorCmd(g *globals) *cobra.Command {
	cfg := config.DefaultCoordinator()
	cmd := &cobra.Command{
		Use:         "coordinator",
		Annotations: map[string]string{longRunning: "yes"},
		Short:       "Run a coordinator against an external NATS server",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, g, config.SectionCoordinator, &cfg, func(log *zap.Logger, set *metrics.Set) process {
				return process{
					name: "coordinator", settings: cfg.Process,
					checkNames: []string{checkNATS, checkRing, checkCoordinator},
					start: func(ctx context.Context) (*part, error) {
						nc, err := g.connect("pairdb-coordinator", g.partInbox(bus.CoordinatorInbox), log)
						if err != nil {
							return nil, err
						}
						svc, err := cluster.StartCoordinator(ctx, nc, cluster.CoordinatorConfig{
							Cluster:  membership.Settings{VNodes: cfg.VirtualNodes, HintMaxAge: cfg.HintMaxAge, TombstoneGrace: cfg.TombstoneGrace},
							Subjects: g.subjects(), StreamReplicas: cfg.StreamReplicas,
							IdempotencyTTL: cfg.IdempotencyTTL, PostgresURL: cfg.PostgresURL,
							RequestTimeout: cfg.RequestTimeout, ReplicaTimeout: cfg.ReplicaTimeout, TenantCacheTTL: cfg.TenantCacheTTL,
							HeartbeatTimeout: cfg.HeartbeatTimeout, DownAfter: cfg.DownAfter, NoHints: cfg.NoHints,
							ReadRepairChance: cfg.ReadRepairChance, MaxClockSkew: cfg.MaxClockSkew,
							Hints:  hints.Config{MaxPerNode: int64(cfg.HintsPerNode)},
							Logger: log, Metrics: set,
						})
						if err != nil {
							nc.Close()
							return nil, err
						}
						st := svc.Ring.State()
						log.Info("coordinator started", zap.String("nats", nc.ConnectedUrlRedacted()),
							zap.Uint64("epoch", st.Epoch), zap.Strings("normal_nodes", st.Normal()))
						return &part{
							stop: func(ctx context.Context) error {
								err := svc.Stop(ctx)
								closeConn(ctx, nc)
								return err
							},
							checks: map[string]ops.Check{
								checkNATS:        natsCheck(nc),
								checkRing:        ringCheck(svc.Ring),
								checkCoordinator: svc.Ready,
							},
						}, nil
					},
				}
			})
		},
	}
	config.Bind(cmd.Flags(), config.SectionCoordinator, &cfg)
	// Before the ring log, coordinators took the members from --nodes.
	cmd.Flags().StringSlice("nodes", nil, "")
	_ = cmd.Flags().MarkDeprecated("nodes", "it is ignored: members live in the ring log; bootstrap the ring once with `pairdb node add ID...`")
	return cmd
}

func newStorageNodeCmd(g *globals) *cobra.Command {
	cfg := config.DefaultStorageNode()
	cmd := &cobra.Command{
		Use:         "storagenode",
		Annotations: map[string]string{longRunning: "yes"},
		Short:       "Run a storage node against an external NATS server",
		Args:        cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd, g, config.SectionStorageNode, &cfg, func(log *zap.Logger, set *metrics.Set) process {
				return process{
					name: "storage node", settings: cfg.Process,
					checkNames: []string{checkNATS, checkRing, checkStorage},
					start: func(ctx context.Context) (*part, error) {
						return startStorageNode(ctx, g, cfg, log, set)
					},
				}
			})
		},
	}
	config.Bind(cmd.Flags(), config.SectionStorageNode, &cfg)
	return cmd
}

func startStorageNode(ctx context.Context, g *globals, cfg config.StorageNode, log *zap.Logger, set *metrics.Set) (*part, error) {
	nc, err := g.connect("pairdb-storagenode-"+cfg.ID, g.partInbox(bus.NodeInbox(cfg.ID)), log)
	if err != nil {
		return nil, err
	}
	// Subscribed before the node starts, so its first heartbeat counts. It
	// is the node's own heartbeat only, the one its NATS user may read.
	hb, err := watchHeartbeats(nc, g.subjects(), map[string]string{cfg.ID: ""})
	if err != nil {
		nc.Close()
		return nil, err
	}
	sc := storagenode.DefaultConfig(cfg.ID, cfg.Data)
	sc.Sync = !cfg.NoSync
	sc.Subjects = g.subjects()
	sc.CleanupGrace = cfg.CleanupGrace
	sc.CacheBytes = int64(cfg.CacheBytes)
	sc.WALMinSyncInterval = cfg.WALMinSyncInterval
	sc.HintRate = float64(cfg.HintRate)
	sc.AntiEntropyInterval = cfg.AntiEntropyInterval
	sc.AntiEntropyRate = cfg.AntiEntropyRate
	sc.OriginTTL = cfg.OriginTTL
	sc.ReplyPrefix = cfg.CoordinatorInbox + "."
	sc.Logger = log.Named(cfg.ID)
	sc.Metrics = set
	n, err := cluster.StartStorageNode(ctx, nc, sc, cfg.StreamReplicas)
	if err != nil {
		hb.stop()
		nc.Close()
		return nil, err
	}
	hb.expect(cfg.ID, n.Incarnation())
	log.Info("storage node started", zap.String("id", cfg.ID), zap.String("incarnation", n.Incarnation()), zap.String("data", cfg.Data))
	return &part{
		stop: func(ctx context.Context) error {
			hb.stop()
			err := n.Stop(ctx)
			closeConn(ctx, nc)
			return err
		},
		checks: map[string]ops.Check{
			checkNATS:    natsCheck(nc),
			checkRing:    hb.ringCheck,
			checkStorage: hb.engineCheck,
		},
	}, nil
}

// ringCheck passes when r has folded a ring with storage nodes.
func ringCheck(r *cluster.Ring) ops.Check {
	return func(context.Context) error {
		st := r.State()
		if st == nil || st.Current() == nil || st.Current().Size() == 0 {
			return errors.New("the ring has no storage nodes yet; bootstrap it with `pairdb node add ID...`")
		}
		return nil
	}
}

// dial connects a long-running part to NATS at url, its replies under
// inbox; see globals.connect.
func dial(url, name, inbox string, log *zap.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append(bus.PartOptions(name, inbox),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", zap.String("conn", name), zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", zap.String("conn", name), zap.String("server", nc.ConnectedUrlRedacted()))
		}))...,
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (setting server): %w", redactURL(url), err)
	}
	return nc, nil
}

// closeConn sends what is still buffered (replies of the last requests),
// within a second and ctx, then closes nc.
func closeConn(ctx context.Context, nc *nats.Conn) {
	wait := time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	if wait > 0 && nc.IsConnected() {
		_ = nc.FlushTimeout(wait)
	}
	nc.Close()
}
