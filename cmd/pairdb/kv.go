package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// maxStdinValue bounds a value read from stdin (the largest tenant limit).
const maxStdinValue = 4 << 20

func newPutCmd(g *globals) *cobra.Command {
	var wf writeFlags
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE]",
		Short: "Store a value (from the argument, or stdin when omitted), replacing what a read sees now",
		Long: `Store a value. The value comes from the argument, or from stdin when it is omitted.

By default put first reads the key and writes with that read's context, so
the new value replaces every sibling you would have seen. --context gives the
context yourself (the "context:" line of an earlier get, put or delete);
--blind writes without any context, so the value is concurrent with whatever is
stored and becomes a sibling.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			if len(args) == 2 {
				value = []byte(args[1])
			} else {
				b, err := io.ReadAll(io.LimitReader(os.Stdin, maxStdinValue+1))
				if err != nil {
					return fmt.Errorf("read value from stdin: %w", err)
				}
				if len(b) > maxStdinValue {
					return fmt.Errorf("value on stdin is larger than %d bytes", maxStdinValue)
				}
				value = b
			}
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				opts, err := wf.options(ctx, c, args[0])
				if err != nil {
					return err
				}
				resp, err := c.Put(ctx, args[0], value, opts...)
				if err != nil {
					return err
				}
				fmt.Printf("ok: %d replica(s) acknowledged at %s%s\nvector_clock: %s\ncontext: %s\n",
					resp.GetReplicaCount(), resp.GetConsistency(), dupNote(resp.GetDuplicate()),
					formatClock(resp.GetVectorClock()), formatContext(resp.GetContext()))
				return nil
			})
		},
	}
	wf.register(cmd)
	return cmd
}

func newDeleteCmd(g *globals) *cobra.Command {
	var wf writeFlags
	cmd := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a key (everything a read sees now, unless --context or --blind)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				opts, err := wf.options(ctx, c, args[0])
				if err != nil {
					return err
				}
				resp, err := c.Delete(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				fmt.Printf("deleted: %d replica(s) acknowledged at %s%s\n", resp.GetReplicaCount(), resp.GetConsistency(), dupNote(resp.GetDuplicate()))
				return nil
			})
		},
	}
	wf.register(cmd)
	return cmd
}

func newGetCmd(g *globals) *cobra.Command {
	var (
		consistency string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a key; concurrent values (siblings) are all shown",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Get(ctx, args[0], client.ReadConsistency(consistency))
				if err != nil {
					return err
				}
				if asJSON {
					fmt.Println(protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Format(resp))
					return nil
				}
				if !resp.GetFound() {
					return fmt.Errorf("KEY_NOT_FOUND: key %q not found in tenant %q", args[0], g.tenant)
				}
				sibs := resp.GetSiblings()
				if len(sibs) == 1 {
					fmt.Println(string(sibs[0].GetValue()))
				} else {
					fmt.Printf("%d siblings (concurrent writes); the next put replaces them all:\n", len(sibs))
					for i, s := range sibs {
						fmt.Printf("  [%d] %s\n", i+1, s.GetValue())
					}
				}
				fmt.Fprintf(os.Stderr, "vector_clock: %s\ncontext: %s\n", formatClock(resp.GetVectorClock()), formatContext(resp.GetContext()))
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&consistency, "consistency", "c", "", "one, quorum or all (default: the tenant's)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole response as JSON")
	return cmd
}

// writeFlags are the flags of put and delete.
type writeFlags struct {
	consistency, context, idemKey string
	blind                         bool
}

func (w *writeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&w.consistency, "consistency", "c", "", "one, quorum or all (default: the tenant's)")
	f.StringVar(&w.context, "context", "", `the "context:" printed by get (or put, delete), to supersede what that read saw`)
	f.StringVar(&w.idemKey, "idempotency-key", "", "idempotency key (default: a fresh random one)")
	f.BoolVar(&w.blind, "blind", false, "write without a context: concurrent with what is stored (makes siblings)")
	cmd.MarkFlagsMutuallyExclusive("context", "blind")
}

// options builds the write options; without --context or --blind it reads
// key first (at the write's consistency) and uses that read's context.
func (w *writeFlags) options(ctx context.Context, c *client.Client, key string) ([]client.WriteOption, error) {
	opts := []client.WriteOption{client.Consistency(w.consistency)}
	if w.idemKey != "" {
		opts = append(opts, client.IdempotencyKey(w.idemKey))
	}
	switch {
	case w.context != "":
		tok, err := parseContext(w.context)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithContext(tok))
	case !w.blind:
		got, err := c.Get(ctx, key, client.ReadConsistency(w.consistency))
		if err != nil {
			return nil, fmt.Errorf("read the key's context first (use --blind to skip): %w", err)
		}
		opts = append(opts, client.WithContext(got.GetContext()))
	}
	return opts, nil
}

func withClient(ctx context.Context, g *globals, fn func(context.Context, *client.Client) error) error {
	c, closeFn, err := g.client()
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(ctx, c)
}

func dupNote(dup bool) string {
	if dup {
		return " (duplicate: the first response was returned)"
	}
	return ""
}

// formatClock prints a vector clock as actor:counter,...; "-" when empty.
func formatClock(vc []*pb.ClockEntry) string {
	if len(vc) == 0 {
		return "-"
	}
	parts := make([]string, len(vc))
	for i, e := range vc {
		parts[i] = e.GetActor() + ":" + strconv.FormatUint(e.GetCounter(), 10)
	}
	return strings.Join(parts, ",")
}

// formatContext prints a context token as JSON does (standard base64), so
// either can be pasted into --context; "-" when there is none.
func formatContext(tok []byte) string {
	if len(tok) == 0 {
		return "-"
	}
	return base64.StdEncoding.EncodeToString(tok)
}

func parseContext(s string) ([]byte, error) {
	if s == "-" {
		return nil, nil
	}
	tok, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("--context: not a context printed by get: %w", err)
	}
	return tok, nil
}
