package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/cockroachdb/errors"
)

// Report is the outcome of a suite: every phase, and PairDB's ratio to
// each baseline per operation kind.
type Report struct {
	Config ReportConfig   `json:"config"`
	Phases []*PhaseResult `json:"phases"`
	Ratios []Ratio        `json:"ratios,omitempty"`
}

// ReportConfig echoes the settings a run used.
type ReportConfig struct {
	Workload     string `json:"workload"`
	Distribution string `json:"distribution"`
	Records      uint64 `json:"records"`
	KeySize      int    `json:"key_size"`
	ValueSize    int    `json:"value_size"`
	Concurrency  int    `json:"concurrency"`
	Duration     string `json:"duration"`
	Ops          uint64 `json:"ops,omitempty"`
	Tenant       string `json:"tenant"`
	Consistency  string `json:"consistency"`
	Idempotency  bool   `json:"idempotency"`
	Load         bool   `json:"load"`
	KVSync       string `json:"kv_fsync,omitempty"`
}

func reportConfig(cfg SuiteConfig) ReportConfig {
	consistency := cfg.PairDB.Consistency
	if consistency == "" {
		consistency = "tenant default"
	}
	return ReportConfig{
		Workload: cfg.Phase.Workload.Name, Distribution: string(cfg.Phase.Distribution), Records: cfg.Phase.Records,
		KeySize: cfg.Phase.Keys.Size, ValueSize: cfg.Phase.ValueSize, Concurrency: cfg.Phase.Concurrency,
		Duration: cfg.Phase.Duration.String(), Ops: cfg.Phase.Ops, Tenant: cfg.PairDB.Tenant,
		Consistency: consistency, Idempotency: cfg.PairDB.Idempotency, Load: cfg.Load, KVSync: cfg.KVSync,
	}
}

// Ratio compares PairDB with one baseline on one kind of operation:
// Throughput is PairDB's ops/s over the baseline's (higher is better), P99
// PairDB's p99 over the baseline's (lower is better).
type Ratio struct {
	Baseline   string  `json:"baseline"`
	Op         string  `json:"op"`
	Throughput float64 `json:"throughput"`
	P99        float64 `json:"p99"`
}

// Phase finds a phase by name.
func (r *Report) Phase(name string) (*PhaseResult, bool) {
	for _, p := range r.Phases {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

func (r *Report) computeRatios() {
	r.Ratios = nil
	db, ok := r.Phase(PhasePairDB)
	if !ok {
		return
	}
	for _, name := range []string{PhaseTransport, PhaseTransportProcs, PhaseKV} {
		base, ok := r.Phase(name)
		if !ok {
			continue
		}
		for _, o := range db.PerOp {
			b, ok := base.opByName(o.Op)
			if !ok || b.OpsPerSec == 0 || b.P99Us == 0 {
				continue
			}
			r.Ratios = append(r.Ratios, Ratio{Baseline: name, Op: o.Op, Throughput: o.OpsPerSec / b.OpsPerSec, P99: o.P99Us / b.P99Us})
		}
	}
}

func (r *PhaseResult) opByName(name string) (OpResult, bool) {
	for _, o := range r.PerOp {
		if o.Op == name {
			return o, true
		}
	}
	return OpResult{}, false
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return errors.Wrap(enc.Encode(r), "write JSON report")
}

// WriteText writes a human-readable summary.
func (r *Report) WriteText(w io.Writer) error {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "workload %s (%s), %d records, %d-byte keys, %d-byte values, %d clients, %s, tenant %s, consistency %s, idempotency keys %s\n",
		c.Workload, c.Distribution, c.Records, c.KeySize, c.ValueSize, c.Concurrency, c.Duration, c.Tenant, c.Consistency, onOff(c.Idempotency))
	if c.KVSync != "" {
		fmt.Fprintf(&b, "JetStream fsync: %s\n", c.KVSync)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\top\tops\tops/s\terrors\tnot found\tmean ms\tp50 ms\tp95 ms\tp99 ms\tp99.9 ms\tmax ms\t")
	for _, p := range r.Phases {
		for _, o := range p.PerOp {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", p.Name, o.Op, o.Count, o.OpsPerSec,
				o.Errors, o.NotFound, o.MeanUs/1e3, o.P50Us/1e3, o.P95Us/1e3, o.P99Us/1e3, o.P999Us/1e3, o.MaxUs/1e3)
		}
		if len(p.PerOp) > 1 {
			fmt.Fprintf(tw, "%s\tall\t%d\t%.0f\t%d\t\t\t\t\t\t\t\t\n", p.Name, p.Ops-p.Errors, p.OpsPerSec, p.Errors)
		}
	}
	if err := tw.Flush(); err != nil {
		return errors.Wrap(err, "format report")
	}
	for _, p := range r.Phases {
		if p.FirstError != "" {
			fmt.Fprintf(&b, "%s: first error: %s\n", p.Name, p.FirstError)
		}
	}
	if len(r.Ratios) > 0 {
		b.WriteString("\nPairDB relative to the baselines (throughput: higher is better; p99: lower is better)\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "baseline\top\tthroughput\tp99\t")
		for _, x := range r.Ratios {
			fmt.Fprintf(tw, "%s\t%s\t%.2f×\t%.2f×\t\n", x.Baseline, x.Op, x.Throughput, x.P99)
		}
		if err := tw.Flush(); err != nil {
			return errors.Wrap(err, "format ratios")
		}
	}
	_, err := io.WriteString(w, b.String())
	return errors.Wrap(err, "write report")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
