package config

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the settings table in ../README.md")

// TestREADMETableMatchesCode fails when the settings table in README.md is
// not the one the code renders: a setting added, renamed or given a new
// default must show up in the README. `go test ./config -run README -update`
// (or `go run ./cmd/pairdb config docs`) gives the new table.
func TestREADMETableMatchesCode(t *testing.T) {
	const path = "../README.md"
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	readme := string(data)
	begin := strings.Index(readme, TableBegin)
	end := strings.Index(readme, TableEnd)
	require.True(t, begin >= 0 && end > begin, "README.md must hold the settings table between %q and %q", TableBegin, TableEnd)
	begin += len(TableBegin) + 1
	want := Table()
	if *update {
		readme = readme[:begin] + want + readme[end:]
		require.NoError(t, os.WriteFile(path, []byte(readme), 0o644))
		return
	}
	require.Equal(t, want, readme[begin:end],
		"README.md's settings table is stale: run `go test ./config -run README -update`")
}
