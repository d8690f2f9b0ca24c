// Command pairdb-healthcheck is the Docker HEALTHCHECK of the PairDB image.
// The runtime image is distroless (no shell, no curl), so the check is this
// small static binary: it GETs the ops server's /healthz and exits 0 on a
// 200, 1 otherwise. It lives in deploy/ rather than as a pairdb subcommand so
// the image's health check does not depend on the CLI's flags; Kubernetes
// ignores HEALTHCHECK and uses the probes in deploy/k8s instead.
//
// Usage: pairdb-healthcheck [URL] (default http://127.0.0.1:9090/healthz, the
// ops package's default port; PAIRDB_HEALTHCHECK_URL overrides it too).
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/pairdb/pairdb/ops"
)

// timeout stays below the Dockerfile's HEALTHCHECK --timeout.
const timeout = 2 * time.Second

func main() {
	url := "http://127.0.0.1:" + strconv.Itoa(ops.DefaultPort) + ops.PathHealthz
	if v := os.Getenv("PAIRDB_HEALTHCHECK_URL"); v != "" {
		url = v
	}
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	if err := check(url); err != nil {
		fmt.Fprintln(os.Stderr, "pairdb-healthcheck:", err)
		os.Exit(1)
	}
}

func check(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
