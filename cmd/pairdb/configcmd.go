package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Describe the settings (flags, PAIRDB_* variables, the YAML file)",
	}
	docs := &cobra.Command{
		Use:         "docs",
		Short:       "Print the Markdown table of every setting (the one in README.md)",
		Args:        cobra.NoArgs,
		Annotations: map[string]string{skipConfig: "true"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), config.Table())
			return err
		},
	}
	cmd.AddCommand(docs)
	return cmd
}
