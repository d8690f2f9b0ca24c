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

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// maxStdinValue bounds a value read from stdin (the largest tenant limit).
const maxStdinValue = 4 << 20

func newPutCmd(g *globals) *cobra.Command {
	var (
		wf   writeFlags
		from string
	)
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE] | put --from FILE",
		Short: "Store a value (from the argument, or stdin when omitted), replacing what a read sees now",
		Long: `Store a value. The value comes from the argument, or from stdin when it is omitted.

By default put first reads the key and writes with that read's context, so the
new value replaces every value (sibling) the read saw. --context gives the
context yourself (the "context:" an earlier get printed on stderr, or put printed;
the same base64 as the JSON "context"); --blind writes without any context: the
value is concurrent with whatever is stored and becomes one more sibling.

--idempotency-key KEY pins the whole request, context included, so running the
same command again is answered as a duplicate (the first answer, "duplicate")
instead of writing twice. A put with it therefore does not read the context
first (a retry would read the newer context its first run left, which makes a
different request: IDEMPOTENCY_KEY_CONFLICT): it writes blind, unless you pass
--context.

--from FILE (or - for stdin) writes many keys in batches (put_many): JSON Lines
of {"key": ..., "value": "text"} or {"key": ..., "value_base64": ...}, each with
an optional "context" and "idempotency_key". Items without either get the
context of a read first (get_many), unless --blind. Failed items are listed on
stderr and the exit status is 1.`,
		Example: `  pairdb put greeting hello
  echo -n 'from stdin' | pairdb put note
  pairdb put cart apple --blind                          # a sibling next to what is stored
  pairdb put cart apple+pear --context AQEBEDVhN2Y...    # replaces what that get saw
  pairdb put order-42 paid --idempotency-key order-42    # safe to run again
  pairdb put greeting hello --json
  pairdb put --from items.jsonl`,
		Args: func(cmd *cobra.Command, args []string) error {
			if from != "" {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.RangeArgs(1, 2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if from != "" {
				if wf.context != "" || wf.idemKey != "" {
					return usageError("with --from, each line carries its own context and idempotency_key")
				}
				return withClient(cmd.Context(), g, func(_ context.Context, c *client.Client) error { return putFrom(cmd, c, from, &wf) })
			}
			return putOne(cmd, g, args, &wf)
		},
	}
	wf.register(cmd)
	cmd.Flags().StringVar(&from, "from", "", "write the keys of a JSON Lines file (- for stdin) in batches")
	return cmd
}

// putOne writes one key, its value from args or stdin.
func putOne(cmd *cobra.Command, g *globals, args []string, wf *writeFlags) error {
	var value []byte
	if len(args) == 2 {
		value = []byte(args[1])
	} else {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, maxStdinValue+1))
		if err != nil {
			return fmt.Errorf("read value from stdin: %w", err)
		}
		if len(b) > maxStdinValue {
			return usageError("the value on stdin is larger than %d bytes", maxStdinValue)
		}
		value = b
	}
	return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
		opts, err := wf.options(ctx, c, args[0], false)
		if err != nil {
			return err
		}
		resp, err := c.Put(ctx, args[0], value, opts...)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if wf.json {
			return printJSON(out, resp)
		}
		fmt.Fprintf(out, "ok: %d replica(s) acknowledged at %s%s\nvector_clock: %s\ncontext: %s\n",
			resp.GetReplicaCount(), resp.GetConsistency(), dupNote(resp.GetDuplicate()),
			formatClock(resp.GetVectorClock()), formatContext(resp.GetContext()))
		return nil
	})
}

func newDeleteCmd(g *globals) *cobra.Command {
	var wf writeFlags
	cmd := &cobra.Command{
		Use:   "delete KEY [KEY...]",
		Short: "Delete a key: every value a read sees now (or what --context saw)",
		Long: `Delete a key. By default delete first reads the key and writes a tombstone with
that read's context, so it removes every value the read saw. --context deletes
what an earlier get saw (a value written since stays, as a sibling).

A delete without any context deletes nothing: its tombstone is concurrent with
what is stored, and a get still returns every value. So --blind is refused for a
key that holds values, and --idempotency-key needs --context (the retry must send
the same context, and a fresh read after the first run would not).

Several keys are read and deleted in batches (get_many, delete_many), each
with its own read's context.`,
		Example: `  pairdb delete greeting
  pairdb delete k1 k2 k3
  pairdb delete cart --context AQEBEDVhN2Y...
  pairdb delete order-42 --context AQEBEDVhN2Y... --idempotency-key del-order-42
  pairdb delete greeting --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return withClient(cmd.Context(), g, func(_ context.Context, c *client.Client) error { return deleteMany(cmd, c, args, &wf) })
			}
			if wf.idemKey != "" && wf.context == "" && !wf.blind {
				return usageError("--idempotency-key pins the request, context included, so delete cannot read the context "+
					"first (a retry would read the tombstone's newer one): pass the context `pairdb get %s` prints as --context", args[0])
			}
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				opts, err := wf.options(ctx, c, args[0], true)
				if err != nil {
					return err
				}
				resp, err := c.Delete(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if wf.json {
					return printJSON(out, resp)
				}
				fmt.Fprintf(out, "deleted: %d replica(s) acknowledged at %s%s\n", resp.GetReplicaCount(), resp.GetConsistency(), dupNote(resp.GetDuplicate()))
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
		asJSON, raw bool
	)
	cmd := &cobra.Command{
		Use:   "get KEY [KEY...]",
		Short: "Read a key: its value on stdout, untouched; siblings (concurrent values) exit with status 3",
		Long: `Read a key. Its value goes to stdout exactly as stored (on a terminal a newline is
added after a value that does not end in one); the version vector
(vector_clock, for people) and the context to write with (context, what
--context takes) go to stderr.

Concurrent writes leave several values (siblings). Then get prints each one
followed by a newline, says how many on stderr and exits with status 3; --json
shows them exactly (base64) with their timestamps, and the next put (which reads
the context first) replaces them all. --raw prints the one value and never a
newline, and fails with status 3 on siblings without printing any.

A missing key fails with KEY_NOT_FOUND (status 1); with --json it prints the
answer, whose "found" is absent (false), and exits 0.

Several keys are read in batches (get_many) and printed one a line: the key, a
tab, the value (Go-quoted unless it is one line of text); a key with siblings
says how many. Missing keys are named on stderr and the exit status is 1.`,
		Example: `  pairdb get greeting
  pairdb get photo --raw > photo.jpg
  pairdb get cart --json | jq -r '.siblings[].value | @base64d'
  pairdb get k1 k2 k3`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				if raw {
					return usageError("--raw prints one value: give one key")
				}
				return withClient(cmd.Context(), g, func(_ context.Context, c *client.Client) error {
					return getMany(cmd, c, args, consistency, asJSON)
				})
			}
			return withClient(cmd.Context(), g, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Get(ctx, args[0], client.ReadConsistency(consistency))
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if asJSON {
					return printJSON(out, resp)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "vector_clock: %s\ncontext: %s\n",
					formatClock(resp.GetVectorClock()), formatContext(resp.GetContext()))
				return printValues(out, args[0], g.tenant, resp, raw, !raw && isTerminal(os.Stdout))
			})
		},
	}
	cmd.Flags().StringVarP(&consistency, "consistency", "c", "", "one, quorum or all (default: the tenant's)")
	addJSONFlag(cmd, &asJSON)
	cmd.Flags().BoolVar(&raw, "raw", false, "print the value's bytes only, never a newline; fail on siblings")
	cmd.MarkFlagsMutuallyExclusive("json", "raw")
	return cmd
}

// printValues writes what get found; see newGetCmd for the format.
func printValues(out io.Writer, key, tenant string, resp *pb.GetResponse, raw, terminal bool) error {
	if !resp.GetFound() {
		return status.Errorf(pb.ErrorCode_KEY_NOT_FOUND, "key %q not found in tenant %q", key, tenant)
	}
	sibs := resp.GetSiblings()
	if len(sibs) == 1 {
		return writeValue(out, sibs[0].GetValue(), terminal)
	}
	advice := fmt.Sprintf("`pairdb get %s --json` shows them exactly; `pairdb put %s VALUE` replaces them all", key, key)
	if raw {
		return &exitStatus{code: exitSiblings, msg: fmt.Sprintf("key %q has %d siblings (concurrent values), so --raw prints none; %s", key, len(sibs), advice)}
	}
	for _, s := range sibs {
		if err := writeValue(out, s.GetValue(), false); err != nil {
			return err
		}
		if _, err := out.Write([]byte("\n")); err != nil {
			return err
		}
	}
	return &exitStatus{code: exitSiblings, msg: fmt.Sprintf("key %q has %d siblings (concurrent values), above, one per line; %s", key, len(sibs), advice)}
}

// writeFlags are the flags of put and delete.
type writeFlags struct {
	consistency, context, idemKey string
	blind, json                   bool
}

func (w *writeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&w.consistency, "consistency", "c", "", "one, quorum or all (default: the tenant's)")
	f.StringVar(&w.context, "context", "", `the "context:" a get printed: write over what that get saw`)
	f.StringVar(&w.idemKey, "idempotency-key", "", "pin the request to this key: running it again is a duplicate, not a second write (default: a fresh random key)")
	f.BoolVar(&w.blind, "blind", false, "write without a context: concurrent with what is stored")
	addJSONFlag(cmd, &w.json)
	cmd.MarkFlagsMutuallyExclusive("context", "blind")
}

// options builds the write options. The context comes from --context; else
// from a read of the key at the write's consistency, unless the write is
// blind or pinned by an idempotency key (see the commands' help). A blind
// delete of a key that holds values is refused: it would delete nothing.
func (w *writeFlags) options(ctx context.Context, c *client.Client, key string, isDelete bool) ([]client.WriteOption, error) {
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
	case w.blind && isDelete:
		got, err := c.Get(ctx, key, client.ReadConsistency(w.consistency))
		if err != nil {
			return nil, err
		}
		if got.GetFound() {
			return nil, usageError("a delete without context is a tombstone concurrent with the %d value(s) of %q: "+
				"it deletes nothing it did not see, and a get would still return them; drop --blind (delete then "+
				"reads the context and removes what it read) or pass --context", len(got.GetSiblings()), key)
		}
	case w.blind || w.idemKey != "":
	default:
		// No wrapping: the read's error is the command's, in its own words
		// (TENANT_NOT_FOUND, UNAVAILABLE, ...).
		got, err := c.Get(ctx, key, client.ReadConsistency(w.consistency))
		if err != nil {
			return nil, err
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
		return nil, usageError("--context: not a context printed by get (%v)", err)
	}
	return tok, nil
}
