package main

import (
	"fmt"

	"github.com/spf13/cobra"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

func newListCmd(g *globals) *cobra.Command {
	var (
		req    pb.ListRequest
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's keys (in hash order), a page at a time, to the end",
		Long: `List the tenant's keys and their values, one line each: the key, a tab, the
value (Go-quoted unless it is one line of text; a key with siblings says how
many). Keys come in hash order, not alphabetical order, and --prefix filters
what is printed, not what is read: a listing with a prefix reads every key.
Deleted keys are left out. --json prints one JSON object per key (JSON Lines),
with the key's context.`,
		Example: `  pairdb list
  pairdb list --prefix user/ --keys-only
  pairdb list --json | jq -r .key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, closeFn, err := g.client()
			if err != nil {
				return err
			}
			defer closeFn()
			out := cmd.OutOrStdout()
			for it, err := range c.List(cmd.Context(), &req) {
				if err != nil {
					return err
				}
				switch sibs := it.GetSiblings(); {
				case asJSON:
					b, err := jsonOut.Marshal(it)
					if err != nil {
						return err
					}
					fmt.Fprintf(out, "%s\n", b)
				case req.KeysOnly:
					fmt.Fprintln(out, it.GetKey())
				case len(sibs) == 1:
					fmt.Fprintf(out, "%s\t%s\n", it.GetKey(), textOrQuoted(sibs[0].GetValue()))
				default:
					fmt.Fprintf(out, "%s\t(%d siblings: `pairdb get %s` shows them)\n", it.GetKey(), len(sibs), it.GetKey())
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Prefix, "prefix", "", "only keys that start with this")
	f.BoolVar(&req.KeysOnly, "keys-only", false, "print the keys only")
	f.Uint32Var(&req.PageSize, "page-size", 0, "keys per request (default 100, at most 1000)")
	f.StringVarP(&req.Consistency, "consistency", "c", "", "one, quorum or all (default: the tenant's)")
	addJSONFlag(cmd, &asJSON)
	return cmd
}
