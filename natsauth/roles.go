// Package natsauth derives PairDB's NATS accounts, users and permissions
// from the subjects and JetStream names the code itself uses (bus.Subjects,
// the stream and bucket names of jetstream/...), so the permissions and the
// code cannot drift apart: `pairdb nats-accounts` renders them for an
// operator's node and tenant ids, deploy/nats/accounts.conf is its output
// for the example ids, and the tests run the whole cluster under it.
//
// Least privilege per role (README, "Who may do what"):
//
//   - coordinator: serves the client, admin and member APIs; calls storage
//     nodes; owns the control plane (creates and updates, never deletes,
//     its streams and buckets; writes the ring log, tenants, idempotency
//     records, hints and migration progress).
//   - storage node, one user per node id: its own endpoints, its own
//     heartbeat, its own hints, its own member requests; the peer calls
//     replication, transfers and anti-entropy need; reads the ring log.
//   - operator: the admin API, repair rounds, service discovery; no data.
//   - tenant, one account per tenant id: its own key-value subjects.
//
// Every user's replies arrive under an inbox prefix only it may subscribe
// to (bus.CoordinatorInbox, bus.NodeInbox, bus.OperatorInbox; a tenant's
// _INBOX is private to its account).
package natsauth

import (
	"github.com/nats-io/nats.go/micro"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/coordinator"
	"github.com/pairdb/pairdb/jetstream/hints"
	"github.com/pairdb/pairdb/jetstream/idempotency"
	"github.com/pairdb/pairdb/jetstream/ringlog"
	"github.com/pairdb/pairdb/jetstream/secrets"
	"github.com/pairdb/pairdb/jetstream/tenantkv"
	"github.com/pairdb/pairdb/storagenode"
)

// Rule is a group of subjects granted for one reason.
type Rule struct {
	Why      string
	Subjects []string
}

// Permissions are one user's: what it may publish (requests, JetStream API
// calls) and subscribe to, and whether it may answer the requests it
// receives (NATS allow_responses: a reply to the subject a request named,
// once).
type Permissions struct {
	Publish   []Rule
	Subscribe []Rule
	Responses bool
}

// Allowed lists the subjects of rules.
func Allowed(rules []Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.Subjects...)
	}
	return out
}

// Control-plane streams, as JetStream names them (a KV bucket B is the
// stream KV_B).
var (
	RingStream        = ringlog.DefaultStream
	MigrationsStream  = ringlog.MigrationsStream
	HintsStream       = hints.DefaultStream
	TenantsBucket     = tenantkv.DefaultBucket
	IdempotencyBucket = idempotency.DefaultBucket
	SecretsBucket     = secrets.Bucket
)

// KVStream is the stream behind KV bucket b.
func KVStream(b string) string { return "KV_" + b }

// kvSubjects are the subjects of bucket b's keys.
func kvSubjects(b string) string { return "$KV." + b + ".>" }

// JetStream API subjects ($JS.API.<what>.<stream>...).
const jsAPI = "$JS.API."

func streamAPI(op, stream string) string { return jsAPI + "STREAM." + op + "." + stream }

func consumerAPI(op, stream, rest string) string {
	return jsAPI + "CONSUMER." + op + "." + stream + "." + rest
}

func directGet(stream string) []string {
	return []string{jsAPI + "DIRECT.GET." + stream, jsAPI + "DIRECT.GET." + stream + ".>"}
}

// serviceDiscovery is what a micro service named name subscribes to:
// $SRV.<verb>, $SRV.<verb>.<name> and $SRV.<verb>.<name>.<id>. The verbs
// are spelled out: a subscription's own wildcards are matched against the
// allow list as if they were tokens, so an allowed "$SRV.*" would let a
// user subscribe to "$SRV.>" and answer discovery as any service.
func serviceDiscovery(name string) []string {
	var out []string
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		v := "$SRV." + verb.String()
		out = append(out, v, v+"."+name, v+"."+name+".*")
	}
	return out
}

// Coordinator is the coordinators' permissions.
func Coordinator(s bus.Subjects) Permissions {
	tenants, idem, secret := KVStream(TenantsBucket), KVStream(IdempotencyBucket), KVStream(SecretsBucket)
	all := []string{RingStream, MigrationsStream, HintsStream, tenants, idem, secret}
	var manage []string
	for _, st := range all {
		manage = append(manage, streamAPI("CREATE", st), streamAPI("UPDATE", st), streamAPI("INFO", st))
	}
	// Buckets are read by direct gets (by key, or by revision); the
	// progress stream by its last message per subject.
	read := []string{streamAPI("MSG.GET", MigrationsStream)}
	for _, st := range []string{tenants, idem, secret} {
		read = append(read, directGet(st)...)
	}
	// The ring log's follower: a pull consumer filtered to the log's
	// subject, deleted when it is reset. Bucket watches and key listings:
	// ordered push consumers into the coordinator's inbox, with flow
	// control, deleted when they stop. Hints are the nodes' to read: a
	// coordinator only appends them.
	consume := []string{
		consumerAPI("CREATE", RingStream, "*."+s.Events(bus.EventsRing)), consumerAPI("MSG.NEXT", RingStream, "*"),
		consumerAPI("INFO", RingStream, "*"), consumerAPI("DELETE", RingStream, "*"),
	}
	for _, st := range []string{tenants, idem} {
		consume = append(consume, consumerAPI("CREATE", st, ">"), consumerAPI("INFO", st, "*"),
			consumerAPI("DELETE", st, "*"), "$JS.FC."+st+".>")
	}
	return Permissions{
		Publish: []Rule{
			{"call storage nodes: mint a write (apply), replicate and repair it (merge), read; scan (a tenant's deletion asks whether it holds data)", []string{
				s.Node("*", bus.OpApply), s.Node("*", bus.OpMerge), s.Node("*", bus.OpRead), s.Node("*", bus.OpScan)}},
			{"tell the other coordinators that a tenant changed, and that it is alive (their share of the tenants' rate limits)", []string{
				s.Events(bus.EventsTenants), s.Events(bus.EventsCoordinators)}},
			{"append to the ring log, record migration progress, store hints (JetStream publishes)", []string{
				s.Events(bus.EventsRing), s.Events(bus.EventsMigrations) + ".>", s.Hints("*")}},
			{"write the tenants, idempotency and secrets buckets", []string{
				kvSubjects(TenantsBucket), kvSubjects(IdempotencyBucket), kvSubjects(SecretsBucket)}},
			{"create and update its streams and buckets at start (bucket creation reads the account's JetStream info); never delete one",
				append([]string{jsAPI + "INFO"}, manage...)},
			{"read migration progress and the buckets", read},
			{"follow the ring log, watch and list buckets", consume},
			{"remove a deleted tenant's idempotency records (a purge by subject)", []string{streamAPI("PURGE", idem)}},
		},
		Subscribe: []Rule{
			{"serve the key-value API of every tenant, the admin API and the storage nodes' member requests", []string{
				s.KV("*", "*"), s.Admin("*", "*"), s.Member("*", "*")}},
			{"follow the storage nodes' heartbeats, the tenant invalidations and the other coordinators' presence", []string{
				s.Heartbeat("*"), s.Events(bus.EventsTenants), s.Events(bus.EventsCoordinators)}},
			{"service discovery (nats micro ls)", serviceDiscovery(coordinator.ServiceName)},
			{"its replies", []string{bus.CoordinatorInbox + ".>"}},
		},
		Responses: true,
	}
}

// StorageNode is storage node id's permissions.
func StorageNode(s bus.Subjects, id string) Permissions {
	durable := hints.DurableName(id)
	return Permissions{
		Publish: []Rule{
			{"its own heartbeat", []string{s.Heartbeat(id)}},
			{"forward writes and anti-entropy repairs to peers (merge); pull ranges and compare digests", []string{
				s.Node("*", bus.OpMerge), s.Node("*", bus.OpScan), s.Node("*", bus.OpDigest), s.Node("*", bus.OpDigests)}},
			{"ask the coordinators to record its own registration, transfers, re-addition and progress", []string{
				s.Member(id, "*")}},
			{"follow the ring log: read only, through consumers filtered to the log's subject", []string{
				streamAPI("INFO", RingStream), consumerAPI("CREATE", RingStream, "*."+s.Events(bus.EventsRing)),
				consumerAPI("MSG.NEXT", RingStream, "*")}},
			{"drain its own hints: its durable consumer, filtered to its own subject", []string{
				streamAPI("INFO", HintsStream), consumerAPI("CREATE", HintsStream, durable+"."+s.Hints(id)),
				consumerAPI("INFO", HintsStream, durable), consumerAPI("MSG.NEXT", HintsStream, durable),
				"$JS.ACK." + HintsStream + "." + durable + ".>"}},
		},
		Subscribe: []Rule{
			{"its own endpoints", []string{s.Node(id, "*")}},
			{"its own heartbeat (the process's readiness check)", []string{s.Heartbeat(id)}},
			{"service discovery (nats micro ls)", serviceDiscovery(storagenode.ServiceName)},
			{"its replies", []string{bus.NodeInbox(id) + ".>"}},
		},
		Responses: true,
	}
}

// Operator is the operators' permissions: `pairdb tenant|node|migration|repair`.
func Operator(s bus.Subjects) Permissions {
	return Permissions{
		Publish: []Rule{
			{"the admin API: tenants, nodes, migrations", []string{s.Admin("*", "*")}},
			{"repair rounds on storage nodes (pairdb repair)", []string{s.Node("*", bus.OpRepair)}},
			{"service discovery (nats micro ls, info, stats)", []string{"$SRV.>"}},
		},
		Subscribe: []Rule{
			{"its replies", []string{bus.OperatorInbox + ".>"}},
		},
	}
}

// Tenant is tenant id's permissions, inside its own account.
func Tenant(s bus.Subjects, id string) Permissions {
	return Permissions{
		Publish: []Rule{
			{"its own keys: put, get, delete", []string{s.KV(id, "*")}},
		},
		Subscribe: []Rule{
			{"its replies: the account's inboxes are its own", []string{bus.DefaultInbox + ".>"}},
		},
	}
}
