package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

func newTenantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Create, read, update, list and delete tenants"}
	var f tenantFlags
	create := &cobra.Command{
		Use: "create ID", Short: "Create a tenant", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				t, err := c.CreateTenant(ctx, &pb.CreateTenantRequest{
					TenantId: args[0], ReplicationFactor: f.rf, DefaultConsistency: f.consistency,
					ConflictPolicy: f.policy, MaxSiblings: f.maxSiblings, MaxValueBytes: f.maxValue,
				})
				return printMsg(t, err)
			})
		},
	}
	f.register(create)
	var uf tenantFlags
	var expected uint64
	update := &cobra.Command{
		Use: "update ID", Short: "Change the settings given as flags", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.UpdateTenantRequest{TenantId: args[0], ExpectedVersion: expected}
			fl := cmd.Flags()
			if fl.Changed("replication-factor") {
				req.ReplicationFactor = proto.Uint32(uf.rf)
			}
			if fl.Changed("consistency") {
				req.DefaultConsistency = proto.String(uf.consistency)
			}
			if fl.Changed("conflict-policy") {
				req.ConflictPolicy = proto.String(uf.policy)
			}
			if fl.Changed("max-siblings") {
				req.MaxSiblings = proto.Uint32(uf.maxSiblings)
			}
			if fl.Changed("max-value-bytes") {
				req.MaxValueBytes = proto.Uint64(uf.maxValue)
			}
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.UpdateTenant(ctx, req)
				if err := printMsg(resp.GetTenant(), err); err != nil {
					return err
				}
				if id := resp.GetMigrationId(); id != "" {
					fmt.Printf("replication factor %d -> %d: migration %s moves the data (pairdb migration watch %s)\n",
						resp.GetOldReplicationFactor(), req.GetReplicationFactor(), id, id)
				}
				return nil
			})
		},
	}
	uf.register(update)
	update.Flags().Uint64Var(&expected, "expected-version", 0, "fail with VERSION_CONFLICT unless the tenant is at this version")
	get := &cobra.Command{
		Use: "get ID", Short: "Show a tenant", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				t, err := c.GetTenant(ctx, args[0])
				return printMsg(t, err)
			})
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List all tenants", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				token := ""
				for {
					ts, next, err := c.ListTenants(ctx, 100, token)
					if err != nil {
						return err
					}
					for _, t := range ts {
						fmt.Printf("%-24s rf=%d consistency=%s policy=%s version=%d\n", t.GetTenantId(),
							t.GetReplicationFactor(), t.GetDefaultConsistency(), t.GetConflictPolicy(), t.GetVersion())
					}
					if next == "" {
						return nil
					}
					token = next
				}
			})
		},
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a tenant record", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteTenant(ctx, args[0]); err != nil {
					return err
				}
				fmt.Printf("tenant %s deleted\n", args[0])
				return nil
			})
		},
	}
	cmd.AddCommand(create, get, update, list, del)
	return cmd
}

type tenantFlags struct {
	rf, maxSiblings     uint32
	consistency, policy string
	maxValue            uint64
}

func (t *tenantFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Uint32Var(&t.rf, "replication-factor", 0, "replicas per key, 1 to 7 (default 3)")
	f.StringVar(&t.consistency, "consistency", "", "default consistency: one, quorum or all (default quorum)")
	f.StringVar(&t.policy, "conflict-policy", "", "siblings or last_write_wins (default siblings)")
	f.Uint32Var(&t.maxSiblings, "max-siblings", 0, "most concurrent values a key may hold (default 16)")
	f.Uint64Var(&t.maxValue, "max-value-bytes", 0, "largest value in bytes (default 1 MiB)")
}

func printMsg(m proto.Message, err error) error {
	if err != nil {
		return err
	}
	fmt.Println(protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Format(m))
	return nil
}
