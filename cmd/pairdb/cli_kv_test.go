package main

import (
	"encoding/base64"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// clockLine is the context get prints on stderr (what --context takes).
func clockLine(t *testing.T, stderr string) string {
	t.Helper()
	for _, l := range strings.Split(stderr, "\n") {
		if v, ok := strings.CutPrefix(l, "context: "); ok {
			return v
		}
	}
	t.Fatalf("no context line in %q", stderr)
	return ""
}

func (c *cliCluster) testKeyValue(t *testing.T) {
	out := c.ok(t, "put", "kv-greeting", "hello")
	require.Contains(t, out, "ok: 2 replica(s) acknowledged at quorum", "RF 3 at QUORUM answers at the second ack")

	r := c.run(t, "", nil, "get", "kv-greeting")
	require.Equal(t, 0, r.code, r.String())
	require.Equal(t, "hello", r.stdout, "the value untouched: no newline added when stdout is not a terminal")
	require.NotEmpty(t, clockLine(t, r.stderr))

	// Binary values come back byte for byte.
	binary := "\x00\xffline\n\r\n"
	r = c.run(t, binary, nil, "put", "kv-binary")
	require.Equal(t, 0, r.code, r.String())
	require.Equal(t, binary, c.ok(t, "get", "kv-binary"))
	require.Equal(t, binary, c.ok(t, "get", "kv-binary", "--raw"))

	// Two blind writes are concurrent: siblings.
	c.ok(t, "put", "kv-cart", "apple", "--blind")
	c.ok(t, "put", "kv-cart", "pear", "--blind")
	r = c.run(t, "", nil, "get", "kv-cart")
	require.Equal(t, exitSiblings, r.code, r.String())
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	sort.Strings(lines)
	require.Equal(t, []string{"apple", "pear"}, lines, "each value, then a newline")
	require.Contains(t, lastLine(r.stderr), `key "kv-cart" has 2 siblings`)
	r = c.run(t, "", nil, "get", "kv-cart", "--raw")
	require.Equal(t, exitSiblings, r.code, r.String())
	require.Empty(t, r.stdout, "--raw prints one value or none")
	got := jsonOf(t, c.ok(t, "get", "kv-cart", "--json"))
	sibs := got["siblings"].([]any)
	require.Len(t, sibs, 2)
	var values []string
	for _, s := range sibs {
		v, err := base64.StdEncoding.DecodeString(s.(map[string]any)["value"].(string))
		require.NoError(t, err)
		values = append(values, string(v))
	}
	sort.Strings(values)
	require.Equal(t, []string{"apple", "pear"}, values)

	// A put reads the context first: it replaces both.
	c.ok(t, "put", "kv-cart", "apple+pear")
	require.Equal(t, "apple+pear", c.ok(t, "get", "kv-cart"))

	// A delete without context would delete nothing: refused for a key
	// with a value, which stays.
	line := c.fails(t, exitError, "INVALID_ARGUMENT", "delete", "kv-cart", "--blind")
	require.Contains(t, line, "deletes nothing it did not see")
	require.Equal(t, "apple+pear", c.ok(t, "get", "kv-cart"))
	require.Contains(t, c.ok(t, "delete", "kv-cart"), "deleted: 2 replica(s) acknowledged at quorum")
	c.fails(t, exitError, `KEY_NOT_FOUND: key "kv-cart" not found in tenant "default"`, "get", "kv-cart")
	// On a key that holds nothing a blind delete is harmless and allowed.
	c.ok(t, "delete", "kv-cart", "--blind")

	// A delete with the context of an earlier read keeps what came after.
	c.ok(t, "put", "kv-later", "first")
	seen := clockLine(t, c.run(t, "", nil, "get", "kv-later").stderr)
	c.ok(t, "put", "kv-later", "second", "--blind")
	c.ok(t, "delete", "kv-later", "--context", seen)
	require.Equal(t, "second", c.ok(t, "get", "kv-later"))
}

// The same command with the same --idempotency-key, run again, is answered
// as a duplicate instead of failing with IDEMPOTENCY_KEY_CONFLICT.
func (c *cliCluster) testIdempotencyKeys(t *testing.T) {
	c.ok(t, "put", "idem-order", "created")
	first := c.ok(t, "put", "idem-order", "paid", "--idempotency-key", "order-42")
	require.NotContains(t, first, "duplicate")
	again := c.ok(t, "put", "idem-order", "paid", "--idempotency-key", "order-42")
	require.Contains(t, again, "(duplicate: the first response was returned)")
	require.Equal(t, strings.SplitN(first, "\n", 2)[1], strings.SplitN(again, "\n", 2)[1], "the same context as the first answer")
	c.fails(t, exitError, "IDEMPOTENCY_KEY_CONFLICT", "put", "idem-order", "refunded", "--idempotency-key", "order-42")

	// A keyed delete must carry its context, so that a retry sends the
	// same request.
	line := c.fails(t, exitError, "INVALID_ARGUMENT", "delete", "idem-order", "--idempotency-key", "del-42")
	require.Contains(t, line, "--context")
	ctx := clockLine(t, c.run(t, "", nil, "get", "idem-order").stderr)
	require.NotContains(t, c.ok(t, "delete", "idem-order", "--context", ctx, "--idempotency-key", "del-42"), "duplicate")
	require.Contains(t, c.ok(t, "delete", "idem-order", "--context", ctx, "--idempotency-key", "del-42"), "duplicate")
	c.fails(t, exitError, "KEY_NOT_FOUND", "get", "idem-order")
}

func (c *cliCluster) testErrors(t *testing.T) {
	// The read before a put fails in its own words, on one line.
	r := c.run(t, "", nil, "--tenant", "nosuch", "put", "k", "v")
	require.Equal(t, exitError, r.code, r.String())
	require.Equal(t, `pairdb: TENANT_NOT_FOUND: tenant "nosuch" does not exist`, strings.TrimSuffix(r.stderr, "\n"))

	line := c.fails(t, exitError, "INVALID_ARGUMENT", "get", "bad\xffkey")
	require.Contains(t, line, "valid UTF-8")

	// Unknown ids are NOT_FOUND errors, not empty successes or UNAVAILABLE.
	c.fails(t, exitError, "TENANT_NOT_FOUND", "repair", "--tenant", "nosuch")
	c.fails(t, exitError, "NODE_NOT_FOUND: node node-9 is not in the ring", "repair", "--node", "node-9")
	c.fails(t, exitError, "NODE_NOT_FOUND: node node-9 is not a NORMAL member", "node", "remove", "node-9")
	c.fails(t, exitError, "INVALID_ARGUMENT: name what to repair", "repair")

	// A misspelt variable is pointed out by client commands too.
	c.ok(t, "put", "err-k", "v")
	r = c.run(t, "", []string{"PAIRDB_TENNANT=acme"}, "get", "err-k")
	require.Equal(t, 0, r.code, r.String())
	require.Contains(t, r.stderr, "pairdb: warning: PAIRDB_TENNANT is not a PairDB setting")

	r = c.run(t, "", []string{"PAIRDB_SERVER=nats://127.0.0.1:1"}, "get", "k")
	require.Equal(t, exitError, r.code, r.String())
	require.True(t, strings.HasPrefix(r.stderr, "pairdb: UNAVAILABLE: connect to NATS at nats://127.0.0.1:1"), r.stderr)
}
