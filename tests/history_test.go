package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Outcome of one operation in a history. Unknown (a timeout, a lost reply)
// is neither success nor failure: the operation may or may not have taken
// effect, and the checkers allow both.
type Outcome string

const (
	OK      Outcome = "ok"
	Fail    Outcome = "fail"
	Unknown Outcome = "unknown"
)

// Op is one client operation as the workload saw it.
type Op struct {
	Client  int       `json:"client"`
	Kind    string    `json:"kind"` // add, write, read, delete
	Key     string    `json:"key"`
	Value   string    `json:"value,omitempty"`
	Seen    []string  `json:"seen,omitempty"` // values the op's read returned (its context)
	Outcome Outcome   `json:"outcome"`
	Error   string    `json:"error,omitempty"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
}

// History records operations from many clients.
type History struct {
	mu  sync.Mutex
	ops []Op
}

func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Verdict collects checker violations.
type Verdict struct {
	Seed       uint64   `json:"seed"`
	Operations int      `json:"operations"`
	Violations []string `json:"violations"`
}

func (v *Verdict) Failf(format string, args ...any) {
	v.Violations = append(v.Violations, fmt.Sprintf(format, args...))
}

// report writes the history and the verdict to a file that outlives the
// test when a checker failed, and fails the test naming the seed.
func report(t *testing.T, seed uint64, h *History, v *Verdict) {
	t.Helper()
	v.Seed, v.Operations = seed, len(h.Ops())
	if len(v.Violations) == 0 {
		return
	}
	dir := os.Getenv("PAIRDB_HISTORY_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("pairdb-history-%s-%d.json", t.Name(), seed))
	data, _ := json.MarshalIndent(struct {
		Verdict *Verdict `json:"verdict"`
		History []Op     `json:"history"`
	}{v, h.Ops()}, "", " ")
	_ = os.WriteFile(path, data, 0o644)
	sort.Strings(v.Violations)
	shown := v.Violations
	if len(shown) > 20 {
		shown = shown[:20]
	}
	t.Fatalf("seed %d: %d violation(s); history and verdict in %s (rerun with PAIRDB_SEED=%d):\n%s",
		seed, len(v.Violations), path, seed, strings.Join(shown, "\n"))
}
