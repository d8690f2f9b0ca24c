package tests

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Requests leave nothing behind: after a burst of puts, gets (hits and
// misses) and deletes from concurrent clients, the process settles back to
// the goroutines it had before (idle limiter workers exit after a second;
// replies are collected through one mux, not per-request subscriptions).
func TestRequestsLeaveNoGoroutinesBehind(t *testing.T) {
	h := startCluster(t, 3)
	lc := h.c
	burst := func(clients, perClient int) {
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				for i := range perClient {
					key := fmt.Sprintf("k-%d-%d", c, i%20)
					ctx := ctxT(t)
					_, err := lc.Put(ctx, key, []byte("v"))
					require.NoError(t, err)
					_, err = lc.Get(ctx, key)
					require.NoError(t, err)
					miss, err := lc.Get(ctx, key+"-missing")
					require.NoError(t, err)
					require.False(t, miss.GetFound())
					if i%5 == 0 {
						_, err = lc.Delete(ctx, key)
						require.NoError(t, err)
					}
				}
			})
		}
		wg.Wait()
	}
	burst(4, 10) // starts whatever lives for the process's lifetime

	settled := func() int {
		// Stable for longer than a limiter worker idles.
		last, since := runtime.NumGoroutine(), time.Now()
		deadline := time.Now().Add(30 * time.Second)
		for time.Since(since) < 1500*time.Millisecond {
			require.True(t, time.Now().Before(deadline), "goroutine count never settled")
			time.Sleep(100 * time.Millisecond)
			if n := runtime.NumGoroutine(); n != last {
				last, since = n, time.Now()
			}
		}
		return last
	}
	before := settled()
	burst(16, 60)
	// Background work (heartbeats, anti-entropy, hint consumers) comes and
	// goes; a leak grows with the ~3,000 requests just made.
	const slack = 8
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+slack }, 20*time.Second, 100*time.Millisecond,
		"goroutines: %d before the burst, %d after; stacks:\n%s", before, runtime.NumGoroutine(), stacks())
}

func stacks() string {
	buf := make([]byte, 1<<20)
	s := string(buf[:runtime.Stack(buf, true)])
	if len(s) > 20000 {
		s = s[:20000] + "\n…"
	}
	return strings.TrimSpace(s)
}
