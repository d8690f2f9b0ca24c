// Command pairdb runs PairDB's parts (dev, coordinator, storagenode) and
// talks to a running cluster (put, get, delete, tenant, node, ...).
//
// Settings come from flags, PAIRDB_* environment variables, a YAML file
// (--config) and defaults, in that order; see package config.
package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/config"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// shutdownGrace bounds the shutdown of parts started without a
// shutdown_timeout setting (pairdb bench --dev).
const shutdownGrace = config.DefaultShutdownTimeout

// skipConfig marks commands that run without resolving the settings
// (config docs must work even when the environment holds a bad value).
const skipConfig = "pairdb/skip-config"

// longRunning marks the commands that run a part (dev, coordinator,
// storagenode): they log what the client commands print on stderr.
const longRunning = "pairdb/long-running"

// globals are the settings every command shares, resolved before any
// command runs.
type globals struct {
	// cfg is bound to the root's persistent flags, then resolved from the
	// environment and the file by load.
	cfg config.Global
	// configPath is --config; PAIRDB_CONFIG when the flag is absent.
	configPath string
	env        config.LookupEnv
	// file is the parsed config file; nil without one. Commands with a
	// section of their own resolve it from here.
	file *config.File

	// The resolved values, as the commands read them (copies of cfg).
	server, tenant, prefix string
	timeout                time.Duration
	// inbox is the client commands' inbox prefix: inbox_prefix, else the
	// command's role's ("" keeps nats.go's _INBOX).
	inbox string

	// environ lists the process's environment (os.Environ), for the
	// warning about PAIRDB_ variables no command reads.
	environ func() []string
	stderr  io.Writer
}

func main() {
	os.Exit(report(os.Stderr, newRoot(os.LookupEnv).Execute()))
}

// newRoot builds the command tree; env is where settings' environment
// variables are read (os.LookupEnv in production).
func newRoot(env config.LookupEnv) *cobra.Command {
	root, _ := newRootWith(env)
	return root
}

// newRootWith is newRoot that also returns the globals its commands share.
func newRootWith(env config.LookupEnv) (*cobra.Command, *globals) {
	g := &globals{cfg: config.DefaultGlobal(), env: env, environ: os.Environ, stderr: os.Stderr}
	root := &cobra.Command{
		Use:           "pairdb",
		Short:         "PairDB: a multi-tenant, Dynamo-style replicated key-value store on NATS",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Annotations[skipConfig] != "" || cmd.Name() == "help" || cmd.Name() == cobra.ShellCompRequestCmd {
				return nil
			}
			return g.load(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, config.FileFlag, "", "YAML file of settings (env "+config.FileEnv+"); flags and environment variables override it")
	config.Bind(pf, config.Top, &g.cfg)
	root.AddCommand(
		newDevCmd(g), newCoordinatorCmd(g), newStorageNodeCmd(g),
		newPutCmd(g), newGetCmd(g), newDeleteCmd(g), newListCmd(g), newTenantCmd(g), newMigrateCmd(g),
		newNodeCmd(g), newMigrationCmd(g), newBenchCmd(g), newRepairCmd(g), newConfigCmd(), newNATSAccountsCmd(g),
	)
	return root, g
}

// load reads the config file and resolves the global settings.
func (g *globals) load(cmd *cobra.Command) error {
	path := g.configPath
	if path == "" {
		path, _ = g.env(config.FileEnv)
	}
	if path != "" {
		f, err := config.ReadFile(path)
		if err != nil {
			return err
		}
		g.file = f
	}
	if err := config.Resolve(cmd.Flags(), config.Top, &g.cfg, g.env, g.file); err != nil {
		return err
	}
	if err := g.cfg.Validate(); err != nil {
		return err
	}
	if cmd.Annotations[longRunning] == "" {
		// The parts log this warning at start (see run); a client command
		// has no log, so it says it on stderr, where its errors go.
		for _, name := range config.UnknownEnv(g.environ()) {
			fmt.Fprintf(g.stderr, "pairdb: warning: %s is not a PairDB setting (a typo?); `pairdb config docs` lists them\n", name)
		}
	}
	g.server, g.tenant, g.prefix, g.timeout = g.cfg.Server, g.cfg.Tenant, g.cfg.Prefix, g.cfg.Timeout
	g.inbox = g.cfg.InboxPrefix
	if g.inbox == "" && operatorCommands[topLevel(cmd)] {
		g.inbox = bus.OperatorInbox
	}
	return nil
}

// operatorCommands are the commands of the operator role (deploy/nats): the
// admin API and repair rounds. Their replies arrive under
// bus.OperatorInbox, where only the operator user may subscribe; the
// key-value commands and bench keep nats.go's _INBOX, which is private to
// a tenant's own account.
var operatorCommands = map[string]bool{"tenant": true, "node": true, "migration": true, "repair": true}

// topLevel is the name of cmd's ancestor right under the root (cmd's own
// name for a top-level command).
func topLevel(cmd *cobra.Command) string {
	for cmd.HasParent() && cmd.Parent().HasParent() {
		cmd = cmd.Parent()
	}
	return cmd.Name()
}

// partInbox is a long-running part's inbox prefix: inbox_prefix, else its
// role's (def).
func (g *globals) partInbox(def string) string {
	if g.cfg.InboxPrefix != "" {
		return g.cfg.InboxPrefix
	}
	return def
}

// clientOptions are the NATS options of a client command's connection.
func (g *globals) clientOptions(name string) []nats.Option {
	opts := []nats.Option{nats.Name(name), nats.Timeout(g.timeout)}
	if g.inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(g.inbox))
	}
	return opts
}

// resolve fills a command's own settings (section) from its flags, the
// environment and the config file, then validates them.
func (g *globals) resolve(cmd *cobra.Command, section string, cfg interface{ Validate() error }) error {
	if err := config.Resolve(cmd.Flags(), section, cfg, g.env, g.file); err != nil {
		return err
	}
	return cfg.Validate()
}

func (g *globals) subjects() bus.Subjects { return bus.Subjects{Prefix: g.prefix} }

// logger builds the process's logger from log_level and log_format.
func (g *globals) logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(g.cfg.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("log_level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = g.cfg.LogFormat
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if g.cfg.LogFormat == config.LogConsole {
		// Sampling drops repeated lines, which hides the rhythm of a
		// problem from someone reading a terminal; JSON for machines keeps
		// zap's production sampling.
		cfg.Sampling = nil
		cfg.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	}
	return cfg.Build()
}

// connect opens a NATS connection to the configured server for a
// long-running part: it reconnects forever, since NATS servers restart under
// a running cluster, and logs each disconnection and reconnection.
func (g *globals) connect(name, inbox string, log *zap.Logger) (*nats.Conn, error) {
	return dial(g.server, name, inbox, log)
}

// client opens a connection and a client for one CLI call.
func (g *globals) client() (*client.Client, func(), error) {
	nc, err := nats.Connect(g.server, g.clientOptions("pairdb-cli")...)
	if err != nil {
		return nil, nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "connect to NATS at %s (is `pairdb dev` running? --server picks another)", redactURL(g.server))
	}
	c := client.New(nc, client.WithTenant(g.tenant), client.WithSubjects(g.subjects()), client.WithTimeout(g.timeout))
	return c, nc.Close, nil
}
