package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/postgres/migrate"
)

func newMigrateCmd(g *globals) *cobra.Command {
	var pgURL string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the tenant database's schema migrations (coordinators also do this at start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pgURL == "" {
				return fmt.Errorf("--postgres-url (or PAIRDB_POSTGRES_URL) is required")
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			pool, err := pgxpool.New(ctx, pgURL)
			if err != nil {
				return fmt.Errorf("open the tenant database: %w", err)
			}
			defer pool.Close()
			applied, err := migrate.Apply(ctx, pool, log)
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Printf("schema is up to date at version %d\n", migrate.Latest())
				return nil
			}
			fmt.Printf("applied migrations %v; schema is at version %d\n", applied, migrate.Latest())
			return nil
		},
	}
	cmd.Flags().StringVar(&pgURL, "postgres-url", os.Getenv("PAIRDB_POSTGRES_URL"), "PostgreSQL URL (env PAIRDB_POSTGRES_URL)")
	return cmd
}
