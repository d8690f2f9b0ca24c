package bench

import (
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/cockroachdb/errors"
)

// Op is one kind of operation a workload issues.
type Op int

// Operation kinds, as YCSB names them.
const (
	OpRead   Op = iota // get an existing record
	OpUpdate           // put over an existing record
	OpInsert           // put a new record
	OpRMW              // get, then put with the get's vector_clock
	numOps
)

var opNames = [numOps]string{"read", "update", "insert", "read-modify-write"}

func (o Op) String() string {
	if o < 0 || o >= numOps {
		return "unknown"
	}
	return opNames[o]
}

// Workload is an operation mix. Proportions sum to 1.
type Workload struct {
	Name        string
	Description string
	Read        float64
	Update      float64
	Insert      float64
	RMW         float64
	// Latest makes reads favour recently inserted records (workload D)
	// whatever the configured distribution.
	Latest bool
}

// Workloads are the YCSB core workloads this tool runs (E, short scans,
// has no PairDB counterpart) plus put-only and get-only.
var workloads = []Workload{
	{Name: "a", Description: "update heavy: 50% read, 50% update", Read: 0.5, Update: 0.5},
	{Name: "b", Description: "read mostly: 95% read, 5% update", Read: 0.95, Update: 0.05},
	{Name: "c", Description: "read only", Read: 1},
	{Name: "d", Description: "read latest: 95% read (skewed to recent inserts), 5% insert", Read: 0.95, Insert: 0.05, Latest: true},
	{Name: "f", Description: "read-modify-write: 50% read, 50% get then put with its vector_clock", Read: 0.5, RMW: 0.5},
	{Name: "put", Description: "put only: 100% update", Update: 1},
	{Name: "get", Description: "get only: 100% read", Read: 1},
}

// WorkloadNames lists the accepted names, for help text.
func WorkloadNames() []string {
	out := make([]string, len(workloads))
	for i, w := range workloads {
		out[i] = w.Name
	}
	return out
}

// LookupWorkload finds a workload by name (case-insensitive).
func LookupWorkload(name string) (Workload, error) {
	i := slices.IndexFunc(workloads, func(w Workload) bool { return strings.EqualFold(w.Name, name) })
	if i < 0 {
		return Workload{}, errors.Newf("unknown workload %q (want one of %s)", name, strings.Join(WorkloadNames(), ", "))
	}
	return workloads[i], nil
}

// Writes reports whether the workload issues any put.
func (w Workload) Writes() bool { return w.Update+w.Insert+w.RMW > 0 }

// Reads reports whether the workload issues any get.
func (w Workload) Reads() bool { return w.Read+w.RMW > 0 }

// Choose picks the next operation; u is uniform in [0, 1).
func (w Workload) Choose(u float64) Op {
	switch {
	case u < w.Read:
		return OpRead
	case u < w.Read+w.Update:
		return OpUpdate
	case u < w.Read+w.Update+w.Insert:
		return OpInsert
	case w.RMW > 0:
		return OpRMW
	}
	// Rounding left u above the sum: take the last kind in the mix.
	switch {
	case w.Insert > 0:
		return OpInsert
	case w.Update > 0:
		return OpUpdate
	}
	return OpRead
}

// Next draws an operation with r.
func (w Workload) Next(r *rand.Rand) Op { return w.Choose(r.Float64()) }
