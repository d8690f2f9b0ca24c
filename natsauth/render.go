package natsauth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/keyspace"
)

// Config names what to render: the subject prefix, every storage node id
// and every tenant id.
type Config struct {
	Subjects bus.Subjects
	Nodes    []string
	Tenants  []string
}

// Account names.
const (
	// Account holds coordinators, storage nodes and operators: the only
	// account with JetStream, where the control plane lives.
	Account = "PAIRDB"
	// SystemAccount is the NATS system account (server monitoring).
	SystemAccount = "SYS"
)

// Fixed users and their password variables.
const (
	CoordinatorUser = "coordinator"
	OperatorUser    = "operator"
	SystemUser      = "sys"
)

// Role names a user's role.
type Role string

// Roles.
const (
	RoleCoordinator Role = "coordinator"
	RoleNode        Role = "storage node"
	RoleOperator    Role = "operator"
	RoleTenant      Role = "tenant"
)

// User is one NATS user.
type User struct {
	Name    string
	Account string
	Role    Role
	// Node or Tenant is the id a node's or tenant's user stands for.
	ID string
	// PasswordVar names the variable (the server's environment) holding
	// the password.
	PasswordVar string
	Perms       Permissions
}

// envToken is id as a part of a variable or account name: upper case, '-'
// as '_'. Distinct ids that map to one token are refused (Validate).
func envToken(id string) string { return strings.ToUpper(strings.ReplaceAll(id, "-", "_")) }

// Password variables live in the NATS server's environment, under
// NATS_PASSWORD_ and not PAIRDB_: a pairdb process warns about PAIRDB_
// variables it does not read (typos of its settings).
const passwordVarPrefix = "NATS_PASSWORD_"

// NodePasswordVar is the variable holding storage node id's password.
func NodePasswordVar(id string) string { return passwordVarPrefix + "NODE_" + envToken(id) }

// TenantPasswordVar is the variable holding tenant id's password.
func TenantPasswordVar(id string) string { return passwordVarPrefix + "TENANT_" + envToken(id) }

// TenantAccount is tenant id's account.
func TenantAccount(id string) string { return "TENANT_" + envToken(id) }

// TenantUser is tenant id's user.
func TenantUser(id string) string { return "tenant-" + id }

// Password variables of the fixed users.
const (
	CoordinatorPasswordVar = passwordVarPrefix + "COORDINATOR"
	OperatorPasswordVar    = passwordVarPrefix + "OPERATOR"
	SystemPasswordVar      = passwordVarPrefix + "SYS"
)

// Validate checks the ids: each a subject token by the tenant id rule,
// none twice, no two mapping to one variable, and no node named like a
// fixed user (a node's user name is its id).
func (c Config) Validate() error {
	if len(c.Nodes) == 0 {
		return errors.New("name at least one storage node id")
	}
	seen := map[string]string{}
	check := func(kind, id, token string) error {
		if err := keyspace.ValidateTenantID(id); err != nil {
			return errors.Wrapf(err, "%s id %q", kind, id)
		}
		if prev, ok := seen[kind+token]; ok {
			return errors.Newf("%s ids %q and %q both become %s in variable and account names; rename one", kind, prev, id, token)
		}
		seen[kind+token] = id
		return nil
	}
	for _, id := range c.Nodes {
		if id == CoordinatorUser || id == OperatorUser || id == SystemUser || strings.HasPrefix(id, "tenant-") {
			return errors.Newf("storage node id %q is taken by another NATS user", id)
		}
		if err := check("storage node", id, envToken(id)); err != nil {
			return err
		}
	}
	for _, id := range c.Tenants {
		if err := check("tenant", id, envToken(id)); err != nil {
			return err
		}
	}
	return nil
}

// Users lists every user, in the rendered order: coordinator, storage
// nodes, operator, tenants.
func (c Config) Users() []User {
	s := c.Subjects
	users := []User{{Name: CoordinatorUser, Account: Account, Role: RoleCoordinator, PasswordVar: CoordinatorPasswordVar, Perms: Coordinator(s)}}
	for _, id := range c.Nodes {
		users = append(users, User{Name: id, Account: Account, Role: RoleNode, ID: id, PasswordVar: NodePasswordVar(id), Perms: StorageNode(s, id)})
	}
	users = append(users, User{Name: OperatorUser, Account: Account, Role: RoleOperator, PasswordVar: OperatorPasswordVar, Perms: Operator(s)})
	for _, id := range c.Tenants {
		users = append(users, User{Name: TenantUser(id), Account: TenantAccount(id), Role: RoleTenant, ID: id,
			PasswordVar: TenantPasswordVar(id), Perms: Tenant(s, id)})
	}
	return users
}

// PasswordVars lists every password variable the rendered file reads, the
// system user's first.
func (c Config) PasswordVars() []string {
	out := []string{SystemPasswordVar}
	for _, u := range c.Users() {
		out = append(out, u.PasswordVar)
	}
	return out
}

// Render returns accounts.conf for c; command is the command line that
// produced it (said in the header).
func Render(c Config, command string) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var b strings.Builder
	w := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	for _, line := range strings.Split(strings.TrimSpace(fmt.Sprintf(header, command)), "\n") {
		w(0, "%s", strings.TrimRight("# "+line, " "))
	}
	w(0, "")
	w(0, "accounts {")
	w(1, "%s {", SystemAccount)
	w(2, "users: [{ user: %s, password: $%s }]", SystemUser, SystemPasswordVar)
	w(1, "}")
	w(0, "")
	w(1, "%s {", Account)
	w(2, "jetstream: enabled")
	w(2, "users: [")
	users := c.Users()
	for _, u := range users {
		if u.Account == Account {
			renderUser(w, u)
		}
	}
	w(2, "]")
	if len(c.Tenants) > 0 {
		w(2, "# Each tenant's key-value service, importable by that tenant's account only.")
		w(2, "exports: [")
		for _, id := range c.Tenants {
			w(3, "{ service: %q, accounts: [%s] }", c.Subjects.KV(id, "*"), TenantAccount(id))
		}
		w(2, "]")
	}
	w(1, "}")
	for _, u := range users {
		if u.Role != RoleTenant {
			continue
		}
		w(0, "")
		w(1, "# Tenant %q: its own account, which imports its own key-value service.", u.ID)
		w(1, "%s {", u.Account)
		w(2, "users: [")
		renderUser(w, u)
		w(2, "]")
		w(2, "imports: [")
		w(3, "{ service: { account: %s, subject: %q } }", Account, c.Subjects.KV(u.ID, "*"))
		w(2, "]")
		w(1, "}")
	}
	w(0, "}")
	w(0, "")
	w(0, "system_account: %s", SystemAccount)
	return []byte(b.String()), nil
}

const header = `
PairDB's NATS accounts, users and permissions. GENERATED by
  %s
from the subjects and JetStream names in the code (package natsauth); edit
the ids on that command line, not this file. deploy/nats/accounts.conf is
the output for the example ids, and a test fails when the two differ.

Included by nats-server.conf (a cluster by hand) and by the Helm values
(values.yaml, config.merge). Passwords come from the server's environment
($NAME is read from it when the file does not define it), one variable per
user, so no user can log in as another; store bcrypt hashes there instead
(nats server passwd) if the server must not hold the passwords themselves.

Roles (README, "Who may do what"):
  coordinator     serves the key-value, admin and member APIs, calls storage
                  nodes, owns the control plane: creates and updates (never
                  deletes) its streams and buckets, writes the ring log,
                  tenants, idempotency records, hints and migration progress.
  <node id>       one user per storage node: its own endpoints, heartbeat,
                  hints and member requests; merges, scans and digests to
                  peers; reads the ring log. Nothing it may send creates,
                  updates, deletes or purges a stream or bucket.
  operator        the admin API, repair rounds and service discovery; no
                  key-value, replica or JetStream subjects.
  tenant-<id>     in account TENANT_<ID>: its own key-value subjects only.
Replies arrive under an inbox prefix only the user may read:
_INBOX_coordinator, _INBOX_node_<id>, _INBOX_operator; a tenant's _INBOX is
private to its account.`

func renderUser(w func(int, string, ...any), u User) {
	w(3, "# %s", describe(u))
	w(3, "{")
	w(4, "user: %q", u.Name)
	w(4, "password: $%s", u.PasswordVar)
	w(4, "permissions: {")
	renderRules(w, "publish", u.Perms.Publish)
	renderRules(w, "subscribe", u.Perms.Subscribe)
	if u.Perms.Responses {
		w(5, "# Answers the requests it receives.")
		w(5, "allow_responses: true")
	}
	w(4, "}")
	w(3, "}")
}

func describe(u User) string {
	switch u.Role {
	case RoleNode:
		return fmt.Sprintf("Storage node %s (the user name is the node id).", u.ID)
	case RoleTenant:
		return fmt.Sprintf("Tenant %s.", u.ID)
	case RoleCoordinator:
		return "Coordinators (every coordinator process)."
	}
	return "Operators: pairdb tenant, node, migration and repair."
}

func renderRules(w func(int, string, ...any), verb string, rules []Rule) {
	w(5, "%s: {", verb)
	w(6, "allow: [")
	for _, r := range rules {
		w(7, "# %s", r.Why)
		subjects := slices.Clone(r.Subjects)
		for _, s := range subjects {
			w(7, "%q", s)
		}
	}
	w(6, "]")
	w(5, "}")
}

// HelmEnv returns the container.env entries of deploy/nats/values.yaml: each
// password variable from the Secret secret, under the key its user name
// gives (the system user's: "sys").
func HelmEnv(c Config, secret string) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var b strings.Builder
	entry := func(variable, key string) {
		fmt.Fprintf(&b, "    %s:\n      valueFrom:\n        secretKeyRef: { name: %s, key: %s }\n", variable, secret, key)
	}
	b.WriteString("  env:\n")
	entry(SystemPasswordVar, SystemUser)
	for _, u := range c.Users() {
		entry(u.PasswordVar, u.Name)
	}
	return []byte(b.String()), nil
}
