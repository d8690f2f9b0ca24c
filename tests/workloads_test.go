package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/internal/faults"
	"github.com/pairdb/pairdb/internal/tcpproxy"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// seedFromEnv returns PAIRDB_SEED or a fresh seed, logged for replay.
func seedFromEnv(t *testing.T) uint64 {
	if s := os.Getenv("PAIRDB_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "PAIRDB_SEED")
		return seed
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (replay with PAIRDB_SEED=%d)", seed, seed)
	return seed
}

// checkDuration is PAIRDB_CHECK_DURATION (long runs: task check-long), else def.
func checkDuration(t *testing.T, def time.Duration) time.Duration {
	if s := os.Getenv("PAIRDB_CHECK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "PAIRDB_CHECK_DURATION")
		return d
	}
	return def
}

// outcomeOf classifies a client error: a verdict about the request is a
// failure; anything that may have happened after the write began (a
// timeout, a lost reply, a quorum not reached) is unknown.
func outcomeOf(err error) Outcome {
	switch status.CodeOf(err) {
	case pb.ErrorCode_ERROR_CODE_UNSPECIFIED:
		return OK
	case pb.ErrorCode_INVALID_ARGUMENT, pb.ErrorCode_TOO_MANY_SIBLINGS, pb.ErrorCode_VALUE_TOO_LARGE,
		pb.ErrorCode_IDEMPOTENCY_KEY_CONFLICT, pb.ErrorCode_TENANT_NOT_FOUND:
		return Fail
	}
	return Unknown
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func siblingValues(resp *pb.GetResponse) []string {
	var out []string
	for _, s := range resp.GetSiblings() {
		out = append(out, string(s.GetValue()))
	}
	return out
}

// TestGuaranteesUnderFaults runs seeded workloads against a four-node
// cluster while messages to storage nodes and coordinators are dropped,
// delayed, duplicated or lose their replies, and a nemesis stops and
// restarts storage nodes, pauses them past the replica timeout, makes their
// connections half-open, cuts a coordinator off NATS and restarts the NATS
// server; then heals and checks every claim in the README's guarantees
// table.
func TestGuaranteesUnderFaults(t *testing.T) {
	seed := seedFromEnv(t)
	dur := checkDuration(t, 12*time.Second)
	inj := faults.New(seed)
	proxies := map[string]*tcpproxy.Proxy{}
	cfg := cluster.DevConfig{Nodes: 4, Middleware: inj.Middleware,
		NodeURL: func(id string) string { return "nats://" + proxies[id].Addr() },
		// Pauses and cuts exceed the replica timeout in well under a second.
		Coordinator: cluster.CoordinatorConfig{ReplicaTimeout: 500 * time.Millisecond, MaxClockSkew: 100 * time.Millisecond},
	}
	// The server's port is known once it runs; the nodes start after it,
	// each through a proxy of its own.
	h := startClusterWithProxies(t, &cfg, proxies)
	ctx := ctxT(t)
	for _, tn := range []struct{ id, policy string }{{"sets", ""}, {"regs", ""}, {"dels", ""}, {"lww", "last_write_wins"}} {
		_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: tn.id, ReplicationFactor: 3, MaxSiblings: 1000, ConflictPolicy: tn.policy})
		require.NoError(t, err)
	}
	// A second coordinator behind a proxy the nemesis cuts; the first
	// keeps serving.
	coordProxy, via := h.proxied()
	cut, err := h.dev.StartCoordinatorVia(ctx, via)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.dev.StopCoordinator(context.Background(), cut) })

	hist := &History{}
	runCtx, stop := context.WithTimeout(context.Background(), dur)
	defer stop()

	inj.Set(
		// Replies of storage nodes lost after the request took effect: the
		// coordinator cannot tell them from lost requests.
		faults.Rule{Match: ".node.", Drop: 0.02, Duplicate: 0.03, LoseReply: 0.01, DelayP: 0.1, MaxDelay: 40 * time.Millisecond},
		// Coordinator replies that arrive after the client gave up: a lost
		// reply, retried by the client with the same idempotency key.
		faults.Rule{Match: ".kv.", Duplicate: 0.02, DelayP: 0.01, MaxDelay: 4 * time.Second},
	)
	var wg sync.WaitGroup
	for c := range 3 {
		wg.Go(func() { setUnionClient(runCtx, h, hist, c, fmt.Sprintf("set-%d", c%2)) })
		wg.Go(func() { registerClient(runCtx, h, hist, 10+c, fmt.Sprintf("reg-%d", c%2)) })
	}
	for c := range 2 {
		wg.Go(func() { lwwClient(runCtx, h, hist, 30+c, fmt.Sprintf("lww-%d", c)) })
	}
	wg.Go(func() { deleteClient(runCtx, h, hist, 20) })
	n := &nemesis{t: t, h: h, inj: inj, proxies: proxies, coordProxy: coordProxy, rng: rand.New(rand.NewPCG(seed, 7))}
	wg.Go(func() { n.run(runCtx) })
	wg.Wait()

	inj.Clear()
	v := &Verdict{}
	h.heal(hist)
	checkSetUnion(h, hist, v)
	checkRegisters(h, hist, v)
	checkDeletes(h, hist, v)
	checkLastWriteWins(h, hist, v)
	checkConvergence(h, hist, v)
	checkOneVersion(h, hist, v)
	t.Logf("%d operations, faults injected: %+v, nemesis: %+v", len(hist.Ops()), inj.Stats(), n.done)
	report(t, seed, hist, v)
}

// startClusterWithProxies starts a dev cluster, then restarts each storage
// node behind a proxy of its own (a proxy needs the server's address, known
// once it runs), and has every later start of a node go through its proxy
// (cfg.NodeURL, reading proxies).
func startClusterWithProxies(t *testing.T, cfg *cluster.DevConfig, proxies map[string]*tcpproxy.Proxy) *harness {
	t.Helper()
	nodeURL := cfg.NodeURL
	cfg.NodeURL = nil
	h := startClusterWith(t, *cfg)
	srv, err := url.Parse(h.dev.ClientURL())
	require.NoError(t, err)
	for _, id := range h.dev.NodeIDs() {
		proxies[id] = tcpproxy.Start(t, srv.Host)
		h.stopNode(id)
		require.NoError(t, h.dev.StartNodeVia(id, nodeURL(id)))
	}
	h.dev.SetNodeURL(nodeURL)
	// Stop the nodes before their proxies close (cleanups run last first).
	t.Cleanup(func() {
		for _, id := range h.dev.NodeIDs() {
			if h.dev.Node(id) != nil {
				_ = h.dev.StopNode(context.Background(), id)
			}
		}
	})
	return h
}

// nemesis injects one fault at a time, chosen by a seeded source, every
// 1.5 to 3 seconds: a storage node stopped and restarted, paused past the
// replica timeout (every request it gets is held, then handled late), or
// made half-open (what it sends is lost); a coordinator cut off NATS; the
// NATS server restarted.
type nemesis struct {
	t          *testing.T
	h          *harness
	inj        *faults.Injector
	proxies    map[string]*tcpproxy.Proxy
	coordProxy *tcpproxy.Proxy
	rng        *rand.Rand
	done       nemesisStats
}

type nemesisStats struct{ Restarts, Pauses, HalfOpen, Cuts, ServerRestarts int }

func (n *nemesis) run(ctx context.Context) {
	ids := n.h.dev.NodeIDs()
	for {
		if !n.sleep(ctx, time.Duration(1500+n.rng.IntN(1500))*time.Millisecond) {
			return
		}
		id := ids[n.rng.IntN(len(ids))]
		span := time.Duration(600+n.rng.IntN(900)) * time.Millisecond
		switch k := n.rng.IntN(10); {
		case k < 3:
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := n.h.dev.StopNode(sctx, id)
			cancel()
			if err != nil {
				continue
			}
			n.sleep(ctx, time.Duration(300+n.rng.IntN(700))*time.Millisecond)
			if err := n.h.dev.StartNode(id); err != nil {
				n.t.Errorf("restart %s: %v", id, err)
				return
			}
			n.done.Restarts++
		case k < 5:
			resume := make(chan struct{})
			remove := n.inj.Add(faults.Rule{Match: ".node." + id + ".", Hold: resume})
			n.sleep(ctx, span)
			remove()
			close(resume)
			n.done.Pauses++
		case k < 7:
			n.proxies[id].Mute()
			n.sleep(ctx, span)
			n.proxies[id].Unmute()
			n.done.HalfOpen++
		case k < 9:
			n.coordProxy.Cut()
			n.sleep(ctx, span)
			n.coordProxy.Heal()
			n.done.Cuts++
		default:
			if err := n.h.dev.RestartServer(); err != nil {
				n.t.Errorf("restart the NATS server: %v", err)
				return
			}
			n.done.ServerRestarts++
		}
	}
}

// sleep waits d or until ctx ends (false then); faults in progress are
// still undone by the caller.
func (n *nemesis) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func kvClient(h *harness, tenant string) *client.Client {
	return client.New(h.nc, client.WithTenant(tenant), client.WithTimeout(3*time.Second), client.WithRetries(2))
}

// setUnionClient adds unique elements to a set by read-merge-write.
func setUnionClient(ctx context.Context, h *harness, hist *History, id int, key string) {
	c := kvClient(h, "sets")
	for i := 0; ctx.Err() == nil; i++ {
		elem := fmt.Sprintf("c%d-%d", id, i)
		op := Op{Client: id, Kind: "add", Key: key, Value: elem, Start: time.Now()}
		got, err := c.Get(ctx, key, client.ReadConsistency("quorum"))
		if err != nil {
			op.Outcome, op.Error, op.End = Fail, "read: "+err.Error(), time.Now()
			hist.Add(op)
			continue
		}
		set := map[string]bool{elem: true}
		for _, v := range siblingValues(got) {
			for _, e := range strings.Split(v, ",") {
				if e != "" {
					set[e] = true
				}
			}
		}
		elems := make([]string, 0, len(set))
		for e := range set {
			elems = append(elems, e)
		}
		slices.Sort(elems)
		_, err = c.Put(ctx, key, []byte(strings.Join(elems, ",")), client.Consistency("quorum"), client.WithContext(got.GetContext()))
		op.Outcome, op.Error, op.End = outcomeOf(err), errText(err), time.Now()
		hist.Add(op)
	}
}

// registerClient writes unique values with the context of its own read, and
// records each read as well.
func registerClient(ctx context.Context, h *harness, hist *History, id int, key string) {
	c := kvClient(h, "regs")
	for i := 0; ctx.Err() == nil; i++ {
		start := time.Now()
		got, err := c.Get(ctx, key, client.ReadConsistency("quorum"))
		if err != nil {
			hist.Add(Op{Client: id, Kind: "read", Key: key, Outcome: outcomeOf(err), Error: err.Error(), Start: start, End: time.Now()})
			continue
		}
		seen := siblingValues(got)
		hist.Add(Op{Client: id, Kind: "read", Key: key, Seen: seen, Outcome: OK, Start: start, End: time.Now()})
		val := fmt.Sprintf("r%d-%d", id, i)
		op := Op{Client: id, Kind: "write", Key: key, Value: val, Seen: seen, Start: time.Now()}
		_, err = c.Put(ctx, key, []byte(val), client.Consistency("quorum"), client.WithContext(got.GetContext()))
		op.Outcome, op.Error, op.End = outcomeOf(err), errText(err), time.Now()
		hist.Add(op)
	}
}

// deleteClient writes a fresh key, deletes it with the write's context and
// never writes it again.
func deleteClient(ctx context.Context, h *harness, hist *History, id int) {
	c := kvClient(h, "dels")
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("del-%d", i)
		put, err := c.Put(ctx, key, []byte("doomed"), client.Consistency("quorum"))
		if err != nil {
			continue
		}
		op := Op{Client: id, Kind: "delete", Key: key, Start: time.Now()}
		_, err = c.Delete(ctx, key, client.Consistency("quorum"), client.WithContext(put.GetContext()))
		op.Outcome, op.Error, op.End = outcomeOf(err), errText(err), time.Now()
		hist.Add(op)
	}
}

// lwwClient overwrites a last-write-wins key with unique values, blind
// (last write wins needs no context).
func lwwClient(ctx context.Context, h *harness, hist *History, id int, key string) {
	c := kvClient(h, "lww")
	for i := 0; ctx.Err() == nil; i++ {
		val := fmt.Sprintf("l%d-%d", id, i)
		op := Op{Client: id, Kind: "lww-write", Key: key, Value: val, Start: time.Now()}
		_, err := c.Put(ctx, key, []byte(val), client.Consistency("quorum"))
		op.Outcome, op.Error, op.End = outcomeOf(err), errText(err), time.Now()
		hist.Add(op)
	}
}

// heal reads every touched key at ALL until it succeeds (read repair) and
// waits until every replica of every key holds the same object.
func (h *harness) heal(hist *History) {
	h.t.Helper()
	for _, k := range touchedKeys(hist) {
		c := client.New(h.nc, client.WithTenant(k.tenant))
		require.Eventually(h.t, func() bool {
			_, err := c.Get(ctxT(h.t), k.key, client.ReadConsistency("all"))
			return err == nil
		}, 30*time.Second, 20*time.Millisecond, "heal %s/%s", k.tenant, k.key)
	}
}

type tenantKey struct{ tenant, key string }

func touchedKeys(hist *History) []tenantKey {
	seen := map[tenantKey]bool{}
	var out []tenantKey
	for _, op := range hist.Ops() {
		tn := map[string]string{"add": "sets", "write": "regs", "read": "regs", "delete": "dels", "lww-write": "lww"}[op.Kind]
		k := tenantKey{tn, op.Key}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func (h *harness) finalValues(tenant, key string) ([]string, bool) {
	got, err := client.New(h.nc, client.WithTenant(tenant)).Get(ctxT(h.t), key, client.ReadConsistency("all"))
	require.NoError(h.t, err)
	return siblingValues(got), got.GetFound()
}

// checkSetUnion: the final set holds every acknowledged element.
func checkSetUnion(h *harness, hist *History, v *Verdict) {
	final := map[string]map[string]bool{}
	for _, op := range hist.Ops() {
		if op.Kind != "add" || op.Outcome != OK {
			continue
		}
		if final[op.Key] == nil {
			vals, _ := h.finalValues("sets", op.Key)
			final[op.Key] = map[string]bool{}
			for _, s := range vals {
				for _, e := range strings.Split(s, ",") {
					final[op.Key][e] = true
				}
			}
		}
		if !final[op.Key][op.Value] {
			v.Failf("set-union: acknowledged element %s of %s is missing", op.Value, op.Key)
		}
	}
}

// checkRegisters: every acknowledged value is in the final sibling set or
// superseded by a write that saw it; no value appears twice (retries have
// one effect); a read that started after an acknowledged write returned it
// or a successor. The last check looks, for each read, at the acknowledged
// writes of its key that finished in the two seconds before it started
// (and at least the latest one): older writes have been superseded or
// checked by earlier reads, and bounding the window keeps a long history
// linear rather than quadratic.
func checkRegisters(h *harness, hist *History, v *Verdict) {
	ops := hist.Ops()
	// successors[x] = values of writes whose context saw x.
	successors := map[string][]string{}
	ackedByKey := map[string][]Op{}
	for _, op := range ops {
		if op.Kind == "write" && op.Outcome != Fail {
			for _, s := range op.Seen {
				successors[s] = append(successors[s], op.Value)
			}
		}
		if op.Kind == "write" && op.Outcome == OK {
			ackedByKey[op.Key] = append(ackedByKey[op.Key], op)
		}
	}
	for _, ws := range ackedByKey {
		slices.SortFunc(ws, func(a, b Op) int { return a.End.Compare(b.End) })
	}
	// reaches reports whether x or a write that (transitively) saw x is in
	// seen: a search forward from x that stops at the first hit.
	reaches := func(x string, seen map[string]bool) bool {
		visited := map[string]bool{x: true}
		queue := []string{x}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			if seen[cur] {
				return true
			}
			for _, n := range successors[cur] {
				if !visited[n] {
					visited[n] = true
					queue = append(queue, n)
				}
			}
		}
		return false
	}
	for key, ws := range ackedByKey {
		vals, _ := h.finalValues("regs", key)
		counts := map[string]int{}
		for _, x := range vals {
			if counts[x]++; counts[x] == 2 {
				v.Failf("registers: value %s of %s is stored twice (a retry applied twice)", x, key)
			}
		}
		for _, w := range ws {
			if counts[w.Value] == 0 && len(successors[w.Value]) == 0 {
				v.Failf("registers: acknowledged %s of %s is neither in the final siblings nor superseded", w.Value, key)
			}
		}
	}
	const window = 2 * time.Second
	for _, r := range ops {
		if r.Kind != "read" || r.Outcome != OK {
			continue
		}
		ws := ackedByKey[r.Key]
		n, _ := slices.BinarySearchFunc(ws, r.Start, func(w Op, t time.Time) int { return w.End.Compare(t) })
		seen := map[string]bool{}
		for _, s := range r.Seen {
			seen[s] = true
		}
		for i := n - 1; i >= 0; i-- {
			w := ws[i]
			if i < n-1 && r.Start.Sub(w.End) > window {
				break
			}
			if !reaches(w.Value, seen) {
				v.Failf("registers: read of %s at %s saw %v, missing %s acknowledged at %s and all its successors",
					w.Key, r.Start.Format(time.StampMicro), r.Seen, w.Value, w.End.Format(time.StampMicro))
			}
		}
	}
}

// checkDeletes: a key whose delete was acknowledged never comes back.
func checkDeletes(h *harness, hist *History, v *Verdict) {
	for _, op := range hist.Ops() {
		if op.Kind != "delete" || op.Outcome != OK {
			continue
		}
		if vals, found := h.finalValues("dels", op.Key); found {
			v.Failf("deletes: %s came back as %v", op.Key, vals)
		}
	}
}

// checkConvergence: every replica of every touched key holds the same
// object once healing is done.
func checkConvergence(h *harness, hist *History, v *Verdict) {
	st := h.dev.Coordinators()[0].Ring.State()
	for _, k := range touchedKeys(hist) {
		cur, _ := st.ReplicaSets(k.tenant, keyspace.Hash(k.tenant, k.key))
		converged := waitFor(10*time.Second, 20*time.Millisecond, func() bool {
			objs := make([]dvv.Object, 0, len(cur))
			for _, n := range cur {
				o, _ := h.readNode(n, k.tenant, k.key)
				objs = append(objs, o)
			}
			for _, o := range objs[1:] {
				if !dvv.Equal(objs[0], o) {
					// Another read at ALL queues another repair.
					_, _ = client.New(h.nc, client.WithTenant(k.tenant)).Get(ctxT(h.t), k.key, client.ReadConsistency("all"))
					return false
				}
			}
			return true
		})
		if !converged {
			v.Failf("convergence: replicas %v of %s/%s differ", cur, k.tenant, k.key)
		}
	}
}

// lwwMargin is how much later than a write's answer another write must
// begin for last write wins to order them: timestamps are milliseconds,
// and two writes minted in the same one tie (the larger dot wins).
const lwwMargin = 5 * time.Millisecond

// checkLastWriteWins: the value a last-write-wins key ends with is never
// that of a write (acknowledged, or of unknown outcome) that had been
// answered before another write began and was acknowledged: an
// acknowledged overwrite never loses to an earlier write, however late the
// earlier one's messages arrive.
func checkLastWriteWins(h *harness, hist *History, v *Verdict) {
	byValue := map[string]Op{}
	acked := map[string][]Op{}
	for _, op := range hist.Ops() {
		if op.Kind != "lww-write" {
			continue
		}
		byValue[op.Value] = op
		if op.Outcome == OK {
			acked[op.Key] = append(acked[op.Key], op)
		}
	}
	for key, ws := range acked {
		vals, _ := h.finalValues("lww", key)
		if len(vals) != 1 {
			v.Failf("lww: %s ends with %d values %v, not one", key, len(vals), vals)
			continue
		}
		final, ok := byValue[vals[0]]
		if !ok || final.Outcome == Fail {
			v.Failf("lww: %s ends with %q, which no write that may have happened wrote", key, vals[0])
			continue
		}
		for _, w := range ws {
			if w.Start.Sub(final.End) > lwwMargin {
				v.Failf("lww: %s ends with %q (answered %s at %s), but %q began at %s and was acknowledged",
					key, final.Value, final.Outcome, final.End.Format(time.StampMicro), w.Value, w.Start.Format(time.StampMicro))
				break
			}
		}
	}
}

// checkOneVersion: no write was minted twice. Every keyed write's origin
// has one dot, across every storage node's origin records and every stored
// sibling of every touched key.
func checkOneVersion(h *harness, hist *History, v *Verdict) {
	keys := map[string][]string{}
	for _, k := range touchedKeys(hist) {
		keys[k.tenant] = append(keys[k.tenant], k.key)
	}
	for tenant, ks := range keys {
		dots := h.originDots(tenant, ks)
		for o, ds := range dots {
			if len(ds) > 1 {
				v.Failf("one version: a keyed write of tenant %s (origin %x) was minted %d times: %v", tenant, o, len(ds), ds)
			}
		}
	}
}

// waitFor polls cond every tick until it holds (true) or timeout passes
// (false); unlike require.Eventually it lets a checker record a violation.
func waitFor(timeout, tick time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-deadline.C:
			return cond()
		case <-t.C:
		}
	}
}
