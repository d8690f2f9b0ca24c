package deploy

import (
	goflag "flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/natsauth"
)

// The NATS configuration is checked with nats-server's own parser
// (server.ProcessConfigFile): variables, includes, accounts, imports and
// exports are resolved exactly as a real server resolves them, so a config
// that parses here starts there. A regex over the text could not tell a
// permission inside a user from one in a comment.

// exampleIDs are the ids deploy/nats is generated for.
var exampleIDs = natsauth.Config{
	Nodes:   []string{"pairdb-storage-0", "pairdb-storage-1", "pairdb-storage-2"},
	Tenants: []string{"acme"},
}

// exampleCommand is the command line that generates deploy/nats.
const exampleCommand = "pairdb nats-accounts --nodes pairdb-storage-0,pairdb-storage-1,pairdb-storage-2 --tenants acme"

func loadNATSConf(t *testing.T) *server.Options {
	t.Helper()
	for _, v := range exampleIDs.PasswordVars() {
		t.Setenv(v, "pw-"+v)
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

// TestAccountsConfIsGenerated fails when deploy/nats/accounts.conf is not
// what `pairdb nats-accounts` renders for the example ids: the permissions
// come from the code's subjects, and a change there must reach the file.
// `go test ./deploy -run Generated -update` rewrites it (and values.yaml's
// env block is checked in TestNATSHelmValues).
func TestAccountsConfIsGenerated(t *testing.T) {
	want, err := natsauth.Render(exampleIDs, exampleCommand)
	require.NoError(t, err)
	path := filepath.Join("nats", "accounts.conf")
	if *update {
		require.NoError(t, os.WriteFile(path, want, 0o644))
		return
	}
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got),
		"deploy/nats/accounts.conf is stale: run `%s > deploy/nats/accounts.conf`", exampleCommand)
}

var update = goflag.Bool("update", false, "rewrite deploy/nats/accounts.conf")

// TestNATSServerConf parses nats-server.conf as nats-server does and checks
// the server ends up with exactly the generated users and permissions, in
// the right accounts, with JetStream only where the control plane is.
func TestNATSServerConf(t *testing.T) {
	m := load(t)
	opts := loadNATSConf(t)

	require.True(t, opts.JetStream)
	require.True(t, opts.SyncAlways, "JetStream must fsync every write (sync_interval: always)")
	require.Equal(t, 4222, opts.Port)
	require.Equal(t, "pairdb", opts.Cluster.Name)
	require.Len(t, opts.Routes, 3)
	require.Equal(t, int32(8<<20), opts.MaxPayload)
	require.Equal(t, natsauth.SystemAccount, opts.SystemAccount)

	// The example ids are the StatefulSet's pods.
	require.Equal(t, storageNodeIDs(t, m), exampleIDs.Nodes)
	users := exampleIDs.Users()
	require.Len(t, opts.Users, len(users)+1, "the generated users and the system user")
	passwords := map[string]string{}
	for _, want := range users {
		u := natsUser(t, opts, want.Name)
		require.Equal(t, want.Account, u.Account.Name, want.Name)
		require.Equal(t, "pw-"+want.PasswordVar, u.Password, "%s reads its own password variable", want.Name)
		require.NotContains(t, passwords, u.Password, "%s shares a password variable with %s", want.Name, passwords[u.Password])
		passwords[u.Password] = want.Name
		require.NotNil(t, u.Permissions, "user %s has no permissions: it may do anything", u.Username)
		require.ElementsMatch(t, natsauth.Allowed(want.Perms.Publish), u.Permissions.Publish.Allow, "%s publish", want.Name)
		require.ElementsMatch(t, natsauth.Allowed(want.Perms.Subscribe), u.Permissions.Subscribe.Allow, "%s subscribe", want.Name)
		require.Equal(t, want.Perms.Responses, u.Permissions.Response != nil, "%s allow_responses", want.Name)
	}
	for _, a := range opts.Accounts {
		if a.Name != natsauth.Account {
			require.False(t, a.JetStreamEnabled(), "account %s must not have JetStream: the control plane is PAIRDB's", a.Name)
		}
	}
}
