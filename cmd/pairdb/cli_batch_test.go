package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Several keys at once: put --from a JSON Lines file, get and delete of
// several keys, each item answered on its own.
func (c *cliCluster) testBatches(t *testing.T) {
	file := filepath.Join(t.TempDir(), "items.jsonl")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join([]string{
		`{"key":"bt-a","value":"apple"}`,
		`{"key":"bt-b","value_base64":"AP8K"}`,
		``,
		`{"key":"bt-c","value":"cherry","idempotency_key":"bt-c-1"}`,
		`{"key":"","value":"no key"}`,
	}, "\n")), 0o600))
	r := c.run(t, "", nil, "put", "--from", file)
	require.Equal(t, exitError, r.code, "one item fails, so the command does: %s", r)
	require.Contains(t, r.stdout, "written: 3 of 4 keys (0 duplicates), 1 failed")
	require.Contains(t, r.stderr, "INVALID_ARGUMENT")

	// Written again: the item with an idempotency key is a duplicate; the
	// others read their context first and replace what they read.
	r = c.run(t, "", nil, "put", "--from", file)
	require.Contains(t, r.stdout, "written: 3 of 4 keys (1 duplicates), 1 failed")

	r = c.run(t, "", nil, "get", "bt-a", "bt-b", "bt-c", "bt-missing")
	require.Equal(t, exitError, r.code, r.String())
	require.Equal(t, "bt-a\tapple\nbt-b\t\"\\x00\\xff\\n\"\nbt-c\tcherry\n", r.stdout, "one value each: put --from replaced what it read")
	require.Contains(t, r.stderr, "bt-missing: not found")

	got := jsonOf(t, c.ok(t, "get", "bt-a", "bt-c", "--json"))
	require.Len(t, got["items"].([]any), 2)

	require.Contains(t, c.ok(t, "delete", "bt-a", "bt-b"), "deleted: 2 of 2 keys (0 duplicates), 0 failed")
	r = c.run(t, "", nil, "get", "bt-a", "bt-b", "bt-c")
	require.Equal(t, exitError, r.code, r.String())
	require.Equal(t, "bt-c\tcherry\n", r.stdout)

	c.fails(t, exitError, "INVALID_ARGUMENT", "get", "bt-a", "bt-c", "--raw")
	c.fails(t, exitError, "INVALID_ARGUMENT", "delete", "bt-a", "bt-c", "--blind")
}

// list walks every page: each live key once, a prefix filters, --json is
// one object a line.
func (c *cliCluster) testList(t *testing.T) {
	for i := range 30 {
		c.ok(t, "put", fmt.Sprintf("ls-%02d", i), fmt.Sprintf("v%d", i), "--blind")
	}
	out := c.ok(t, "list", "--prefix", "ls-", "--page-size", "7")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 30)
	sort.Strings(lines)
	require.Equal(t, "ls-00\tv0", lines[0])
	require.Equal(t, "ls-29\tv29", lines[29])

	keys := strings.Fields(c.ok(t, "list", "--prefix", "ls-1", "--keys-only"))
	sort.Strings(keys)
	require.Equal(t, []string{"ls-10", "ls-11", "ls-12", "ls-13", "ls-14", "ls-15", "ls-16", "ls-17", "ls-18", "ls-19"}, keys)

	out = c.ok(t, "list", "--prefix", "ls-0", "--json")
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 10)
	for _, l := range lines {
		item := jsonOf(t, l)
		require.True(t, strings.HasPrefix(item["key"].(string), "ls-0"))
		require.NotEmpty(t, item["context"])
	}
}
