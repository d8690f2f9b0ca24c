package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/ops"
)

// Bounds of the end-to-end test's waits.
const (
	e2eBuild = 3 * time.Minute
	e2eReady = 60 * time.Second
	// e2eExit is the default shutdown_timeout plus room for the runtime.
	e2eExit = 20 * time.Second
)

// TestDevShutdownOnSIGTERMKeepsData builds the binary, runs `pairdb dev`,
// writes through the client, sends SIGTERM and expects exit status 0 within
// the deadline; a restart on the same directory still has the value.
func TestDevShutdownOnSIGTERMKeepsData(t *testing.T) {
	bin := buildBinary(t)
	data := t.TempDir()
	natsAddr, opsAddr := freeAddr(t), freeAddr(t)
	args := []string{"dev", "--listen", natsAddr, "--data", data, "--ops-addr", opsAddr, "--log-format", "json"}

	p := startProcess(t, bin, args...)
	p.waitReady(t, opsAddr)
	nc, err := nats.Connect("nats://"+natsAddr, nats.Timeout(5*time.Second))
	require.NoError(t, err)
	c := client.New(nc, client.WithTimeout(5*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Put(ctx, "shutdown-test", []byte("survives"))
	require.NoError(t, err)
	metricsBody := httpGet(t, "http://"+opsAddr+ops.PathMetrics)
	require.Contains(t, metricsBody, "coordinator_request_duration_seconds_bucket", "request histograms on /metrics")
	nc.Close()

	p.stop(t)

	p = startProcess(t, bin, args...)
	p.waitReady(t, opsAddr)
	nc, err = nats.Connect("nats://"+natsAddr, nats.Timeout(5*time.Second))
	require.NoError(t, err)
	defer nc.Close()
	got, err := client.New(nc, client.WithTimeout(5*time.Second)).Get(ctx, "shutdown-test")
	require.NoError(t, err)
	require.True(t, got.GetFound())
	require.Equal(t, "survives", string(got.GetValue()))
	p.stop(t)
}

func buildBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the go tool builds the binary under test")
	bin := filepath.Join(t.TempDir(), "pairdb")
	ctx, cancel := context.WithTimeout(context.Background(), e2eBuild)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// processHandle is a running binary whose output goes to the test log.
type processHandle struct {
	cmd  *exec.Cmd
	up   chan struct{} // closed when stdout announced the cluster
	done chan struct{} // closed when the process exited; err is then set
	err  error
}

func startProcess(t *testing.T, bin string, args ...string) *processHandle {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "PAIRDB_CONFIG=") // no stray config file
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &processHandle{cmd: cmd, up: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		var once sync.Once
		logLines(t, "stdout", stdout, func(line string) {
			if strings.HasPrefix(line, "PairDB dev cluster is up") {
				once.Do(func() { close(p.up) })
			}
		})
	}()
	go func() {
		defer wg.Done()
		logLines(t, "stderr", stderr, nil)
	}()
	go func() {
		wg.Wait() // Wait closes the pipes: read them to the end first
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func logLines(t *testing.T, name string, r io.Reader, each func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t.Logf("%s: %s", name, sc.Text())
		if each != nil {
			each(sc.Text())
		}
	}
}

// waitReady waits for the startup banner, then for /readyz to answer 200
// (the storage nodes' first heartbeats may still be on their way).
func (p *processHandle) waitReady(t *testing.T, opsAddr string) {
	t.Helper()
	deadline := time.NewTimer(e2eReady)
	defer deadline.Stop()
	select {
	case <-p.up:
	case <-p.done:
		t.Fatalf("pairdb dev exited before it was up: %v", p.err)
	case <-deadline.C:
		t.Fatalf("pairdb dev was not up within %s", e2eReady)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		resp, err := http.Get("http://" + opsAddr + ops.PathReadyz)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status + ": " + string(body)
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("/readyz did not answer 200 within %s; last: %s", e2eReady, last)
		}
	}
}

// stop sends SIGTERM and expects exit status 0 within e2eExit.
func (p *processHandle) stop(t *testing.T) {
	t.Helper()
	began := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
		require.NoError(t, p.err, "exit status after SIGTERM")
		t.Logf("exited 0 %s after SIGTERM", time.Since(began).Round(time.Millisecond))
	case <-time.After(e2eExit):
		t.Fatalf("still running %s after SIGTERM", e2eExit)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}
