package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

// walkStep is one line of the README's walkthrough and what it must do.
type walkStep struct {
	line   string
	code   int
	stdout func(t *testing.T, out string)
}

func equals(want string) func(*testing.T, string) {
	return func(t *testing.T, out string) { require.Equal(t, want, out) }
}

func contains(want string) func(*testing.T, string) {
	return func(t *testing.T, out string) { require.Contains(t, out, want) }
}

// walkthrough is the README's "Using it" block, line by line, with the
// outcome its comments promise.
var walkthrough = []walkStep{
	{line: "./pairdb put greeting hello", stdout: contains("ok: 2 replica(s) acknowledged at quorum")},
	{line: "./pairdb get greeting", stdout: equals("hello")},
	{line: "printf 'from stdin' | ./pairdb put note", stdout: contains("ok: 2 replica(s) acknowledged at quorum")},
	{line: "./pairdb put cart apple --blind", stdout: contains("ok:")},
	{line: "./pairdb put cart pear --blind", stdout: contains("ok:")},
	{line: "./pairdb get cart", code: exitSiblings, stdout: func(t *testing.T, out string) {
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		sort.Strings(lines)
		require.Equal(t, []string{"apple", "pear"}, lines)
	}},
	{line: "./pairdb put cart apple+pear", stdout: contains("ok:")},
	{line: "./pairdb get cart", stdout: equals("apple+pear")},
	{line: "./pairdb delete cart", stdout: contains("deleted: 2 replica(s) acknowledged at quorum")},
	{line: "./pairdb get cart", code: exitError, stdout: equals("")},
	{line: "./pairdb tenant create acme --replication-factor 2 --conflict-policy last_write_wins", stdout: contains("last_write_wins")},
	{line: "./pairdb --tenant acme put k v --consistency all", stdout: contains("ok: 2 replica(s) acknowledged at all")},
	{line: "./pairdb tenant list", stdout: contains("acme")},
}

// readmeWalkthrough returns the commands of the README's walkthrough: the
// first sh block of "## Using it", comments cut.
func readmeWalkthrough(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(data), "\n## Using it\n")
	require.True(t, ok, "README.md has no \"## Using it\" section")
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(section)
	require.NotNil(t, m, "no sh block in \"Using it\"")
	var cmds []string
	for _, l := range strings.Split(m[1], "\n") {
		if i := strings.Index(l, "  #"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// testReadmeWalkthrough runs the README's walkthrough as a newcomer would,
// with ./pairdb built and `pairdb dev` running (PAIRDB_SERVER stands in for
// the default address), and checks what its comments say.
func (c *cliCluster) testReadmeWalkthrough(t *testing.T) {
	want := make([]string, len(walkthrough))
	for i, s := range walkthrough {
		want[i] = s.line
	}
	require.Equal(t, want, readmeWalkthrough(t), "the README's walkthrough and this test's list differ: update both")

	dir := t.TempDir()
	require.NoError(t, os.Symlink(c.bin, filepath.Join(dir, "pairdb")))
	for _, s := range walkthrough {
		ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
		cmd := exec.CommandContext(ctx, "sh", "-c", s.line)
		cmd.Dir = dir
		cmd.Env = cliEnv("PAIRDB_SERVER=" + c.url)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else {
			require.NoError(t, err, s.line)
		}
		t.Logf("%s\nexit %d\nstdout: %s\nstderr: %s", s.line, code, stdout.String(), stderr.String())
		require.Equal(t, s.code, code, "%s: %s", s.line, stderr.String())
		s.stdout(t, stdout.String())
		if s.code == exitError {
			require.Equal(t, `pairdb: KEY_NOT_FOUND: key "cart" not found in tenant "default"`, lastLine(stderr.String()))
		}
	}
}
