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

// Events carries control-plane notifications and streams (EventsRing,
// EventsTenants, EventsMigrations).
func (s Subjects) Events(kind string) string { return s.root() + ".events." + kind }

// Hints is the subject of node's hints in the hints stream:
// <prefix>.v1.hints.<node>.
func (s Subjects) Hints(node string) string { return s.root() + ".hints." + node }

// Member is where storage node <node> asks the coordinators to record its
// own membership events (register, transfer done, re-add, progress):
// <prefix>.v1.member.<node>.<op>. The node id is a subject token so that
// NATS permissions can bind a node's credentials to its own id; the
// coordinators take the id from the subject, never from the body.
func (s Subjects) Member(node, op string) string { return s.root() + ".member." + node + "." + op }

// MemberOf extracts the node token from a Member subject; ok is false when
// the subject is not <prefix>.v1.member.<node>.<op>.
func (s Subjects) MemberOf(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, s.root()+".member.")
	if !ok {
		return "", false
	}
	node, op, ok := strings.Cut(rest, ".")
	return node, ok && node != "" && op != "" && !strings.Contains(op, ".")
}

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
	// Batches of up to 1,000 keys, one result per key.
	OpGetMany    = "get_many"
	OpPutMany    = "put_many"
	OpDeleteMany = "delete_many"
	// A tenant's keys, a page at a time.
	OpList = "list"
)

// Storage-node operations.
const (
	OpApply = "apply"
	OpMerge = "merge"
	OpRead  = "read"
)

// Range transfer and anti-entropy operations of a storage node, and the
// operator's repair rounds.
const (
	OpScan    = "scan"
	OpDigest  = "digest"
	OpDigests = "digests"
	OpRepair  = "repair"
)

// Membership requests of a storage node to the coordinators (Member).
const (
	OpRegister     = "register"
	OpTransferDone = "done"
	OpRefilled     = "refilled"
	OpProgress     = "progress"
)

// Event kinds (Events): the ring log stream's subject, the tenant cache
// invalidations, and the migration progress stream's subjects.
const (
	EventsRing       = "ring"
	EventsTenants    = "tenants"
	EventsMigrations = "migrations"
	// EventsCoordinators carries the coordinators' presence beats.
	EventsCoordinators = "coordinators"
)

// Inbox prefixes: every part receives its replies under a prefix of its own
// (nats.CustomInboxPrefix), which only its NATS user may subscribe to, so
// no user reads another's replies (they carry tenants' values). Tenants
// keep nats.go's default, _INBOX: each tenant has a NATS account of its
// own, whose inboxes no other account sees.
const (
	// CoordinatorInbox is the coordinators' inbox prefix; storage nodes
	// send the acks of forwarded writes only under it.
	CoordinatorInbox = "_INBOX_coordinator"
	// OperatorInbox is the admin commands' inbox prefix (tenant, node,
	// migration, repair).
	OperatorInbox = "_INBOX_operator"
	// DefaultInbox is nats.go's own prefix, the key-value commands'.
	DefaultInbox = "_INBOX"
)

// NodeInbox is storage node id's inbox prefix.
func NodeInbox(id string) string { return "_INBOX_node_" + id }
