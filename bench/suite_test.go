package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/cluster"
)

func startDev(t *testing.T) (*cluster.Dev, *nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := cluster.StartDev(ctx, cluster.DevConfig{DataDir: t.TempDir(), Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(t, d.Close(ctx))
	})
	nc, err := nats.Connect(d.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return d, nc
}

func TestSuiteAgainstDevCluster(t *testing.T) {
	d, nc := startDev(t)
	dial := func(name string) (*nats.Conn, error) { return nats.Connect(d.ClientURL(), nats.Name(name)) }
	for _, tc := range []struct {
		workload    string
		idempotency bool
		baseline    bool
	}{
		{"f", true, true},
		{"d", false, false},
		{"a", true, false},
	} {
		t.Run(tc.workload, func(t *testing.T) {
			w, err := LookupWorkload(tc.workload)
			require.NoError(t, err)
			const records, ops, clients = 50, 200, 4
			var progress bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var base string
			if tc.baseline {
				// The transport once more with its parts on connections of
				// their own, as `pairdb bench transport` processes serve it.
				base = NewTransportBase()
				for i, role := range []string{RoleResponder, RoleReplica, RoleReplica, RoleReplica} {
					conn, err := dial("part")
					require.NoError(t, err)
					t.Cleanup(conn.Close)
					part, err := ServeTransportPart(conn, base, role, max(i-1, 0), 128, 5*time.Second)
					require.NoError(t, err)
					t.Cleanup(func() { require.NoError(t, part.Stop(context.Background())) })
				}
			}
			rep, err := RunSuite(ctx, nc, SuiteConfig{
				Phase: PhaseConfig{
					Workload: w, Records: records, ValueSize: 128, Keys: KeyFormat{Size: 16}, Concurrency: clients,
					Duration: 30 * time.Second, Ops: ops, Timeout: 5 * time.Second, Seed: 42,
					Progress: &progress, ProgressEvery: time.Millisecond,
				},
				PairDB:        PairDBOptions{Tenant: "default", Consistency: "quorum", Idempotency: tc.idempotency},
				Load:          true,
				Baseline:      tc.baseline,
				TransportBase: base,
				Dial:          dial,
			})
			require.NoError(t, err)

			names := []string{PhasePairDB + " load", PhasePairDB}
			if tc.baseline {
				names = append(names, PhaseTransport, PhaseTransportProcs, PhaseKV+" load", PhaseKV)
			}
			require.Len(t, rep.Phases, len(names))
			for i, p := range rep.Phases {
				require.Equal(t, names[i], p.Name)
				require.Zero(t, p.Errors, "%s: %s", p.Name, p.FirstError)
				if strings.HasSuffix(p.Name, " load") { // every record inserted once
					require.EqualValues(t, records, p.Ops, p.Name)
					ins, ok := p.Op(OpInsert)
					require.True(t, ok)
					require.EqualValues(t, records, ins.Count)
					continue
				}
				require.EqualValues(t, ops, p.Ops, p.Name) // the run stops at --ops, well before its duration
				var sum uint64
				for _, o := range p.PerOp {
					sum += o.Count
					require.Positive(t, o.P50Us, "%s %s", p.Name, o.Op)
					require.LessOrEqual(t, o.P50Us, o.P99Us)
					require.LessOrEqual(t, o.P99Us, o.MaxUs)
				}
				require.EqualValues(t, ops, sum)
				read, ok := p.Op(OpRead)
				require.True(t, ok)
				if p.Name != PhaseTransport && w.Name != "d" {
					require.Zero(t, read.NotFound, "%s: every loaded key is found", p.Name)
				}
			}
			if tc.baseline {
				// read and read-modify-write against each baseline.
				require.Len(t, rep.Ratios, 6)
				for _, r := range rep.Ratios {
					require.Positive(t, r.Throughput)
					require.Positive(t, r.P99)
				}
			}
			require.Contains(t, progress.String(), PhasePairDB+": ")

			var text, js bytes.Buffer
			require.NoError(t, rep.WriteText(&text))
			require.Contains(t, text.String(), "p99.9 ms")
			require.NoError(t, rep.WriteJSON(&js))
			var back Report
			require.NoError(t, json.Unmarshal(js.Bytes(), &back))
			require.Equal(t, rep.Config, back.Config)
			require.Len(t, back.Phases, len(names))
		})
	}
}

func TestServeTransportPartRefusesBadRoles(t *testing.T) {
	_, err := ServeTransportPart(nil, "b", "coordinator", 0, 128, time.Second)
	require.ErrorContains(t, err, `unknown transport role "coordinator"`)
	_, err = ServeTransportPart(nil, "b", RoleReplica, 3, 128, time.Second)
	require.ErrorContains(t, err, "replica index 3 out of range")
}

// With --batch, reads and updates go as get_many and put_many, and each
// counts as its keys.
func TestSuiteBatches(t *testing.T) {
	_, nc := startDev(t)
	w, err := LookupWorkload("a")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const records, ops, batch = 200, 400, 10
	rep, err := RunSuite(ctx, nc, SuiteConfig{
		Phase: PhaseConfig{
			Workload: w, Distribution: DistUniform, Records: records, ValueSize: 64, Keys: KeyFormat{Size: 16},
			Concurrency: 4, Duration: 30 * time.Second, Ops: ops, Timeout: 5 * time.Second, Seed: 7, Batch: batch,
		},
		PairDB: PairDBOptions{Tenant: "default", Consistency: "quorum", Idempotency: true},
		Load:   true,
	})
	require.NoError(t, err)
	run := rep.Phases[len(rep.Phases)-1]
	require.Equal(t, PhasePairDB, run.Name)
	require.Zero(t, run.Errors, run.FirstError)
	require.GreaterOrEqual(t, run.Ops, uint64(ops))
	for _, op := range []Op{OpRead, OpUpdate} {
		o, ok := run.Op(op)
		require.True(t, ok, op.String())
		require.Zero(t, o.Count%batch, "%s counts keys, %d a batch", op, batch)
		require.Zero(t, o.NotFound, "every loaded key is found")
	}

	bad := PhaseConfig{Workload: workloads[3], Records: 1, Concurrency: 1, Ops: 1, Timeout: time.Second, Batch: 10}
	require.ErrorContains(t, bad.Validate(), "batches are for reads and updates only")
}
