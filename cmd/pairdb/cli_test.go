package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/ops"
)

// cliTimeout bounds one CLI command in the tests.
const cliTimeout = 60 * time.Second

// cliCluster is a `pairdb dev` process the CLI tests run commands against.
type cliCluster struct {
	bin, url, natsAddr, opsAddr, data string
	p                                 *processHandle
}

// startCLICluster builds the binary and starts `pairdb dev` on free ports in
// a temporary directory. The banner must only appear once the cluster is
// ready: /readyz is read once, right after it, and must answer 200.
func startCLICluster(t *testing.T) *cliCluster {
	t.Helper()
	c := &cliCluster{bin: buildBinary(t), data: t.TempDir(), natsAddr: freeAddr(t), opsAddr: freeAddr(t)}
	c.url = "nats://" + c.natsAddr
	c.p = startProcess(t, c.bin, "dev", "--listen", c.natsAddr, "--data", c.data, "--ops-addr", c.opsAddr, "--log-level", "warn")
	deadline := time.NewTimer(e2eReady)
	defer deadline.Stop()
	select {
	case <-c.p.up:
	case <-c.p.done:
		t.Fatalf("pairdb dev exited before it was up: %v", c.p.err)
	case <-deadline.C:
		t.Fatalf("pairdb dev was not up within %s", e2eReady)
	}
	resp, err := http.Get("http://" + c.opsAddr + ops.PathReadyz)
	require.NoError(t, err)
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "ready as soon as the banner says it is up: %s", body)
	return c
}

// result is what one command did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout: " + r.stdout + "\nstderr: " + r.stderr
}

// cliEnv is the test process's environment without PAIRDB_ variables (a
// developer's own settings must not change what the commands do), plus env.
func cliEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PAIRDB_") && !strings.HasPrefix(kv, "NATS_URL=") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// run runs the binary with args against the cluster; stdin feeds the
// command, env adds variables.
func (c *cliCluster) run(t *testing.T, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = cliEnv(append([]string{"PAIRDB_SERVER=" + c.url}, env...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("run pairdb %s: %v", strings.Join(args, " "), err)
	}
	require.NoError(t, ctx.Err(), "pairdb %s did not finish within %s", strings.Join(args, " "), cliTimeout)
	t.Logf("pairdb %s\n%s", strings.Join(args, " "), r)
	return r
}

// ok runs a command that must succeed and returns its stdout.
func (c *cliCluster) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := c.run(t, "", nil, args...)
	require.Equal(t, 0, r.code, "pairdb %s: %s", strings.Join(args, " "), r)
	return r.stdout
}

// fails runs a command that must fail with the given status and the one
// error line "pairdb: <code>: ..." on stderr, and returns that line.
func (c *cliCluster) fails(t *testing.T, status int, code string, args ...string) string {
	t.Helper()
	r := c.run(t, "", nil, args...)
	require.Equal(t, status, r.code, "pairdb %s: %s", strings.Join(args, " "), r)
	line := lastLine(r.stderr)
	require.True(t, strings.HasPrefix(line, "pairdb: "+code), "pairdb %s: want %q first, got %q", strings.Join(args, " "), code, line)
	return line
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// jsonOf decodes a command's --json output.
func jsonOf(t *testing.T, out string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &m), "not JSON: %s", out)
	return m
}

// TestCLI runs the binary's client commands against one `pairdb dev`, and
// `pairdb dev` itself where it meets another one.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a dev cluster")
	}
	c := startCLICluster(t)
	defer c.p.stop(t)
	t.Run("dev on a taken address", c.testTakenAddress)
	t.Run("dev on a used data directory", c.testUsedDataDir)
	t.Run("keys, values and siblings", c.testKeyValue)
	t.Run("idempotency keys", c.testIdempotencyKeys)
	t.Run("batches", c.testBatches)
	t.Run("list", c.testList)
	t.Run("errors", c.testErrors)
	t.Run("tenant settings", c.testTenantSettings)
	t.Run("json", c.testJSON)
	t.Run("nodes and migrations", c.testNodes)
	t.Run("micro stats", c.testMicroStats)
	t.Run("readme walkthrough", c.testReadmeWalkthrough)
}

// A second `pairdb dev` on the first one's NATS address fails at once and
// says which flag picks another.
func (c *cliCluster) testTakenAddress(t *testing.T) {
	r := c.run(t, "", nil, "dev", "--listen", c.natsAddr, "--data", t.TempDir(), "--ops-addr", "127.0.0.1:0")
	require.Equal(t, exitError, r.code, r.String())
	// Said by the check before the server starts; without it the server
	// waited out its readiness timeout and said only that.
	require.Contains(t, r.stderr, "NATS address "+c.natsAddr+" is already in use")
	require.NotContains(t, r.stderr, "did not become ready")
	require.Contains(t, r.stderr, "--listen")
}

// A second `pairdb dev` on the first one's data directory is refused before
// it starts anything, and names the process that holds the directory.
func (c *cliCluster) testUsedDataDir(t *testing.T) {
	r := c.run(t, "", nil, "dev", "--listen", freeAddr(t), "--data", c.data, "--ops-addr", "127.0.0.1:0")
	require.Equal(t, exitError, r.code, r.String())
	require.Contains(t, r.stderr, "another pairdb is using "+c.data+" (pid "+strconv.Itoa(c.p.cmd.Process.Pid)+")")
	require.NotContains(t, r.stderr, "resource temporarily unavailable")
	_, err := os.Stat(filepath.Join(c.data, "nats"))
	require.NoError(t, err, "the first cluster's data is still there")
}
