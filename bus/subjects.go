// Package bus is PairDB's NATS plumbing: subject names, the proto/JSON codec,
// typed errors, request helpers with deadlines and micro-service handlers.
package bus

import "strings"

// DefaultPrefix is the first token of every PairDB subject.
const DefaultPrefix = "pairdb"

// Subjects builds every subject PairDB uses (DESIGN.md §2). The zero value
// uses DefaultPrefix.
type Subjects struct {
	Prefix string
}

func (s Subjects) root() string {
	if s.Prefix == "" {
		return DefaultPrefix + ".v1"
	}
	return s.Prefix + ".v1"
}

// KV is a client operation subject: <prefix>.v1.kv.<tenant>.<op>.
func (s Subjects) KV(tenant, op string) string { return s.root() + ".kv." + tenant + "." + op }

// KVAny matches one client operation for every tenant.
func (s Subjects) KVAny(op string) string { return s.KV("*", op) }

// Admin is an admin subject: <prefix>.v1.admin.<group>.<op>.
func (s Subjects) Admin(group, op string) string { return s.root() + ".admin." + group + "." + op }

// Node is a storage-node subject: <prefix>.v1.node.<node>.<op>.
func (s Subjects) Node(node, op string) string { return s.root() + ".node." + node + "." + op }

// Heartbeat is where a node announces itself: <prefix>.v1.heartbeat.<node>.
func (s Subjects) Heartbeat(node string) string { return s.root() + ".heartbeat." + node }

// Events carries control-plane notifications (for example "tenants").
func (s Subjects) Events(kind string) string { return s.root() + ".events." + kind }

// TenantOf extracts the tenant token from a KV subject; ok is false when the
// subject is not <prefix>.v1.kv.<tenant>.<op>.
func (s Subjects) TenantOf(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, s.root()+".kv.")
	if !ok {
		return "", false
	}
	tenant, _, ok := strings.Cut(rest, ".")
	return tenant, ok && tenant != ""
}

// Client operations.
const (
	OpPut    = "put"
	OpGet    = "get"
	OpDelete = "delete"
)

// Storage-node operations.
const (
	OpApply = "apply"
	OpMerge = "merge"
	OpRead  = "read"
)

// Range transfer and anti-entropy operations of a storage node.
const (
	OpScan   = "scan"
	OpDigest = "digest"
)
