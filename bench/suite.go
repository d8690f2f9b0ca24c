package bench

import (
	"context"
	"fmt"
	"io"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
)

// SuiteConfig describes a whole `pairdb bench` run.
type SuiteConfig struct {
	Phase  PhaseConfig
	PairDB PairDBOptions
	// Load inserts Records into each store before its run phase.
	Load bool
	// Baseline also runs the workload against the transport ceiling and
	// JetStream KV on the same server.
	Baseline bool
	// Dial opens the baseline responder's and replicas' connections.
	Dial Dialer
	// TransportBase, when set, is the subject prefix of a transport
	// baseline whose responder and replicas run in processes of their own
	// (ServeTransportPart); with Baseline it is measured too, as
	// PhaseTransportProcs.
	TransportBase string
	// KVSync says whether the server fsyncs JetStream writes, for the report.
	KVSync string
	// Log, when set, receives a line as each phase starts.
	Log io.Writer
}

// Phase names in a report.
const (
	PhasePairDB         = "pairdb"
	PhaseTransport      = "baseline-transport"
	PhaseTransportProcs = "baseline-transport-procs"
	PhaseKV             = "baseline-jetstream-kv"
)

// RunSuite runs the workload against PairDB over nc and, with Baseline,
// against the two baselines on the same connection, one after the other
// with the same settings.
func RunSuite(ctx context.Context, nc *nats.Conn, cfg SuiteConfig) (*Report, error) {
	if err := cfg.Phase.Validate(); err != nil {
		return nil, err
	}
	if cfg.Baseline && cfg.Dial == nil {
		return nil, errors.New("baselines need a dialer for their own connections")
	}
	rep := &Report{Config: reportConfig(cfg)}
	if err := rep.runStore(ctx, cfg, PhasePairDB, NewPairDB(nc, cfg.PairDB), cfg.Load); err != nil {
		return rep, err
	}
	if !cfg.Baseline {
		return rep, nil
	}
	t, err := StartTransport(nc, cfg.Dial, cfg.Phase.ValueSize, cfg.Phase.Timeout)
	if err != nil {
		return rep, err
	}
	// The transport stores nothing: there is nothing to load.
	err = rep.runStore(ctx, cfg, PhaseTransport, t, false)
	if serr := t.Stop(context.WithoutCancel(ctx)); err == nil {
		err = serr
	}
	if err != nil {
		return rep, err
	}
	if cfg.TransportBase != "" {
		ext := ConnectTransport(nc, cfg.TransportBase, cfg.Phase.Timeout)
		if err := rep.runStore(ctx, cfg, PhaseTransportProcs, ext, false); err != nil {
			return rep, err
		}
	}
	kv, err := NewKV(ctx, nc)
	if err != nil {
		return rep, err
	}
	err = rep.runStore(ctx, cfg, PhaseKV, kv, cfg.Load)
	if derr := kv.Delete(context.WithoutCancel(ctx)); err == nil {
		err = derr
	}
	rep.computeRatios()
	return rep, err
}

func (r *Report) runStore(ctx context.Context, cfg SuiteConfig, name string, store Store, load bool) error {
	pc := cfg.Phase
	if load {
		r.logf(cfg.Log, "%s: loading %d records", name, pc.Records)
		res, err := Load(ctx, name+" load", store, pc)
		if err != nil {
			return err
		}
		r.Phases = append(r.Phases, res)
		if err := ctx.Err(); err != nil {
			return errors.Wrap(err, "bench interrupted")
		}
	}
	r.logf(cfg.Log, "%s: workload %s, %d clients", name, pc.Workload.Name, pc.Concurrency)
	res, err := Run(ctx, name, store, pc)
	if err != nil {
		return err
	}
	r.Phases = append(r.Phases, res)
	return errors.Wrap(ctx.Err(), "bench interrupted")
}

func (r *Report) logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
