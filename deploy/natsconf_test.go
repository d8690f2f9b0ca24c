package deploy

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// The NATS configuration is checked with nats-server's own parser
// (server.ProcessConfigFile): variables, includes, accounts, imports and
// exports are resolved exactly as a real server resolves them, so a config
// that parses here starts there. A regex over the text could not tell a
// permission inside a user from one in a comment.

var natsPasswords = map[string]string{
	"NATS_SYS_PASSWORD":           "sys-pw",
	"PAIRDB_COORDINATOR_PASSWORD": "coord-pw",
	"PAIRDB_NODE_PASSWORD":        "node-pw",
	"PAIRDB_OPERATOR_PASSWORD":    "op-pw",
	"PAIRDB_TENANT_ACME_PASSWORD": "acme-pw",
}

func loadNATSConf(t *testing.T) *server.Options {
	t.Helper()
	for k, v := range natsPasswords {
		t.Setenv(k, v)
	}
	t.Setenv("NATS_SERVER_NAME", "nats-1")
	t.Setenv("NATS_ROUTE_1", "nats-route://nats-1:6222")
	t.Setenv("NATS_ROUTE_2", "nats-route://nats-2:6222")
	t.Setenv("NATS_ROUTE_3", "nats-route://nats-3:6222")
	opts, err := server.ProcessConfigFile(filepath.Join("nats", "nats-server.conf"))
	require.NoError(t, err)
	return opts
}

func natsUser(t *testing.T, opts *server.Options, name string) *server.User {
	t.Helper()
	for _, u := range opts.Users {
		if u.Username == name {
			return u
		}
	}
	require.Failf(t, "missing NATS user", "no user %q in nats-server.conf", name)
	return nil
}

// subjectMatches reports whether subject matches pattern (NATS wildcards:
// * one token, > one or more trailing tokens).
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func allowed(sp *server.SubjectPermission, subject string) bool {
	if sp == nil {
		return true // no permission block: everything
	}
	ok := len(sp.Allow) == 0
	for _, a := range sp.Allow {
		ok = ok || subjectMatches(a, subject)
	}
	for _, d := range sp.Deny {
		ok = ok && !subjectMatches(d, subject)
	}
	return ok
}

func requirePerms(t *testing.T, u *server.User, op string, want bool, subjects ...string) {
	t.Helper()
	require.NotNil(t, u.Permissions, "user %s has no permissions: it may do anything", u.Username)
	sp := u.Permissions.Publish
	if op == "sub" {
		sp = u.Permissions.Subscribe
	}
	for _, s := range subjects {
		require.Equal(t, want, allowed(sp, s), "user %s %s %s", u.Username, op, s)
	}
}

func TestNATSServerConf(t *testing.T) {
	m := load(t)
	opts := loadNATSConf(t)

	require.True(t, opts.JetStream)
	require.True(t, opts.SyncAlways, "JetStream must fsync every write (sync_interval: always)")
	require.Equal(t, 4222, opts.Port)
	require.Equal(t, "pairdb", opts.Cluster.Name)
	require.Len(t, opts.Routes, 3)
	require.Equal(t, int32(8<<20), opts.MaxPayload)
	require.Equal(t, "SYS", opts.SystemAccount)

	coord := natsUser(t, opts, "coordinator")
	require.Equal(t, "PAIRDB", coord.Account.Name)
	requirePerms(t, coord, "sub", true, "pairdb.v1.kv.acme.put", "pairdb.v1.kv.other.get", "pairdb.v1.admin.tenants.create",
		"pairdb.v1.heartbeat.pairdb-storage-0", "pairdb.v1.events.tenants", "$SRV.PING", "_INBOX.abc.1")
	requirePerms(t, coord, "pub", true, "pairdb.v1.node.pairdb-storage-2.apply", "pairdb.v1.events.tenants",
		"$JS.API.STREAM.INFO.KV_pairdb_idempotency", "$KV.pairdb_idempotency.abc", "$KV.pairdb_tenants.acme")
	requirePerms(t, coord, "pub", false, "pairdb.v1.kv.acme.put", "pairdb.v1.heartbeat.pairdb-storage-0")
	require.NotNil(t, coord.Permissions.Response, "coordinators answer requests: allow_responses")

	// One user per storage node, confined to its own subjects.
	ids := storageNodeIDs(t, m)
	for i, id := range ids {
		u := natsUser(t, opts, id)
		other := ids[(i+1)%len(ids)]
		require.Equal(t, "PAIRDB", u.Account.Name)
		requirePerms(t, u, "sub", true, "pairdb.v1.node."+id+".apply", "pairdb.v1.node."+id+".merge", "pairdb.v1.node."+id+".read", "$SRV.PING")
		requirePerms(t, u, "sub", false, "pairdb.v1.node."+other+".apply", "pairdb.v1.kv.acme.put", "pairdb.v1.admin.tenants.create")
		requirePerms(t, u, "pub", true, "pairdb.v1.heartbeat."+id,
			// Transfers pull from other nodes; re-add after a wiped disk.
			"pairdb.v1.node."+other+".scan", "pairdb.v1.node."+other+".digest", "pairdb.v1.admin.nodes.add",
			// The ring log and migration progress streams.
			"pairdb.v1.events.ring", "pairdb.v1.events.migrations.m1.node-1",
			"$JS.API.STREAM.INFO.PAIRDB_RING", "$JS.API.CONSUMER.CREATE.PAIRDB_RING.c.pairdb.v1.events.ring",
			"$JS.API.DIRECT.GET.PAIRDB_MIGRATIONS.pairdb.v1.events.migrations.m1.node-1")
		requirePerms(t, u, "pub", false, "pairdb.v1.heartbeat."+other,
			"pairdb.v1.node."+other+".apply", "pairdb.v1.node."+other+".merge", "pairdb.v1.node."+other+".read",
			"pairdb.v1.kv.acme.put", "pairdb.v1.admin.tenants.create", "pairdb.v1.events.tenants",
			// Not the tenant and idempotency buckets.
			"$KV.pairdb_tenants.acme", "$KV.pairdb_idempotency.x",
			"$JS.API.STREAM.DELETE.KV_pairdb_idempotency", "$JS.API.STREAM.PURGE.KV_pairdb_tenants",
			"$JS.API.STREAM.MSG.GET.KV_pairdb_tenants", "$JS.API.DIRECT.GET.KV_pairdb_idempotency.$KV.pairdb_idempotency.x",
			"$JS.API.CONSUMER.CREATE.KV_pairdb_tenants.c.$KV.pairdb_tenants.>", "$JS.API.CONSUMER.MSG.NEXT.KV_pairdb_tenants.c")
		require.NotNil(t, u.Permissions.Response, "storage nodes answer requests: allow_responses")
	}

	op := natsUser(t, opts, "operator")
	requirePerms(t, op, "pub", true, "pairdb.v1.admin.tenants.create", "$SRV.INFO")
	requirePerms(t, op, "pub", false, "pairdb.v1.kv.acme.put", "pairdb.v1.node.pairdb-storage-0.apply", "$JS.API.STREAM.LIST")

	// A tenant lives in its own account, sees only its own service.
	acme := natsUser(t, opts, "tenant-acme")
	require.Equal(t, "TENANT_ACME", acme.Account.Name)
	requirePerms(t, acme, "pub", true, "pairdb.v1.kv.acme.put", "pairdb.v1.kv.acme.get", "pairdb.v1.kv.acme.delete")
	requirePerms(t, acme, "pub", false, "pairdb.v1.kv.other.put", "pairdb.v1.admin.tenants.create",
		"pairdb.v1.node.pairdb-storage-0.apply", "$JS.API.STREAM.LIST", "$SRV.PING")
	requirePerms(t, acme, "sub", true, "_INBOX.abc")
	requirePerms(t, acme, "sub", false, "pairdb.v1.kv.other.put", "pairdb.v1.kv.acme.put")

	for _, a := range opts.Accounts {
		if a.Name != "PAIRDB" {
			require.False(t, a.JetStreamEnabled(), "account %s must not have JetStream: the control plane is PAIRDB's", a.Name)
		}
	}
}

// TestNATSConfEnforced starts a real server from nats-server.conf (ports and
// cluster replaced for the test) and checks the accounts work end to end: a
// tenant's request crosses its service import to a coordinator and the reply
// comes back; another tenant's subject and node subjects are refused.
func TestNATSConfEnforced(t *testing.T) {
	opts := loadNATSConf(t)
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPPort = 0
	opts.Cluster = server.ClusterOpts{}
	opts.Routes = nil
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	require.True(t, s.ReadyForConnections(10*time.Second))

	violations := make(chan error, 16)
	connect := func(user, pw string) *nats.Conn {
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, pw),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
		require.NoError(t, err, "connect as %s", user)
		t.Cleanup(nc.Close)
		return nc
	}
	coord := connect("coordinator", natsPasswords["PAIRDB_COORDINATOR_PASSWORD"])
	_, err = coord.QueueSubscribe("pairdb.v1.kv.*.*", "pairdb-coordinator", func(m *nats.Msg) {
		_ = m.Respond([]byte("served " + m.Subject))
	})
	require.NoError(t, err)
	require.NoError(t, coord.FlushTimeout(5*time.Second))

	acme := connect("tenant-acme", natsPasswords["PAIRDB_TENANT_ACME_PASSWORD"])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := acme.RequestWithContext(ctx, "pairdb.v1.kv.acme.put", []byte("x"))
	require.NoError(t, err, "a tenant reaches the coordinators through its service import")
	require.Equal(t, "served pairdb.v1.kv.acme.put", string(reply.Data))

	// Another tenant's subject: refused by the server.
	require.NoError(t, acme.Publish("pairdb.v1.kv.other.put", []byte("x")))
	require.NoError(t, acme.FlushTimeout(5*time.Second))
	select {
	case err := <-violations:
		require.ErrorContains(t, err, "Permissions Violation")
	case <-ctx.Done():
		require.Fail(t, "publishing to another tenant's subject was not refused")
	}

	// A storage node cannot listen to another node's subjects.
	node := connect("pairdb-storage-0", natsPasswords["PAIRDB_NODE_PASSWORD"])
	_, err = node.Subscribe("pairdb.v1.node.pairdb-storage-1.apply", func(*nats.Msg) {})
	require.NoError(t, err)
	require.NoError(t, node.FlushTimeout(5*time.Second))
	select {
	case err := <-violations:
		require.ErrorContains(t, err, "Permissions Violation")
	case <-ctx.Done():
		require.Fail(t, "subscribing to another node's subjects was not refused")
	}

	// A tenant cannot reach the admin or node subjects, and a storage node
	// cannot send client requests.
	refused := func(nc *nats.Conn, subject, what string) {
		t.Helper()
		require.NoError(t, nc.Publish(subject, []byte("x")))
		require.NoError(t, nc.FlushTimeout(5*time.Second))
		select {
		case err := <-violations:
			require.ErrorContains(t, err, "Permissions Violation", what)
		case <-ctx.Done():
			require.Fail(t, what+" was not refused")
		}
	}
	refused(acme, "pairdb.v1.admin.tenants.create", "a tenant calling the admin API")
	refused(acme, "pairdb.v1.node.pairdb-storage-0.apply", "a tenant writing to a storage node")
	refused(node, "pairdb.v1.kv.acme.put", "a storage node sending a client request")

	// Wrong password: no connection at all.
	_, err = nats.Connect(s.ClientURL(), nats.UserInfo("tenant-acme", "wrong"))
	require.Error(t, err)
}
