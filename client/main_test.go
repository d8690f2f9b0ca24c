package client_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/cluster"
)

// TestMain runs the package's tests and its Example against an in-process
// dev cluster, which NATS_URL names (as a user's environment would).
func TestMain(m *testing.M) {
	os.Exit(runWithCluster(m))
}

func runWithCluster(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pairdb-client-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temporary directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := cluster.StartDev(ctx, cluster.DevConfig{DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the dev cluster:", err)
		return 1
	}
	defer func() {
		stop, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Close(stop); err != nil {
			fmt.Fprintln(os.Stderr, "stop the dev cluster:", err)
		}
	}()
	if err := os.Setenv("NATS_URL", d.ClientURL()); err != nil {
		fmt.Fprintln(os.Stderr, "NATS_URL:", err)
		return 1
	}
	return m.Run()
}

// TestReadmeShowsTheExample: the README's Go program is Example as a main
// package, so the snippet people copy is the one `go test` compiles and runs.
func TestReadmeShowsTheExample(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	text := string(src)
	start := strings.Index(text, "import (")
	end := strings.Index(text, "\t// Output:")
	require.True(t, start >= 0 && end > start, "example_test.go lost its import block or Output comment")
	body := text[start:end]
	// The doc comment is for godoc; the README says the same in prose.
	body = regexp.MustCompile(`(?s)// Example [^\n]*\n(//[^\n]*\n)*func Example\(\) \{`).ReplaceAllString(body, "func main() {")
	want := "package main\n\n" + body + "}\n"

	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)```go\n(package main\n.*?)```").FindStringSubmatch(string(readme))
	require.NotNil(t, m, "README.md has no ```go block with a main package")
	require.Equal(t, want, m[1], "README.md's Go program must be client/example_test.go's Example as package main")
}
