package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/natsauth"
)

// helmSecret is the Secret the NATS pods read the passwords from
// (deploy/nats/values.yaml).
const helmSecret = "pairdb-nats-auth"

func newNATSAccountsCmd(g *globals) *cobra.Command {
	var (
		nodes, tenants []string
		helmEnv        bool
	)
	cmd := &cobra.Command{
		Use:   "nats-accounts",
		Short: "Print the NATS accounts, users and permissions for your storage node and tenant ids",
		Long: `Print the NATS accounts, users and permissions of a PairDB cluster (the
accounts.conf that nats-server.conf and the Helm values include): a user for
the coordinators, one per storage node, one for operators, and an account
per tenant, each allowed exactly what its role needs (README, "Who may do
what"). The permissions come from the subjects the code uses; rerun it when
you add a storage node or a tenant, or upgrade PairDB.

Each user's password is read from a variable of the NATS server's
environment: NATS_PASSWORD_SYS, NATS_PASSWORD_COORDINATOR,
NATS_PASSWORD_OPERATOR, NATS_PASSWORD_NODE_<ID> and NATS_PASSWORD_TENANT_<ID>
(ids in upper case, '-' as '_'). --helm-env
prints the container.env block of deploy/nats/values.yaml that passes them
from the Secret ` + helmSecret + `, one key per user name.`,
		Example: `  pairdb nats-accounts --nodes pairdb-storage-0,pairdb-storage-1,pairdb-storage-2 --tenants acme > deploy/nats/accounts.conf
  pairdb nats-accounts --nodes pairdb-storage-0,pairdb-storage-1,pairdb-storage-2 --tenants acme --helm-env`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := natsauth.Config{Subjects: g.subjects(), Nodes: nodes, Tenants: tenants}
			var (
				out []byte
				err error
			)
			if helmEnv {
				out, err = natsauth.HelmEnv(c, helmSecret)
			} else {
				out, err = natsauth.Render(c, accountsCommand(g.prefix, nodes, tenants))
			}
			if err != nil {
				return usageError("%v", err)
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringSliceVar(&nodes, "nodes", nil, "every storage node id (comma-separated or repeated); required")
	cmd.Flags().StringSliceVar(&tenants, "tenants", nil, "every tenant id that gets NATS credentials of its own")
	cmd.Flags().BoolVar(&helmEnv, "helm-env", false, "print the container.env block of deploy/nats/values.yaml instead")
	return cmd
}

// accountsCommand is the command line that renders the same file.
func accountsCommand(prefix string, nodes, tenants []string) string {
	line := "pairdb nats-accounts"
	if prefix != "" && prefix != bus.DefaultPrefix {
		line += " --prefix " + prefix
	}
	line += " --nodes " + strings.Join(nodes, ",")
	if len(tenants) > 0 {
		line += " --tenants " + strings.Join(tenants, ",")
	}
	return fmt.Sprint(line)
}
