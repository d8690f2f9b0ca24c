package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// repairPoll is how often `pairdb repair` polls the rounds it started.
const repairPoll = 250 * time.Millisecond

func newRepairCmd(g *globals) *cobra.Command {
	var (
		nodes []string
		all   bool
	)
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Run anti-entropy now: compare replicas, repair what differs and collect due tombstones, with progress",
		Long: `Asks storage nodes to run an anti-entropy round at once (nodes also run one every
--anti-entropy-interval). Each node compares every ring arc it replicates with the other
replicas by digest, narrows differences down and merges the differing keys both ways.
--tenant limits the rounds to one tenant, --node to some nodes (default: every NORMAL or
LEAVING node); --all repairs every tenant on every node. The command follows the rounds
with a progress bar over the arcs compared and ends with the number of keys fixed.`,
		Example: "  pairdb repair --all\n  pairdb repair --tenant acme\n  pairdb repair --node node-2 --node node-3",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tenant := ""
			if cmd.Flags().Changed("tenant") {
				tenant = g.tenant
			}
			if tenant == "" && len(nodes) == 0 && !all {
				return errors.New("name what to repair: --tenant T, --node N or --all")
			}
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				return runRepair(ctx, c, tenant, nodes)
			})
		},
	}
	cmd.Flags().StringSliceVar(&nodes, "node", nil, "storage node(s) to run rounds on (default: every NORMAL or LEAVING node)")
	cmd.Flags().BoolVar(&all, "all", false, "every tenant on every node")
	return cmd
}

func runRepair(ctx context.Context, c *client.Client, tenant string, nodes []string) error {
	if len(nodes) == 0 {
		resp, err := c.ListNodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range resp.GetNodes() {
			if s := n.GetState(); s == "NORMAL" || s == "LEAVING" {
				nodes = append(nodes, n.GetNodeId())
			}
		}
		if len(nodes) == 0 {
			return errors.New("the ring has no NORMAL node to repair")
		}
	}
	start := time.Now()
	rounds := make([]*pb.RepairStatus, 0, len(nodes))
	for _, node := range nodes {
		st, err := c.StartRepair(ctx, node, tenant)
		if err != nil {
			return errors.Wrapf(err, "start a repair round on %s", node)
		}
		rounds = append(rounds, st)
	}
	what := "every tenant"
	if tenant != "" {
		what = "tenant " + tenant
	}
	fmt.Fprintf(os.Stderr, "repair of %s started on %d node(s)\n", what, len(rounds))
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetDescription("repair"),
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("arcs"),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
	tick := time.NewTicker(repairPoll)
	defer tick.Stop()
	for {
		var total, done, fixed uint64
		finished := true
		for i, r := range rounds {
			if !repairEnded(r) {
				st, err := c.RepairStatus(ctx, r.GetNodeId(), r.GetRoundId())
				if err != nil {
					return errors.Wrapf(err, "poll repair round %s on %s", r.GetRoundId(), r.GetNodeId())
				}
				rounds[i] = st
			}
			total += rounds[i].GetArcsTotal()
			done += rounds[i].GetArcsDone()
			fixed += rounds[i].GetKeysFixed()
			finished = finished && repairEnded(rounds[i])
		}
		if total > 0 && bar.GetMax64() != int64(total) {
			bar.ChangeMax64(int64(total))
		}
		bar.Describe(fmt.Sprintf("repair: %d keys fixed", fixed))
		_ = bar.Set64(int64(done))
		if finished {
			_ = bar.Finish()
			fmt.Fprintln(os.Stderr)
			return reportRepair(rounds, time.Since(start))
		}
		select {
		case <-ctx.Done():
			return errors.Wrap(ctx.Err(), "stopped following the repair (the rounds go on)")
		case <-tick.C:
		}
	}
}

func repairEnded(s *pb.RepairStatus) bool {
	switch s.GetState() {
	case "done", "failed", "skipped":
		return true
	}
	return false
}

// reportRepair prints one line per round and the totals; a round that did
// not complete makes the command fail.
func reportRepair(rounds []*pb.RepairStatus, took time.Duration) error {
	var fixed, purged, compared uint64
	incomplete := 0
	fmt.Printf("%-16s %-8s %12s %10s %10s %10s %s\n", "NODE", "STATE", "ARCS", "DIGESTS", "FIXED", "PURGED", "TOOK")
	for _, r := range rounds {
		took := time.Duration(r.GetEndedAtMs()-r.GetStartedAtMs()) * time.Millisecond
		fmt.Printf("%-16s %-8s %5d/%-6d %10d %10d %10d %s\n", r.GetNodeId(), r.GetState(), r.GetArcsDone(), r.GetArcsTotal(),
			r.GetDigestsCompared(), r.GetKeysFixed(), r.GetTombstonesPurged(), took)
		if r.GetError() != "" {
			fmt.Printf("  %s: %s\n", r.GetNodeId(), r.GetError())
		}
		if r.GetState() != "done" {
			incomplete++
		}
		fixed += r.GetKeysFixed()
		purged += r.GetTombstonesPurged()
		compared += r.GetDigestsCompared()
	}
	fmt.Printf("repair finished in %s: %d keys fixed, %d tombstones purged, %d digests compared on %d node(s)\n",
		took.Round(time.Millisecond), fixed, purged, compared, len(rounds))
	if incomplete > 0 {
		return errors.Newf("the round did not complete on %d node(s); run the repair again (a membership change, or an unreachable replica)", incomplete)
	}
	return nil
}
