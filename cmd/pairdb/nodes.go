package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// stateRemoved is the state of a node that left the ring for good.
const stateRemoved = "REMOVED"

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Add, remove and list storage nodes (data moves while traffic goes on)"}
	var wait, asJSON bool
	add := &cobra.Command{
		Use:   "add ID [ID...]",
		Short: "Add a running, registered storage node to the ring (several only for an empty ring)",
		Example: `  pairdb node add node-1 node-2 node-3   # an empty ring: its first members
  pairdb node add node-4 --wait           # follow the data transfer to the end
  pairdb node add node-4 --json | jq -r .migration_id`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.AddNodes(ctx, args...)
				return reportChange(cmd, c, resp, err, wait, asJSON)
			})
		},
	}
	add.Flags().BoolVar(&wait, "wait", false, "follow the data transfer until it completes")
	addJSONFlag(add, &asJSON)
	var force bool
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a storage node: its ranges move to the nodes that take them over",
		Example: `  pairdb node remove node-2 --wait
  pairdb node remove node-3 --force       # node-3 is dead: re-replicate from the others
  pairdb node remove node-2 --wait --json # the completed migration, as JSON`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.RemoveNode(ctx, args[0], force)
				return reportChange(cmd, c, resp, err, wait, asJSON)
			})
		},
	}
	remove.Flags().BoolVar(&force, "force", false, "the node is dead: re-replicate from survivors and skip the replication-factor check")
	remove.Flags().BoolVar(&wait, "wait", false, "follow the data transfer until it completes")
	addJSONFlag(remove, &asJSON)
	var all bool
	list := &cobra.Command{
		Use: "list", Short: "List storage nodes with state, epoch, keys and disk use (removed ones with --all)",
		Example: "  pairdb node list\n  pairdb node list --all --json | jq -r '.nodes[] | select(.state == \"NORMAL\") | .node_id'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.ListNodes(ctx)
				if err != nil {
					return err
				}
				hidden := 0
				if !all {
					kept := resp.GetNodes()[:0]
					for _, n := range resp.GetNodes() {
						if n.GetState() == stateRemoved {
							hidden++
							continue
						}
						kept = append(kept, n)
					}
					resp.Nodes = kept
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				printNodes(cmd.OutOrStdout(), resp)
				if hidden > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d removed node(s) not shown; --all shows them\n", hidden)
				}
				return nil
			})
		},
	}
	list.Flags().BoolVar(&all, "all", false, "also show the nodes removed from the ring")
	addJSONFlag(list, &asJSON)
	cmd.AddCommand(add, remove, list)
	return cmd
}

func printNodes(w io.Writer, resp *pb.ListNodesResponse) {
	fmt.Fprintf(w, "ring epoch %d\n", resp.GetEpoch())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tINCARNATION\tEPOCH\tKEYS\tDISK\tHEARTBEAT")
	for _, n := range resp.GetNodes() {
		hb := "never"
		switch {
		case n.GetState() == stateRemoved:
			hb = "-" // gone on purpose: no heartbeat is expected
		case n.GetLastHeartbeatMsAgo() >= 0:
			hb = (time.Duration(n.GetLastHeartbeatMsAgo()) * time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", n.GetNodeId(), n.GetState(), n.GetIncarnation(),
			n.GetEpoch(), n.GetKeys(), humanBytes(n.GetDiskBytes()), hb)
	}
	_ = tw.Flush()
}

func newMigrationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "migration", Short: "Show data migrations (node and replication-factor changes)"}
	var asJSON bool
	get := &cobra.Command{
		Use: "get ID", Short: "Show one migration", Args: cobra.ExactArgs(1),
		Example: "  pairdb migration get node_addition-20261201T101500-1a2b3c4d\n  pairdb migration get ID --json | jq .state",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				m, err := c.GetMigration(ctx, args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), m)
				}
				printMigration(cmd.OutOrStdout(), m)
				return nil
			})
		},
	}
	addJSONFlag(get, &asJSON)
	list := &cobra.Command{
		Use: "list", Short: "List migrations, newest first", Args: cobra.NoArgs,
		Example: "  pairdb migration list\n  pairdb migration list --json | jq -r '.migrations[0].migration_id'",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				ms, err := c.ListMigrations(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), &pb.ListMigrationsResponse{Migrations: ms})
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "MIGRATION\tTYPE\tSTATE\tKEYS\tNODES\tTENANT")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", m.GetMigrationId(), m.GetType(), m.GetState(),
						m.GetKeysTransferred(), m.GetKeysTotal(), strings.Join(m.GetNodeIds(), ","), m.GetTenantId())
				}
				return tw.Flush()
			})
		},
	}
	addJSONFlag(list, &asJSON)
	watch := &cobra.Command{
		Use: "watch ID", Short: "Follow a migration's progress until it completes", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(_ context.Context, c *client.Client) error {
				m, err := watchMigration(cmd.Context(), c, args[0], os.Stderr)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), completedLine(m))
				return nil
			})
		},
	}
	cmd.AddCommand(get, list, watch)
	return cmd
}

func printMigration(w io.Writer, m *pb.Migration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ended := "-"
	if m.GetEndedAtMs() > 0 {
		ended = time.UnixMilli(m.GetEndedAtMs()).UTC().Format(time.RFC3339)
	}
	for _, row := range [][2]string{
		{"migration_id", m.GetMigrationId()},
		{"type", m.GetType()},
		{"state", m.GetState()},
		{"nodes", strings.Join(m.GetNodeIds(), ",")},
		{"tenant", m.GetTenantId()},
		{"keys", fmt.Sprintf("%d of %d transferred (%.1f%%)", m.GetKeysTransferred(), m.GetKeysTotal(), m.GetPercentage())},
		{"pending_nodes", strings.Join(m.GetPendingNodes(), ",")},
		{"started_at", time.UnixMilli(m.GetStartedAtMs()).UTC().Format(time.RFC3339)},
		{"ended_at", ended},
		{"error", m.GetError()},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	_ = tw.Flush()
}

func reportChange(cmd *cobra.Command, c *client.Client, resp *pb.NodeChangeResponse, err error, wait, asJSON bool) error {
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if !wait {
		if asJSON {
			return printJSON(out, resp)
		}
		fmt.Fprintf(out, "migration %s started at ring epoch %d\n", resp.GetMigrationId(), resp.GetEpoch())
		if resp.GetMessage() != "" {
			fmt.Fprintln(out, resp.GetMessage())
		}
		fmt.Fprintf(out, "follow it with: pairdb migration watch %s\n", resp.GetMigrationId())
		return nil
	}
	fmt.Fprintf(os.Stderr, "migration %s started at ring epoch %d\n", resp.GetMigrationId(), resp.GetEpoch())
	m, err := watchMigration(cmd.Context(), c, resp.GetMigrationId(), os.Stderr)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(out, m)
	}
	fmt.Fprintln(out, completedLine(m))
	return nil
}

// migrationPoll is how often watchMigration asks for the migration.
const migrationPoll = 250 * time.Millisecond

// watchMigration polls the migration and shows its progress on w until it
// completes, and returns its last state. Each poll has its own deadline; the
// watch itself ends with the migration or Ctrl-C.
func watchMigration(ctx context.Context, c *client.Client, id string, w *os.File) (*pb.Migration, error) {
	line := &statusLine{w: w, terminal: isTerminal(w)}
	tick := time.NewTicker(migrationPoll)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := c.GetMigration(pctx, id)
		cancel()
		if err != nil {
			line.end()
			return nil, err
		}
		line.show(migrationStatus(m, time.Now()))
		if m.GetState() == "completed" {
			line.end()
			return m, nil
		}
		select {
		case <-ctx.Done():
			line.end()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// migrationStatus is one line of a running migration's progress. Keys move
// only where replicas differ, so a transfer can spend most of its time
// comparing ranges with nothing to copy: the line shows the nodes still
// transferring and the time so far next to the keys, and the rate is over
// the whole run, not a moving window that drops to zero between pages.
func migrationStatus(m *pb.Migration, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, %s keys", m.GetMigrationId(), m.GetState(), keysDone(m))
	elapsed := now.Sub(time.UnixMilli(m.GetStartedAtMs()))
	if m.GetEndedAtMs() > 0 {
		elapsed = time.Duration(m.GetEndedAtMs()-m.GetStartedAtMs()) * time.Millisecond
	}
	elapsed = max(elapsed, 0) // the coordinator's clock may be ahead of ours
	fmt.Fprintf(&b, ", %s keys/s, %s", rate(m.GetKeysTransferred(), elapsed), elapsed.Round(100*time.Millisecond))
	if p := m.GetPendingNodes(); len(p) > 0 {
		fmt.Fprintf(&b, ", waiting for %s", strings.Join(p, ","))
	}
	if e := m.GetError(); e != "" {
		fmt.Fprintf(&b, " (retrying: %s)", e)
	}
	return b.String()
}

func keysDone(m *pb.Migration) string {
	if m.GetKeysTotal() == 0 {
		return strconv.FormatUint(m.GetKeysTransferred(), 10)
	}
	return fmt.Sprintf("%d/%d (%.0f%%)", m.GetKeysTransferred(), m.GetKeysTotal(), m.GetPercentage())
}

func rate(n uint64, d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	return strconv.FormatFloat(float64(n)/d.Seconds(), 'f', 0, 64)
}

func completedLine(m *pb.Migration) string {
	took := time.Duration(m.GetEndedAtMs()-m.GetStartedAtMs()) * time.Millisecond
	return fmt.Sprintf("migration %s completed: %d keys moved in %s", m.GetMigrationId(), m.GetKeysTransferred(), took)
}

// statusLine shows a changing status: rewritten in place on a terminal;
// elsewhere (a log, a pipe) a line each time it changes, at most one a
// second, so a long run stays readable.
type statusLine struct {
	w        io.Writer
	terminal bool
	last     string
	lastAt   time.Time
	shown    bool
}

func (s *statusLine) show(text string) {
	if s.terminal {
		fmt.Fprintf(s.w, "\r\033[K%s", text)
		s.shown = true
		return
	}
	if text != s.last && time.Since(s.lastAt) >= time.Second {
		fmt.Fprintln(s.w, text)
		s.last, s.lastAt = text, time.Now()
	}
}

// end finishes the line on a terminal.
func (s *statusLine) end() {
	if s.terminal && s.shown {
		fmt.Fprintln(s.w)
		s.shown = false
	}
}

func humanBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
