package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// repairPoll is how often `pairdb repair` polls the rounds it started.
const repairPoll = 250 * time.Millisecond

func newRepairCmd(g *globals) *cobra.Command {
	var (
		nodes       []string
		all, asJSON bool
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
		Example: "  pairdb repair --all\n  pairdb repair --tenant acme\n  pairdb repair --node node-2 --node node-3\n  pairdb repair --all --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tenant := ""
			if cmd.Flags().Changed("tenant") {
				tenant = g.tenant
			}
			if tenant == "" && len(nodes) == 0 && !all {
				return usageError("name what to repair: --tenant T, --node N or --all")
			}
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				rounds, took, err := runRepair(ctx, c, tenant, nodes)
				if err != nil {
					return err
				}
				if asJSON {
					if err := printJSONList(cmd.OutOrStdout(), "rounds", rounds); err != nil {
						return err
					}
					return incomplete(rounds)
				}
				return reportRepair(cmd.OutOrStdout(), rounds, took)
			})
		},
	}
	cmd.Flags().StringSliceVar(&nodes, "node", nil, "storage node(s) to run rounds on (default: every NORMAL or LEAVING node)")
	cmd.Flags().BoolVar(&all, "all", false, "every tenant on every node")
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// repairable reports whether a node in this state replicates arcs (a
// refilling one does: a round pulls what it lacks).
func repairable(state string) bool {
	return state == "NORMAL" || state == "LEAVING" || state == "REFILLING"
}

// repairTargets checks what the command names before any round starts, so
// an unknown tenant or node is a NOT_FOUND error, not a round over nothing
// (an unknown tenant has no arcs) or UNAVAILABLE (nothing serves an unknown
// node's subject).
func repairTargets(ctx context.Context, c *client.Client, tenant string, nodes []string) ([]string, error) {
	if tenant != "" {
		if _, err := c.GetTenant(ctx, tenant); err != nil {
			return nil, err
		}
	}
	resp, err := c.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	state := map[string]string{}
	for _, n := range resp.GetNodes() {
		state[n.GetNodeId()] = n.GetState()
	}
	for _, id := range nodes {
		s, ok := state[id]
		if !ok {
			return nil, status.Errorf(pb.ErrorCode_NODE_NOT_FOUND, "node %s is not in the ring (pairdb node list)", id)
		}
		if !repairable(s) {
			return nil, status.Errorf(pb.ErrorCode_NODE_NOT_FOUND, "node %s is %s, not a NORMAL or LEAVING member: it holds no ranges to repair", id, s)
		}
	}
	if len(nodes) > 0 {
		return nodes, nil
	}
	for _, n := range resp.GetNodes() {
		if repairable(n.GetState()) {
			nodes = append(nodes, n.GetNodeId())
		}
	}
	if len(nodes) == 0 {
		return nil, status.Errorf(pb.ErrorCode_NODE_NOT_FOUND, "the ring has no NORMAL node to repair")
	}
	return nodes, nil
}

// runRepair starts a round on every node and follows them until they end.
func runRepair(ctx context.Context, c *client.Client, tenant string, nodes []string) ([]*pb.RepairStatus, time.Duration, error) {
	nodes, err := repairTargets(ctx, c, tenant, nodes)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	rounds := make([]*pb.RepairStatus, 0, len(nodes))
	for _, node := range nodes {
		st, err := c.StartRepair(ctx, node, tenant)
		if err != nil {
			return nil, 0, errors.Wrapf(err, "start a repair round on %s", node)
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
					return nil, 0, errors.Wrapf(err, "poll repair round %s on %s", r.GetRoundId(), r.GetNodeId())
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
			return rounds, time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return nil, 0, errors.Wrap(ctx.Err(), "stopped following the repair (the rounds go on)")
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
func reportRepair(w io.Writer, rounds []*pb.RepairStatus, took time.Duration) error {
	var fixed, purged, compared uint64
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tARCS\tDIGESTS\tFIXED\tPURGED\tTOOK")
	for _, r := range rounds {
		took := time.Duration(r.GetEndedAtMs()-r.GetStartedAtMs()) * time.Millisecond
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%d\t%s\n", r.GetNodeId(), r.GetState(), r.GetArcsDone(), r.GetArcsTotal(),
			r.GetDigestsCompared(), r.GetKeysFixed(), r.GetTombstonesPurged(), took)
		fixed += r.GetKeysFixed()
		purged += r.GetTombstonesPurged()
		compared += r.GetDigestsCompared()
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rounds {
		if r.GetError() != "" {
			fmt.Fprintf(w, "  %s: %s\n", r.GetNodeId(), r.GetError())
		}
	}
	fmt.Fprintf(w, "repair finished in %s: %d keys fixed, %d tombstones purged, %d digests compared on %d node(s)\n",
		took.Round(time.Millisecond), fixed, purged, compared, len(rounds))
	return incomplete(rounds)
}

// incomplete fails when a round did not complete.
func incomplete(rounds []*pb.RepairStatus) error {
	n := 0
	for _, r := range rounds {
		if r.GetState() != "done" {
			n++
		}
	}
	if n > 0 {
		return errors.Newf("the round did not complete on %d node(s); run the repair again (a membership change, or an unreachable replica)", n)
	}
	return nil
}
