package tests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// scrape reads one series of a process's /metrics (0 when absent).
func scrape(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			require.NoError(t, err, line)
			return f
		}
	}
	return 0
}

// TestPausedNodeProcessMintsNothingLate is TestPausedMinterMintsNothingLate
// with a real process and a real pause: the storage node that would mint a
// write is stopped with SIGSTOP, the write's outcome is unknown, the key is
// deleted (siblings) or overwritten (last write wins) at QUORUM by the
// other two replicas, and when the node is continued (SIGCONT) the apply
// waiting in its socket is refused as past its deadline: the deleted key
// and the older value stay gone.
func TestPausedNodeProcessMintsNothingLate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	pc := startProcessCluster(t, cluster.CoordinatorConfig{ReplicaTimeout: 600 * time.Millisecond, MaxClockSkew: 100 * time.Millisecond},
		true, "sib:siblings", "lww:last_write_wins")
	nodes, nc, coord, ctx := pc.nodes, pc.nc, pc.coord, pc.ctx
	paused := nodes[0]
	st := coord.Ring.State()
	keyAt := func(tenant string) string {
		for i := 0; ; i++ {
			k := fmt.Sprint("paused-", i)
			if cur, _ := st.ReplicaSets(tenant, keyspace.Hash(tenant, k)); cur[0] == paused.id {
				return k
			}
		}
	}
	sib, lww := client.New(nc, client.WithTenant("sib"), client.WithRetries(0)), client.New(nc, client.WithTenant("lww"), client.WithRetries(0))
	sibKey, lwwKey := keyAt("sib"), keyAt("lww")
	for _, c := range []*client.Client{sib, lww} { // every node is up and serving
		require.Eventually(t, func() bool {
			_, err := c.Put(ctx, "warm-up", []byte("x"), client.Consistency("all"))
			return err == nil
		}, 20*time.Second, 50*time.Millisecond)
	}

	require.NoError(t, paused.cmd.Process.Signal(syscall.SIGSTOP))
	// Both at once: after the first times out, the coordinator asks node-1
	// last.
	late := make(chan error, 2)
	for _, w := range []struct {
		c   *client.Client
		key string
	}{{sib, sibKey}, {lww, lwwKey}} {
		go func() { _, err := w.c.Put(ctx, w.key, []byte("late"), client.Consistency("quorum")); late <- err }()
	}
	for range 2 {
		requireCode(t, <-late, pb.ErrorCode_OUTCOME_UNKNOWN)
	}

	got, err := sib.Get(ctx, sibKey, client.ReadConsistency("quorum"))
	require.NoError(t, err)
	require.False(t, got.GetFound())
	_, err = sib.Delete(ctx, sibKey, client.Consistency("quorum"), client.WithContext(got.GetContext()))
	require.NoError(t, err)
	_, err = lww.Put(ctx, lwwKey, []byte("winner"), client.Consistency("quorum"))
	require.NoError(t, err)

	require.NoError(t, paused.cmd.Process.Signal(syscall.SIGCONT))
	expiredSeries := fmt.Sprintf(`pairdb_node_request_errors_total{node=%q,op="apply",code="EXPIRED"}`, paused.id)
	require.Eventually(t, func() bool { return scrape(t, paused.ops, expiredSeries) >= 2 }, 30*time.Second, 20*time.Millisecond,
		"the continued node refuses both applies it held as past their deadline")
	h := &harness{t: t, nc: nc}
	for _, c := range []struct {
		tenant, key string
		want        []string
	}{{"sib", sibKey, nil}, {"lww", lwwKey, []string{"winner"}}} {
		cl := client.New(nc, client.WithTenant(c.tenant))
		got, err := cl.Get(ctx, c.key, client.ReadConsistency("all"))
		require.NoError(t, err)
		require.Equal(t, c.want, values(got), "%s/%s", c.tenant, c.key)
		for _, n := range nodes {
			var live []string
			// node-1 missed the overwrite while stopped: its hint brings it.
			require.Eventually(t, func() bool {
				o, _ := h.readNode(n.id, c.tenant, c.key)
				live = nil
				for _, s := range o.Live() {
					live = append(live, string(s.Value))
				}
				return slices.Equal(c.want, live)
			}, 30*time.Second, 20*time.Millisecond, "%s/%s on %s: %v", c.tenant, c.key, n.id, live)
		}
	}
}
