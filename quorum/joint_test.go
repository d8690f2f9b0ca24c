package quorum

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestJointTables runs every case in testdata/*.txt, the way etcd-io/raft
// tests its quorum package: each case is a command line naming the two
// replica sets, the level and the replies, then "----", then the expected
// outcome and what the level needs. Blank lines separate cases; "#" starts
// a comment.
//
//	joint cur=(a,b,c) next=(a,b,d) level=quorum acks=(a,b) fails=()
//	----
//	won
//	need 2 of 3 in the current and 2 of 3 in the next replica set
//
// next omitted or () is no change; acks and fails default to none.
func TestJointTables(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			for _, c := range readCases(t, file) {
				got := runJoint(t, c)
				require.Equal(t, c.want, got, "%s:%d: %s", file, c.line, c.cmd)
			}
		})
	}
}

func runJoint(t *testing.T, c tableCase) string {
	require.Equal(t, "joint", c.cmd, "line %d: unknown command", c.line)
	level, err := ParseLevel(c.args["level"])
	require.NoError(t, err, "line %d", c.line)
	j := Joint{Cur: list(c.args["cur"]), Next: list(c.args["next"])}
	acked, failed := set(c.args["acks"]), set(c.args["fails"])
	return fmt.Sprintf("%s\nneed %s", j.Outcome(level, acked, failed), j.Need(level))
}

// tableCase is one case of a table file.
type tableCase struct {
	line int
	cmd  string
	args map[string]string
	want string
}

// readCases parses a table file (see TestJointTables).
func readCases(t *testing.T, file string) []tableCase {
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	lines := strings.Split(string(data), "\n")
	var out []tableCase
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		c := tableCase{line: i + 1, cmd: fields[0], args: map[string]string{}}
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			c.args[k] = v
		}
		i++
		require.Less(t, i, len(lines), "%s:%d: no ---- after the command", file, c.line)
		require.Equal(t, "----", strings.TrimSpace(lines[i]), "%s:%d", file, i+1)
		var want []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, strings.TrimSpace(lines[i]))
		}
		c.want = strings.Join(want, "\n")
		out = append(out, c)
	}
	return out
}

// list reads "(a,b,c)"; "" and "()" are empty.
func list(v string) []string {
	v = strings.TrimSuffix(strings.TrimPrefix(v, "("), ")")
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func set(v string) map[string]bool {
	out := map[string]bool{}
	for _, n := range list(v) {
		out[n] = true
	}
	return out
}
