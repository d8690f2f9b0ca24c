package main

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/internal/deployedtest"
	"github.com/pairdb/pairdb/natsauth"
)

// The client commands take their role's inbox prefix, the one the shipped
// accounts let their user read; inbox_prefix overrides it.
func TestCommandsTakeTheirRolesInbox(t *testing.T) {
	for args, want := range map[string]string{
		"tenant list":                         bus.OperatorInbox,
		"node list":                           bus.OperatorInbox,
		"migration list":                      bus.OperatorInbox,
		"repair --all":                        bus.OperatorInbox,
		"get k":                               "",
		"put k v":                             "",
		"bench --dev":                         "",
		"--inbox-prefix _INBOX_ops get k":     "_INBOX_ops",
		"--inbox-prefix _INBOX_x tenant list": "_INBOX_x",
	} {
		_, g, err := prepare(t, nil, strings.Fields(args)...)
		require.NoError(t, err, args)
		require.Equal(t, want, g.inbox, args)
	}
	_, g, err := prepare(t, nil, "storagenode", "--id", "n1", "--data", t.TempDir())
	require.NoError(t, err)
	require.Equal(t, bus.NodeInbox("n1"), g.partInbox(bus.NodeInbox("n1")))
	_, g, err = prepare(t, map[string]string{"PAIRDB_INBOX_PREFIX": "_INBOX_c2"}, "coordinator")
	require.NoError(t, err)
	require.Equal(t, "_INBOX_c2", g.partInbox(bus.CoordinatorInbox))
	for _, bad := range []string{"_INBOX.>", "a.*", "trailing.", ".lead", "two..dots", "a b"} {
		_, _, err := prepare(t, nil, "--inbox-prefix", bad, "get", "k")
		require.ErrorContains(t, err, "inbox_prefix", bad)
	}
}

// TestCommandsUnderShippedAccounts runs the admin and key-value commands
// against a cluster under deploy/nats, as the users the README says to run
// them as: the operator bootstraps the ring, creates the tenant, lists
// nodes and runs `pairdb repair`; tenant acme puts and gets. None of their
// connections is refused anything.
func TestCommandsUnderShippedAccounts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := deployedtest.StartServer(t, t.Setenv)
	c := deployedtest.NewCluster(t, s, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	c.StartCoordinator(ctx, cluster.CoordinatorConfig{})
	for _, id := range deployedtest.Nodes {
		c.StartNode(ctx, id, t.TempDir())
	}
	as := func(user string) string {
		u, err := url.Parse(s.ClientURL())
		require.NoError(t, err)
		u.User = url.UserPassword(user, s.Password(user))
		return u.String()
	}
	run := func(user string, args ...string) string {
		t.Helper()
		cmd := newRoot(benchNoEnv)
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append([]string{"--server", as(user), "--timeout", "10s"}, args...))
		require.NoError(t, cmd.ExecuteContext(ctx), "%s as %s: %s", args, user, errOut.String())
		return out.String()
	}
	op := natsauth.OperatorUser
	run(op, append([]string{"node", "add"}, deployedtest.Nodes...)...)
	require.Eventually(t, func() bool {
		return strings.Count(run(op, "node", "list"), "NORMAL") == len(deployedtest.Nodes)
	}, 30*time.Second, 50*time.Millisecond)
	run(op, "tenant", "create", "acme", "--replication-factor", "3")
	require.Contains(t, run(op, "tenant", "list"), "acme")

	tenant := natsauth.TenantUser("acme")
	run(tenant, "--tenant", "acme", "put", "greeting", "hello")
	require.Equal(t, "hello", strings.TrimSpace(run(tenant, "--tenant", "acme", "get", "greeting")))

	require.Contains(t, run(op, "repair", "--tenant", "acme"), "repair finished")
	require.Empty(t, s.Violations(), "a command did something its NATS user may not")
}
