package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Add, remove and list storage nodes (data moves while traffic goes on)"}
	var wait bool
	add := &cobra.Command{
		Use:   "add ID [ID...]",
		Short: "Add a running, registered storage node to the ring (several only for an empty ring)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.AddNodes(ctx, args...)
				return reportChange(cmd.Context(), g, c, resp, err, wait)
			})
		},
	}
	add.Flags().BoolVar(&wait, "wait", false, "wait for the data transfer, with a progress bar")
	var force, rwait bool
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a storage node: its ranges move to the nodes that take them over",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.RemoveNode(ctx, args[0], force)
				return reportChange(cmd.Context(), g, c, resp, err, rwait)
			})
		},
	}
	remove.Flags().BoolVar(&force, "force", false, "the node is dead: re-replicate from survivors and skip the replication-factor check")
	remove.Flags().BoolVar(&rwait, "wait", false, "wait for the data transfer, with a progress bar")
	list := &cobra.Command{
		Use: "list", Short: "List storage nodes with state, epoch, keys and disk use", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.ListNodes(ctx)
				if err != nil {
					return err
				}
				fmt.Printf("ring epoch %d\n%-16s %-10s %-18s %8s %10s %12s %s\n", resp.GetEpoch(), "NODE", "STATE", "INCARNATION", "EPOCH", "KEYS", "DISK", "HEARTBEAT")
				for _, n := range resp.GetNodes() {
					hb := "never"
					if n.GetLastHeartbeatMsAgo() >= 0 {
						hb = (time.Duration(n.GetLastHeartbeatMsAgo()) * time.Millisecond).String() + " ago"
					}
					fmt.Printf("%-16s %-10s %-18s %8d %10d %12s %s\n", n.GetNodeId(), n.GetState(), n.GetIncarnation(),
						n.GetEpoch(), n.GetKeys(), humanBytes(n.GetDiskBytes()), hb)
				}
				return nil
			})
		},
	}
	cmd.AddCommand(add, remove, list)
	return cmd
}

func newMigrationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "migration", Short: "Show data migrations (node and replication-factor changes)"}
	get := &cobra.Command{
		Use: "get ID", Short: "Show one migration", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				m, err := c.GetMigration(ctx, args[0])
				return printMsg(m, err)
			})
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List migrations, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				ms, err := c.ListMigrations(ctx)
				if err != nil {
					return err
				}
				for _, m := range ms {
					fmt.Printf("%-48s %-20s %-12s %6.1f%% %d/%d keys %v%s\n", m.GetMigrationId(), m.GetType(), m.GetState(),
						m.GetPercentage(), m.GetKeysTransferred(), m.GetKeysTotal(), m.GetNodeIds(), tenantNote(m))
				}
				return nil
			})
		},
	}
	watch := &cobra.Command{
		Use: "watch ID", Short: "Follow a migration with a progress bar until it completes", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(_ context.Context, c *client.Client) error {
				return watchMigration(cmd.Context(), c, args[0])
			})
		},
	}
	cmd.AddCommand(get, list, watch)
	return cmd
}

func tenantNote(m *pb.Migration) string {
	if m.GetTenantId() == "" {
		return ""
	}
	return " tenant=" + m.GetTenantId()
}

func reportChange(ctx context.Context, _ *globals, c *client.Client, resp *pb.NodeChangeResponse, err error, wait bool) error {
	if err != nil {
		return err
	}
	fmt.Printf("migration %s started at ring epoch %d\n", resp.GetMigrationId(), resp.GetEpoch())
	if resp.GetMessage() != "" {
		fmt.Println(resp.GetMessage())
	}
	if !wait {
		fmt.Printf("follow it with: pairdb migration watch %s\n", resp.GetMigrationId())
		return nil
	}
	return watchMigration(ctx, c, resp.GetMigrationId())
}

// watchMigration polls the migration and draws a progress bar over the keys
// transferred until it completes. Each poll has its own deadline; the watch
// itself ends with the migration or Ctrl-C.
func watchMigration(ctx context.Context, c *client.Client, id string) error {
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetDescription(id),
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("keys"),
		progressbar.OptionShowIts(),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := c.GetMigration(pctx, id)
		cancel()
		if err != nil {
			return err
		}
		if total := int64(m.GetKeysTotal()); total > 0 && bar.GetMax64() != total {
			bar.ChangeMax64(total)
		}
		_ = bar.Set64(int64(m.GetKeysTransferred()))
		if m.GetState() == "completed" {
			_ = bar.Finish()
			fmt.Fprintln(os.Stderr)
			fmt.Printf("migration %s completed: %d keys moved in %s\n", id, m.GetKeysTransferred(),
				time.Duration(m.GetEndedAtMs()-m.GetStartedAtMs())*time.Millisecond)
			return nil
		}
		if m.GetError() != "" {
			bar.Describe(id + " (retrying: " + m.GetError() + ")")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
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
