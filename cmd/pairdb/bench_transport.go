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

	"github.com/pairdb/pairdb/bench"
)

// newBenchTransportCmd serves one part of the transport baseline in a
// process of its own, so the baseline can be laid out like PairDB (a
// coordinator process and three storage-node processes).
func newBenchTransportCmd(g *globals) *cobra.Command {
	var (
		role             string
		base             string
		index, valueSize int
	)
	cmd := &cobra.Command{
		Use:   "transport",
		Short: "Serve one part of the transport baseline (the responder or a no-op replica) until interrupted",
		Long: `Serve the responder (--role responder) or no-op replica --index 0, 1 or 2
(--role replica) of the transport baseline under the subject prefix --base,
until SIGINT or SIGTERM. Start one responder and three replicas with the same
--base, then run 'pairdb bench --baseline --transport-base <base>'.
bench/layout.sh does all of it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if base == "" {
				return fmt.Errorf("--base is required")
			}
			nc, err := nats.Connect(g.server, nats.Name("pairdb-bench-transport-"+role), nats.Timeout(g.timeout))
			if err != nil {
				return fmt.Errorf("connect to NATS at %s: %w", redactURL(g.server), err)
			}
			defer nc.Close()
			t, err := bench.ServeTransportPart(nc, base, role, index, valueSize, g.timeout)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return t.Stop(sctx)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&role, "role", bench.RoleReplica, "responder or replica")
	fl.StringVar(&base, "base", "", "subject prefix shared by the parts and the bench (e.g. _pairdb_bench.layout)")
	fl.IntVar(&index, "index", 0, "replica number, 0 to 2")
	fl.IntVar(&valueSize, "value-size", 128, "value size of a replica's get answer, as the bench's --value-size")
	return cmd
}
