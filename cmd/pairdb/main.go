// Command pairdb runs PairDB's parts (dev, coordinator, storagenode) and
// talks to a running cluster (put, get, delete, tenant).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
)

// globals are the flags every command shares.
type globals struct {
	server   string
	tenant   string
	timeout  time.Duration
	prefix   string
	logLevel string
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pairdb:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "pairdb",
		Short:         "PairDB: a multi-tenant, Dynamo-style replicated key-value store on NATS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	defURL := os.Getenv("NATS_URL")
	if defURL == "" {
		defURL = nats.DefaultURL
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.server, "server", "s", defURL, "NATS server URL (env NATS_URL)")
	pf.StringVarP(&g.tenant, "tenant", "t", "default", "tenant for key-value commands")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Second, "deadline for one request")
	pf.StringVar(&g.prefix, "prefix", bus.DefaultPrefix, "subject prefix")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		newDevCmd(g), newCoordinatorCmd(g), newStorageNodeCmd(g),
		newPutCmd(g), newGetCmd(g), newDeleteCmd(g), newTenantCmd(g), newMigrateCmd(g),
		newNodeCmd(g), newMigrationCmd(g),
	)
	return root
}

func (g *globals) subjects() bus.Subjects { return bus.Subjects{Prefix: g.prefix} }

func (g *globals) logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(g.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

// connect opens a NATS connection for a long-running part: it reconnects
// forever, since NATS servers restart under a running cluster.
func (g *globals) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(g.server, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", g.server, err)
	}
	return nc, nil
}

// client opens a connection and a client for one CLI call.
func (g *globals) client() (*client.Client, func(), error) {
	nc, err := nats.Connect(g.server, nats.Name("pairdb-cli"), nats.Timeout(g.timeout))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", g.server, err)
	}
	c := client.New(nc, client.WithTenant(g.tenant), client.WithSubjects(g.subjects()), client.WithTimeout(g.timeout))
	return c, nc.Close, nil
}

// untilSignal blocks until SIGINT or SIGTERM, then returns a context for
// an orderly shutdown bounded by grace. A second signal exits at once.
func untilSignal(log *zap.Logger, grace time.Duration) (context.Context, context.CancelFunc) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	sig := <-sigs
	log.Info("shutting down; press Ctrl-C again to exit at once", zap.String("signal", sig.String()), zap.Duration("deadline", grace))
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "pairdb: second signal, exiting now")
		os.Exit(1)
	}()
	return context.WithTimeout(context.Background(), grace)
}
