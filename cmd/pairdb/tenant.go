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
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/config"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/tenant"
)

func newTenantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Create, read, update, list and delete tenants"}
	cmd.AddCommand(newTenantCreateCmd(g), newTenantGetCmd(g), newTenantUpdateCmd(g), newTenantListCmd(g), newTenantDeleteCmd(g))
	return cmd
}

func newTenantCreateCmd(g *globals) *cobra.Command {
	var (
		cf     tenantFlags
		asJSON bool
	)
	create := &cobra.Command{
		Use: "create ID", Short: "Create a tenant", Args: cobra.ExactArgs(1),
		Example: `  pairdb tenant create acme
  pairdb tenant create acme --replication-factor 2 --conflict-policy last_write_wins --max-value-bytes 4MiB
  pairdb tenant create acme --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.check(cmd.Flags()); err != nil {
				return err
			}
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				t, err := c.CreateTenant(ctx, &pb.CreateTenantRequest{
					TenantId: args[0], ReplicationFactor: cf.rf, DefaultConsistency: cf.consistency,
					ConflictPolicy: cf.policy, MaxSiblings: cf.maxSiblings, MaxValueBytes: uint64(cf.maxValue),
					ReadsPerSecond: cf.reads, WritesPerSecond: cf.writes,
				})
				if err != nil {
					return err
				}
				return printTenant(cmd.OutOrStdout(), t, asJSON)
			})
		},
	}
	cf.register(create, false)
	addJSONFlag(create, &asJSON)
	return create
}

func newTenantUpdateCmd(g *globals) *cobra.Command {
	var (
		uf       tenantFlags
		asJSON   bool
		expected uint64
	)
	update := &cobra.Command{
		Use: "update ID", Short: "Change the settings given as flags; the others stay as they are", Args: cobra.ExactArgs(1),
		Long: `Change the settings given as flags; the others stay as they are. A new
replication factor moves data: the answer names the migration that does it.`,
		Example: `  pairdb tenant update acme --max-siblings 64
  pairdb tenant update acme --replication-factor 3 --expected-version 2
  pairdb tenant update acme --consistency all --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if err := uf.check(fl); err != nil {
				return err
			}
			req := uf.updateRequest(fl, args[0], expected)
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.UpdateTenant(ctx, req)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					return printJSON(out, resp)
				}
				if err := printTenant(out, resp.GetTenant(), false); err != nil {
					return err
				}
				if id := resp.GetMigrationId(); id != "" {
					fmt.Fprintf(out, "replication factor %d -> %d: migration %s moves the data (pairdb migration watch %s)\n",
						resp.GetOldReplicationFactor(), req.GetReplicationFactor(), id, id)
				}
				return nil
			})
		},
	}
	uf.register(update, true)
	update.Flags().Uint64Var(&expected, "expected-version", 0, "fail with VERSION_CONFLICT unless the tenant is at this version")
	addJSONFlag(update, &asJSON)
	return update
}

// updateRequest sets the fields of the flags given, and only those.
func (t *tenantFlags) updateRequest(fl *pflag.FlagSet, id string, expected uint64) *pb.UpdateTenantRequest {
	req := &pb.UpdateTenantRequest{TenantId: id, ExpectedVersion: expected}
	if fl.Changed("replication-factor") {
		req.ReplicationFactor = proto.Uint32(t.rf)
	}
	if fl.Changed("consistency") {
		req.DefaultConsistency = proto.String(t.consistency)
	}
	if fl.Changed("conflict-policy") {
		req.ConflictPolicy = proto.String(t.policy)
	}
	if fl.Changed("max-siblings") {
		req.MaxSiblings = proto.Uint32(t.maxSiblings)
	}
	if fl.Changed("max-value-bytes") {
		req.MaxValueBytes = proto.Uint64(uint64(t.maxValue))
	}
	if fl.Changed("reads-per-second") {
		req.ReadsPerSecond = proto.Uint32(t.reads)
	}
	if fl.Changed("writes-per-second") {
		req.WritesPerSecond = proto.Uint32(t.writes)
	}
	return req
}

func newTenantGetCmd(g *globals) *cobra.Command {
	var asJSON bool
	get := &cobra.Command{
		Use: "get ID", Short: "Show a tenant", Args: cobra.ExactArgs(1),
		Example: "  pairdb tenant get acme\n  pairdb tenant get acme --json | jq .max_value_bytes",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				t, err := c.GetTenant(ctx, args[0])
				if err != nil {
					return err
				}
				return printTenant(cmd.OutOrStdout(), t, asJSON)
			})
		},
	}
	addJSONFlag(get, &asJSON)
	return get
}

func newTenantListCmd(g *globals) *cobra.Command {
	var asJSON bool
	list := &cobra.Command{
		Use: "list", Short: "List all tenants", Args: cobra.NoArgs,
		Example: "  pairdb tenant list\n  pairdb tenant list --json | jq -r '.tenants[].tenant_id'",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				all, err := allTenants(ctx, c)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					return printJSON(out, &pb.ListTenantsResponse{Tenants: all})
				}
				tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "TENANT\tRF\tCONSISTENCY\tPOLICY\tMAX SIBLINGS\tMAX VALUE\tVERSION")
				for _, t := range all {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%d\n", t.GetTenantId(), t.GetReplicationFactor(), t.GetDefaultConsistency(),
						t.GetConflictPolicy(), t.GetMaxSiblings(), config.Bytes(t.GetMaxValueBytes()), t.GetVersion())
				}
				return tw.Flush()
			})
		},
	}
	addJSONFlag(list, &asJSON)
	return list
}

// allTenants follows the tenant list's pages to the end.
func allTenants(ctx context.Context, c *client.Client) ([]*pb.Tenant, error) {
	var all []*pb.Tenant
	token := ""
	for {
		ts, next, err := c.ListTenants(ctx, tenant.MaxPageSize, token)
		if err != nil {
			return nil, err
		}
		all = append(all, ts...)
		if next == "" {
			return all, nil
		}
		token = next
	}
}

func newTenantDeleteCmd(g *globals) *cobra.Command {
	var force, wait, asJSON bool
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a tenant and its data on every storage node",
		Long: `Delete a tenant. Its record goes first (requests get TENANT_NOT_FOUND at once),
then its idempotency records, then every storage node drops its data and
reports it. A tenant that still holds data is refused unless --force: the data
cannot be brought back. --wait follows the removal until every node is done.
A tenant created again under the same id starts empty.`,
		Example: `  pairdb tenant delete acme
  pairdb tenant delete acme --force --wait
  pairdb tenant delete acme --force --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.DeleteTenant(ctx, &pb.DeleteTenantRequest{TenantId: args[0], Force: force})
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					if err := printJSON(out, resp); err != nil || !wait {
						return err
					}
				} else {
					fmt.Fprintf(out, "tenant %s deleted; storage nodes drop its data (migration %s)\n", args[0], resp.GetMigrationId())
				}
				if !wait {
					return nil
				}
				m, err := watchMigration(cmd.Context(), c, resp.GetMigrationId(), os.Stderr)
				if err != nil {
					return err
				}
				if !asJSON {
					fmt.Fprintf(out, "every storage node dropped tenant %s's data (%d keys)\n", args[0], m.GetKeysTransferred())
				}
				return nil
			})
		},
	}
	del.Flags().BoolVar(&force, "force", false, "delete a tenant that still holds data (the data is removed for good)")
	del.Flags().BoolVar(&wait, "wait", false, "wait until every storage node dropped the tenant's data")
	addJSONFlag(del, &asJSON)
	return del
}

// rateText is a rate limit for people: "none" for 0.
func rateText(r uint32) string {
	if r == 0 {
		return "none"
	}
	return strconv.FormatUint(uint64(r), 10) + "/s"
}

// printTenant shows a tenant record, one setting a line, or as JSON.
func printTenant(w io.Writer, t *pb.Tenant, asJSON bool) error {
	if asJSON {
		return printJSON(w, t)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range [][2]string{
		{"tenant_id", t.GetTenantId()},
		{"replication_factor", strconv.FormatUint(uint64(t.GetReplicationFactor()), 10)},
		{"default_consistency", t.GetDefaultConsistency()},
		{"conflict_policy", t.GetConflictPolicy()},
		{"max_siblings", strconv.FormatUint(uint64(t.GetMaxSiblings()), 10)},
		{"max_value_bytes", config.Bytes(t.GetMaxValueBytes()).String()},
		{"reads_per_second", rateText(t.GetReadsPerSecond())},
		{"writes_per_second", rateText(t.GetWritesPerSecond())},
		{"version", strconv.FormatUint(t.GetVersion(), 10)},
		{"created_at", t.GetCreatedAt().AsTime().Format(time.RFC3339)},
		{"updated_at", t.GetUpdatedAt().AsTime().Format(time.RFC3339)},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

type tenantFlags struct {
	rf, maxSiblings     uint32
	reads, writes       uint32
	consistency, policy string
	maxValue            config.Bytes
}

// register adds the settings' flags; update's say that an omitted flag
// leaves the setting alone, create's name the default.
func (t *tenantFlags) register(cmd *cobra.Command, update bool) {
	note := func(def string) string {
		if update {
			return " (unchanged when omitted)"
		}
		return " (default " + def + ")"
	}
	f := cmd.Flags()
	f.Uint32Var(&t.rf, "replication-factor", 0, fmt.Sprintf("replicas per key, %d to %d and at most the storage nodes%s",
		tenant.MinReplicationFactor, tenant.MaxReplicationFactor, note(strconv.Itoa(tenant.DefaultReplicationFactor))))
	f.StringVar(&t.consistency, "consistency", "", "default consistency: one, quorum or all"+note(tenant.DefaultConsistency))
	f.StringVar(&t.policy, "conflict-policy", "", tenant.PolicySiblings+" or "+tenant.PolicyLastWriteWins+note(tenant.DefaultConflictPolicy))
	f.Uint32Var(&t.maxSiblings, "max-siblings", 0, fmt.Sprintf("most concurrent values a key may hold, %d to %d%s",
		tenant.MinMaxSiblings, tenant.MaxMaxSiblings, note(strconv.Itoa(tenant.DefaultMaxSiblings))))
	f.Uint32Var(&t.reads, "reads-per-second", 0, fmt.Sprintf("gets (a key each), get_many keys and list pages a second, across the coordinators; 0 for no limit, at most %d%s",
		tenant.MaxRate, note("0, no limit")))
	f.Uint32Var(&t.writes, "writes-per-second", 0, fmt.Sprintf("puts and deletes (a key each) a second, across the coordinators; 0 for no limit, at most %d%s",
		tenant.MaxRate, note("0, no limit")))
	f.Var(sizeFlag{&t.maxValue}, "max-value-bytes", fmt.Sprintf("largest value: bytes, or with a unit such as 512KiB, up to %s%s",
		config.Bytes(tenant.MaxMaxValueBytes), note(config.Bytes(tenant.DefaultMaxValueBytes).String())))
}

// check refuses the values given that the server would either refuse or,
// for a zero in a create, silently replace by the default (the request
// cannot tell a zero given from one omitted). The bounds and messages are
// the server's own (package tenant).
func (t *tenantFlags) check(fl *pflag.FlagSet) error {
	if fl.Changed("replication-factor") {
		if err := tenant.CheckReplicationFactor(t.rf); err != nil {
			return err
		}
	}
	if fl.Changed("max-siblings") {
		if err := tenant.CheckMaxSiblings(t.maxSiblings); err != nil {
			return err
		}
	}
	for flag, v := range map[string]uint32{"reads-per-second": t.reads, "writes-per-second": t.writes} {
		if fl.Changed(flag) {
			if err := tenant.CheckRate(strings.TrimSuffix(flag, "-per-second"), v); err != nil {
				return err
			}
		}
	}
	if fl.Changed("max-value-bytes") {
		if t.maxValue < 0 {
			return usageError("max value bytes must be positive, got %s", t.maxValue)
		}
		if err := tenant.CheckMaxValueBytes(uint64(t.maxValue)); err != nil {
			return err
		}
	}
	return nil
}

// sizeFlag is a flag taking a size with units, as --cache-bytes does.
type sizeFlag struct{ v *config.Bytes }

func (s sizeFlag) String() string {
	if s.v == nil || *s.v == 0 {
		return ""
	}
	return s.v.String()
}

func (s sizeFlag) Set(v string) error {
	b, err := config.ParseBytes(v)
	if err != nil {
		return err
	}
	*s.v = b
	return nil
}

func (sizeFlag) Type() string { return "size" }
