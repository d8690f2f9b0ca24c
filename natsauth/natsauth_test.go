package natsauth_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/natsauth"
)

var example = natsauth.Config{Nodes: []string{"n0", "n1", "n2"}, Tenants: []string{"acme", "other"}}

// may reports whether any of allow admits subject s as the server checks a
// permission (its sublist match): s's tokens are taken literally, so a
// wildcard in s is matched by a '*' of the allow list like any token.
func may(allow []string, s string) bool {
	for _, a := range allow {
		if matches(strings.Split(a, "."), strings.Split(s, ".")) {
			return true
		}
	}
	return false
}

func matches(pattern, subject []string) bool {
	for i, p := range pattern {
		switch {
		case p == ">":
			return len(subject) > i
		case i >= len(subject) || (p != "*" && p != subject[i]):
			return false
		}
	}
	return len(pattern) == len(subject)
}

func TestMatchesLikeTheServer(t *testing.T) {
	require.True(t, may([]string{"$SRV.*"}, "$SRV.>"), "the server admits a.> under a.*")
	require.True(t, may([]string{"a.>"}, "a.b.c"))
	require.False(t, may([]string{"a.>"}, "a"))
	require.False(t, may([]string{"a.*"}, "a.b.c"))
	require.False(t, may([]string{"a.b"}, "a.*"))
}

func TestValidateRefusesIDsThatCollide(t *testing.T) {
	require.NoError(t, example.Validate())
	for name, c := range map[string]natsauth.Config{
		"no nodes":                    {Tenants: []string{"acme"}},
		"a node id with a dot":        {Nodes: []string{"a.b"}},
		"a tenant id with a wildcard": {Nodes: []string{"n0"}, Tenants: []string{"*"}},
		"nodes one variable apart":    {Nodes: []string{"a-b", "a_b"}},
		"tenants one variable apart":  {Nodes: []string{"n0"}, Tenants: []string{"a-b", "A-B"}},
		"a node named operator":       {Nodes: []string{"operator"}},
		"a node named like a tenant":  {Nodes: []string{"tenant-acme"}},
	} {
		require.Error(t, c.Validate(), name)
		_, err := natsauth.Render(c, "test")
		require.Error(t, err, name)
	}
}

// Nobody may delete or purge a stream, or a node's hint consumer; the
// coordinators alone purge, and only the idempotency bucket.
func TestNoUserDeletesTheControlPlane(t *testing.T) {
	streams := []string{natsauth.RingStream, natsauth.MigrationsStream, natsauth.HintsStream,
		natsauth.KVStream(natsauth.TenantsBucket), natsauth.KVStream(natsauth.IdempotencyBucket), natsauth.KVStream(natsauth.SecretsBucket)}
	for _, u := range example.Users() {
		pub := natsauth.Allowed(u.Perms.Publish)
		for _, st := range streams {
			require.False(t, may(pub, "$JS.API.STREAM.DELETE."+st), "%s deletes %s", u.Name, st)
			require.False(t, may(pub, "$JS.API.STREAM.MSG.DELETE."+st), "%s deletes from %s", u.Name, st)
			purges := u.Role == natsauth.RoleCoordinator && st == natsauth.KVStream(natsauth.IdempotencyBucket)
			require.Equal(t, purges, may(pub, "$JS.API.STREAM.PURGE."+st), "%s purges %s", u.Name, st)
			manages := u.Role == natsauth.RoleCoordinator
			require.Equal(t, manages, may(pub, "$JS.API.STREAM.CREATE."+st), "%s creates %s", u.Name, st)
			require.Equal(t, manages, may(pub, "$JS.API.STREAM.UPDATE."+st), "%s updates %s", u.Name, st)
		}
		for _, n := range example.Nodes {
			require.False(t, may(pub, "$JS.API.CONSUMER.DELETE."+natsauth.HintsStream+".pairdb-hints-"+n), "%s deletes %s's hints", u.Name, n)
		}
		require.False(t, may(pub, "$JS.API.STREAM.CREATE.OTHER"), "%s creates other streams", u.Name)
	}
}

// A node's user speaks for its own id only, and reads only its own
// endpoints, heartbeat, hints and replies.
func TestNodesAreBoundToTheirIDs(t *testing.T) {
	s := bus.Subjects{}
	p := natsauth.StorageNode(s, "n0")
	pub, sub := natsauth.Allowed(p.Publish), natsauth.Allowed(p.Subscribe)
	for _, op := range []string{bus.OpRegister, bus.OpTransferDone, bus.OpRefilled, bus.OpProgress} {
		require.True(t, may(pub, s.Member("n0", op)))
		require.False(t, may(pub, s.Member("n1", op)))
	}
	require.True(t, may(pub, s.Heartbeat("n0")))
	require.False(t, may(pub, s.Heartbeat("n1")))
	require.False(t, may(pub, s.Hints("n0")), "hints are the coordinators' to write")
	require.False(t, may(pub, s.Events(bus.EventsRing)), "the ring log is the coordinators' to write")
	require.True(t, may(pub, s.Node("n1", bus.OpMerge)), "forwarded writes reach peers")
	for _, op := range []string{bus.OpApply, bus.OpRead, bus.OpRepair} {
		require.False(t, may(pub, s.Node("n1", op)), op)
	}
	require.True(t, may(pub, "$JS.API.CONSUMER.MSG.NEXT.PAIRDB_HINTS.pairdb-hints-n0"))
	require.False(t, may(pub, "$JS.API.CONSUMER.MSG.NEXT.PAIRDB_HINTS.pairdb-hints-n1"))
	require.True(t, may(sub, s.Node("n0", bus.OpApply)))
	require.False(t, may(sub, s.Node("n1", bus.OpApply)))
	require.True(t, may(sub, bus.NodeInbox("n0")+".x"))
	for _, other := range []string{bus.NodeInbox("n1") + ".x", bus.CoordinatorInbox + ".x", bus.DefaultInbox + ".x"} {
		require.False(t, may(sub, other), other)
	}
}

// The server matches a subscription's own wildcards against the allow
// list as if they were tokens: an allowed "a.*" admits a subscription to
// "a.>". No allow may end in a wildcard right after a prefix shared with
// another user's subjects in a way that hands out more than meant; the one
// case that matters, service discovery, is spelled out verb by verb.
func TestNoSubscriptionReachesAllOfServiceDiscovery(t *testing.T) {
	for _, u := range example.Users() {
		sub := natsauth.Allowed(u.Perms.Subscribe)
		require.False(t, may(sub, "$SRV.>"), "%s subscribes to all of $SRV", u.Name)
		require.False(t, may(sub, ">"), u.Name)
		for _, a := range sub {
			require.False(t, strings.HasPrefix(a, "$JS."), "%s subscribes to JetStream's own subjects: %s", u.Name, a)
		}
	}
}

func TestRenderedFileNamesEveryUser(t *testing.T) {
	out, err := natsauth.Render(example, "pairdb nats-accounts --nodes n0,n1,n2 --tenants acme,other")
	require.NoError(t, err)
	for _, v := range example.PasswordVars() {
		require.Contains(t, string(out), "$"+v)
	}
	require.Contains(t, string(out), `{ service: "pairdb.v1.kv.other.*", accounts: [TENANT_OTHER] }`)
	env, err := natsauth.HelmEnv(example, "secret")
	require.NoError(t, err)
	require.Contains(t, string(env), "secretKeyRef: { name: secret, key: n2 }")
}
