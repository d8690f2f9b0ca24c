package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// The batch forms of get, put and delete: several keys in one request
// (get_many, put_many, delete_many; the client splits lists over 1,000).

// getMany prints one line per key: KEY, a tab, and its value (quoted as Go
// quotes strings when it is not one line of text). A key with siblings
// says how many; a missing key goes to stderr. The exit status is 1 when
// any key is missing or failed, else 3 when any has siblings.
func getMany(cmd *cobra.Command, c *client.Client, keys []string, consistency string, asJSON bool) error {
	items, err := c.GetMany(cmd.Context(), keys, client.ReadConsistency(consistency))
	if err != nil {
		return err
	}
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if asJSON {
		return printJSON(out, &pb.GetManyResponse{Items: items})
	}
	var failed, conflicted int
	for _, it := range items {
		switch sibs := it.GetSiblings(); {
		case it.GetError() != nil:
			failed++
			fmt.Fprintf(errOut, "%s: %s\n", it.GetKey(), status.FromProto(it.GetError()))
		case !it.GetFound():
			failed++
			fmt.Fprintf(errOut, "%s: not found\n", it.GetKey())
		case len(sibs) > 1:
			conflicted++
			fmt.Fprintf(out, "%s\t(%d siblings: `pairdb get %s` shows them)\n", it.GetKey(), len(sibs), it.GetKey())
		default:
			fmt.Fprintf(out, "%s\t%s\n", it.GetKey(), textOrQuoted(sibs[0].GetValue()))
		}
	}
	switch {
	case failed > 0:
		return &exitStatus{code: 1, msg: fmt.Sprintf("%d of %d keys not read (above)", failed, len(items))}
	case conflicted > 0:
		return &exitStatus{code: exitSiblings, msg: fmt.Sprintf("%d of %d keys have siblings (concurrent values)", conflicted, len(items))}
	}
	return nil
}

// textOrQuoted is v as is when it is one line of text, else Go-quoted.
func textOrQuoted(v []byte) string {
	s := string(v)
	if utf8.ValidString(s) && strconv.CanBackquote(s) {
		return s
	}
	return strconv.Quote(s)
}

// putLine is one line of `pairdb put --from`'s JSON Lines input.
type putLine struct {
	Key            string  `json:"key"`
	Value          *string `json:"value"`
	ValueBase64    []byte  `json:"value_base64"`
	Context        []byte  `json:"context"`
	IdempotencyKey string  `json:"idempotency_key"`
}

// readPutLines reads JSON Lines of {key, value or value_base64, context,
// idempotency_key} from r.
func readPutLines(r io.Reader) ([]*pb.PutRequest, error) {
	var items []*pb.PutRequest
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 2*maxStdinValue)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l putLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return nil, usageError("line %d: %v (want {\"key\": ..., \"value\": ...} or \"value_base64\")", n, err)
		}
		if (l.Value == nil) == (l.ValueBase64 == nil) {
			return nil, usageError("line %d: give exactly one of value (text) and value_base64", n)
		}
		it := &pb.PutRequest{Key: l.Key, Value: l.ValueBase64, Context: l.Context, IdempotencyKey: l.IdempotencyKey}
		if l.Value != nil {
			it.Value = []byte(*l.Value)
		}
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, errors.Wrap(err, "read the items")
	}
	if len(items) == 0 {
		return nil, usageError("no items to put: the input has no lines")
	}
	return items, nil
}

// putFrom writes every item of a JSON Lines file ("-" is stdin). Items
// without a context or an idempotency key get the context of a read first,
// unless blind, as a single put does.
func putFrom(cmd *cobra.Command, c *client.Client, path string, wf *writeFlags) error {
	in := io.Reader(os.Stdin)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return errors.Wrap(err, "open the items")
		}
		defer f.Close()
		in = f
	}
	items, err := readPutLines(in)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	// An item whose key cannot be read for its context is not written (a
	// blind write would leave what it could not read as a sibling): it
	// fails with the read's error.
	failed := map[int]*pb.Error{}
	if !wf.blind {
		if failed, err = fillContexts(ctx, c, items, wf.consistency); err != nil {
			return err
		}
	}
	send := make([]*pb.PutRequest, 0, len(items))
	for i, it := range items {
		if failed[i] == nil {
			send = append(send, it)
		}
	}
	sent, err := c.PutMany(ctx, send, client.Consistency(wf.consistency))
	if err != nil {
		return err
	}
	answers := make([]*pb.PutResponse, len(items))
	for i, it := range items {
		if e := failed[i]; e != nil {
			answers[i] = &pb.PutResponse{Key: it.GetKey(), Error: e}
			continue
		}
		answers[i], sent = sent[0], sent[1:]
	}
	if wf.json {
		return printJSON(cmd.OutOrStdout(), &pb.PutManyResponse{Items: answers})
	}
	return reportWrites(cmd, "written", len(answers), func(i int) (string, *pb.Error, bool) {
		return answers[i].GetKey(), answers[i].GetError(), answers[i].GetDuplicate()
	})
}

// fillContexts reads the keys of the items that have neither a context nor
// an idempotency key, and gives each its read's context; the items whose
// read failed are returned with its error.
func fillContexts(ctx context.Context, c *client.Client, items []*pb.PutRequest, consistency string) (map[int]*pb.Error, error) {
	var idx []int
	var keys []string
	for i, it := range items {
		if len(it.GetContext()) == 0 && it.GetIdempotencyKey() == "" {
			idx, keys = append(idx, i), append(keys, it.GetKey())
		}
	}
	failed := map[int]*pb.Error{}
	if len(keys) == 0 {
		return failed, nil
	}
	got, err := c.GetMany(ctx, keys, client.ReadConsistency(consistency))
	if err != nil {
		return nil, err
	}
	for j, i := range idx {
		if e := got[j].GetError(); e != nil {
			failed[i] = e
			continue
		}
		items[i].Context = got[j].GetContext()
	}
	return failed, nil
}

// deleteMany deletes keys, each with the context a read of it returns.
func deleteMany(cmd *cobra.Command, c *client.Client, keys []string, wf *writeFlags) error {
	if wf.context != "" || wf.idemKey != "" || wf.blind {
		return usageError("with several keys, delete reads each key's context itself: --context, --blind and --idempotency-key take one key")
	}
	ctx := cmd.Context()
	got, err := c.GetMany(ctx, keys, client.ReadConsistency(wf.consistency))
	if err != nil {
		return err
	}
	items := make([]*pb.DeleteRequest, len(keys))
	for i, g := range got {
		if e := g.GetError(); e != nil {
			return errors.Wrapf(status.FromProto(e), "read key %q for its context", keys[i])
		}
		items[i] = &pb.DeleteRequest{Key: keys[i], Context: g.GetContext()}
	}
	answers, err := c.DeleteMany(ctx, items, client.Consistency(wf.consistency))
	if err != nil {
		return err
	}
	if wf.json {
		return printJSON(cmd.OutOrStdout(), &pb.DeleteManyResponse{Items: answers})
	}
	return reportWrites(cmd, "deleted", len(answers), func(i int) (string, *pb.Error, bool) {
		return answers[i].GetKey(), answers[i].GetError(), answers[i].GetDuplicate()
	})
}

// reportWrites prints each failed item on stderr and a count on stdout, and
// fails with status 1 when any item failed.
func reportWrites(cmd *cobra.Command, verb string, n int, item func(int) (key string, err *pb.Error, dup bool)) error {
	var failed, dups int
	for i := range n {
		key, e, dup := item(i)
		switch {
		case e != nil:
			failed++
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", key, status.FromProto(e))
		case dup:
			dups++
		}
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %d of %d keys (%d duplicates), %d failed\n", verb, n-failed, n, dups, failed)
	if failed > 0 {
		return &exitStatus{code: 1, msg: fmt.Sprintf("%d of %d keys failed (above)", failed, n)}
	}
	return nil
}
