package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/bench"
)

// Sample is one measured run phase: one store, one workload, one client
// count, one repetition.
type Sample struct {
	Rep         int     `json:"rep"`
	Store       string  `json:"store"`
	Workload    string  `json:"workload"`
	Concurrency int     `json:"concurrency"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50Us       float64 `json:"p50_us"`
	P99Us       float64 `json:"p99_us"`
	Errors      uint64  `json:"errors"`
	// CPU is each process's CPU time per successful operation.
	CPU []ProcCPU `json:"cpu"`
	// IdleCores is the CPU the layout's other processes (the stores not
	// measured) used meanwhile, OtherCores that of processes outside the
	// layout, both in cores on average over the phase.
	IdleCores  float64 `json:"idle_layout_cores"`
	OtherCores float64 `json:"other_cores"`
	// Attempt is the run of the phase this sample is (a phase disturbed by
	// processes outside the layout may be run again).
	Attempt int                `json:"attempt"`
	Result  *bench.PhaseResult `json:"result"`
}

// ProcCPU is one process's CPU time per operation, in microseconds.
type ProcCPU struct {
	Role    string  `json:"role"`
	UsPerOp float64 `json:"us_per_op"`
}

// newSample takes the throughput and the latencies of the phase's main
// operation (put and get phases have one kind) from a bench result.
func newSample(rep int, store string, r *bench.PhaseResult, concurrency int, u usage) Sample {
	s := Sample{Rep: rep, Store: store, Workload: r.Workload, Concurrency: concurrency,
		OpsPerSec: r.OpsPerSec, Errors: r.Errors, CPU: u.perOp, IdleCores: u.idleCores, OtherCores: u.others, Result: r}
	var main bench.OpResult
	for _, o := range r.PerOp {
		if o.Count >= main.Count {
			main = o
		}
	}
	s.P50Us, s.P99Us = main.P50Us, main.P99Us
	return s
}

// Group is the summary of one workload at one client count.
type Group struct {
	Workload    string
	Concurrency int
	Rows        []Row
}

// Row is one store's medians over the repetitions. Throughput and P99 are
// the reference store's ops/s over this one's and its p99 over this one's,
// the median of the per-repetition ratios (a repetition runs every store
// within minutes, so its ratio drifts less than the absolute figures); 0
// where there is nothing to compare.
type Row struct {
	Store           string
	Reps            int
	OpsPerSec       float64
	OpsMin, OpsMax  float64
	P50Us, P99Us    float64
	Errors          uint64
	Throughput, P99 float64
	CPU             []ProcCPU
	CPUTotal        float64
	// IdleCores is the median of the samples', OtherCores the largest.
	IdleCores, OtherCores float64
}

// Summarize groups samples by workload and client count (in the order they
// were first measured) and stores (in the order given), with the ratios of
// ref to every other store.
func Summarize(samples []Sample, stores []string, ref string) []Group {
	type key struct {
		w string
		c int
	}
	var order []key
	by := map[key][]Sample{}
	for _, s := range samples {
		k := key{s.Workload, s.Concurrency}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], s)
	}
	groups := make([]Group, 0, len(order))
	for _, k := range order {
		g := Group{Workload: k.w, Concurrency: k.c}
		refs := bySampleRep(by[k], ref)
		for _, st := range stores {
			if row, ok := summarizeStore(by[k], st, ref, refs); ok {
				g.Rows = append(g.Rows, row)
			}
		}
		groups = append(groups, g)
	}
	return groups
}

func bySampleRep(samples []Sample, store string) map[int]Sample {
	out := map[int]Sample{}
	for _, s := range samples {
		if s.Store == store {
			out[s.Rep] = s
		}
	}
	return out
}

func summarizeStore(samples []Sample, store, ref string, refs map[int]Sample) (Row, bool) {
	var ops, p50, p99, thr, lat, total, idle []float64
	cpu := map[string][]float64{}
	var roles []string
	row := Row{Store: store}
	for _, s := range samples {
		if s.Store != store {
			continue
		}
		row.Reps++
		row.Errors += s.Errors
		ops, p50, p99 = append(ops, s.OpsPerSec), append(p50, s.P50Us), append(p99, s.P99Us)
		idle, row.OtherCores = append(idle, s.IdleCores), max(row.OtherCores, s.OtherCores)
		if r, ok := refs[s.Rep]; ok && store != ref && s.OpsPerSec > 0 && s.P99Us > 0 {
			thr, lat = append(thr, r.OpsPerSec/s.OpsPerSec), append(lat, r.P99Us/s.P99Us)
		}
		sum := 0.0
		for _, c := range s.CPU {
			if _, ok := cpu[c.Role]; !ok {
				roles = append(roles, c.Role)
			}
			cpu[c.Role] = append(cpu[c.Role], c.UsPerOp)
			sum += c.UsPerOp
		}
		total = append(total, sum)
	}
	if row.Reps == 0 {
		return row, false
	}
	row.OpsPerSec, row.OpsMin, row.OpsMax = median(ops), slices.Min(ops), slices.Max(ops)
	row.P50Us, row.P99Us = median(p50), median(p99)
	row.Throughput, row.P99 = median(thr), median(lat)
	for _, r := range roles {
		row.CPU = append(row.CPU, ProcCPU{Role: r, UsPerOp: median(cpu[r])})
	}
	row.CPUTotal, row.IdleCores = median(total), median(idle)
	return row, true
}

// median of xs (0 when empty); the mean of the middle two for an even count.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WriteSummary prints one table per group: each store's median ops/s (with
// the range over the repetitions), p50 and p99, the reference's ratios to
// it, its CPU time per operation and the CPU used beside it (by the idle
// stores, and the most by processes outside the layout in any
// repetition), then the groups as one Markdown table.
func WriteSummary(w io.Writer, groups []Group, ref string, labels map[string]string) error {
	var b strings.Builder
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s, %d clients (medians over the repetitions; ratios: median of each repetition's)\n", g.Workload, g.Concurrency)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "store\treps\tops/s\trange\tp50 ms\tp99 ms\terrors\t%s ÷ store ops/s\tp99 ÷ store's\tCPU µs/op\tidle layout cores\tothers' cores (max)\t\n", ref)
		for _, r := range g.Rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s–%s\t%.2f\t%.2f\t%d\t%s\t%s\t%.0f\t%.2f\t%.2f\t\n", label(labels, r.Store), r.Reps,
				count(r.OpsPerSec), count(r.OpsMin), count(r.OpsMax), r.P50Us/1e3, r.P99Us/1e3, r.Errors,
				ratio(r.Throughput), ratio(r.P99), r.CPUTotal, r.IdleCores, r.OtherCores)
		}
		if err := tw.Flush(); err != nil {
			return errors.Wrap(err, "format summary")
		}
		b.WriteString("CPU µs per operation by process:\n")
		for _, r := range g.Rows {
			fmt.Fprintf(&b, "  %-28s %s\n", label(labels, r.Store), cpuLine(r.CPU))
		}
	}
	b.WriteString("\n")
	writeMarkdown(&b, groups, ref, labels)
	_, err := io.WriteString(w, b.String())
	return errors.Wrap(err, "write summary")
}

// writeMarkdown is the summary as one README-ready table: a row per group,
// a column per store with ops/s and p99, then ref's ratio to each other store.
func writeMarkdown(b *strings.Builder, groups []Group, ref string, labels map[string]string) {
	var stores []string
	for _, g := range groups {
		for _, r := range g.Rows {
			if !slices.Contains(stores, r.Store) {
				stores = append(stores, r.Store)
			}
		}
	}
	b.WriteString("| workload | clients |")
	for _, s := range stores {
		fmt.Fprintf(b, " %s ops/s (p99 ms) |", label(labels, s))
	}
	for _, s := range stores {
		if s != ref {
			fmt.Fprintf(b, " %s ÷ %s |", ref, label(labels, s))
		}
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", 2*len(stores)-boolInt(slices.Contains(stores, ref))) + "\n")
	for _, g := range groups {
		fmt.Fprintf(b, "| %s | %d |", g.Workload, g.Concurrency)
		cells := map[string]Row{}
		for _, r := range g.Rows {
			cells[r.Store] = r
		}
		for _, s := range stores {
			if r, ok := cells[s]; ok {
				fmt.Fprintf(b, " %s (%.1f) |", count(r.OpsPerSec), r.P99Us/1e3)
			} else {
				b.WriteString(" |")
			}
		}
		for _, s := range stores {
			if s != ref {
				fmt.Fprintf(b, " %s |", ratio(cells[s].Throughput))
			}
		}
		b.WriteString("\n")
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func label(labels map[string]string, store string) string {
	if l, ok := labels[store]; ok {
		return l
	}
	return store
}

// count prints an ops/s figure: whole numbers below 10,000, then k with one
// decimal.
func count(x float64) string {
	if x < 10_000 {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1fk", x/1e3)
}

func ratio(x float64) string {
	if x == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

func cpuLine(cpu []ProcCPU) string {
	parts := make([]string, len(cpu))
	for i, c := range cpu {
		parts[i] = fmt.Sprintf("%s %.0f", c.Role, c.UsPerOp)
	}
	return strings.Join(parts, ", ")
}
