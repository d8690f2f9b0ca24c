package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/pairdb/pairdb/config"
	"github.com/pairdb/pairdb/ops"
	"github.com/pairdb/pairdb/storagenode"
	"github.com/pairdb/pairdb/storagenode/engine"
)

func envOf(m map[string]string) config.LookupEnv {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// prepare parses args like Execute up to the command's RunE and resolves
// the global settings; it returns the command that would run.
func prepare(t *testing.T, env map[string]string, args ...string) (*cobra.Command, *globals, error) {
	t.Helper()
	root, g := newRootWith(envOf(env))
	cmd, rest, err := root.Find(args)
	require.NoError(t, err)
	require.NoError(t, cmd.ParseFlags(rest))
	return cmd, g, root.PersistentPreRunE(cmd, cmd.Flags().Args())
}

func TestGlobalSettingsThroughTheCommandTree(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pairdb.yaml")
	require.NoError(t, os.WriteFile(file, []byte("tenant: acme\ntimeout: 2s\nprefix: filed\n"), 0o600))
	env := map[string]string{"NATS_URL": "nats://legacy:4222", "PAIRDB_CONFIG": file, "PAIRDB_PREFIX": "envd"}

	_, g, err := prepare(t, env, "get", "--timeout", "3s", "k")
	require.NoError(t, err)
	require.Equal(t, "nats://legacy:4222", g.server, "NATS_URL still picks the server")
	require.Equal(t, "acme", g.tenant, "from the file named by PAIRDB_CONFIG")
	require.Equal(t, 3*time.Second, g.timeout, "the flag beats the file")
	require.Equal(t, "envd", g.prefix, "the environment beats the file")

	_, g, err = prepare(t, env, "--config", os.DevNull, "-s", "nats://flag:4222", "tenant", "list")
	require.NoError(t, err)
	require.Equal(t, "nats://flag:4222", g.server)
	require.Equal(t, "default", g.tenant, "--config beats PAIRDB_CONFIG")
}

func TestBadSettingsFailBeforeTheCommandRuns(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		file string
		env  map[string]string
		args []string
		want string
	}{
		{file: "tenat: acme\n", args: []string{"tenant", "list"}, want: `unknown setting "tenat"`},
		{file: "coordinator:\n  request_timeout: 0s\n", args: []string{"coordinator"}, want: "coordinator.request_timeout must be positive"},
		{env: map[string]string{"PAIRDB_LOG_FORMAT": "xml"}, args: []string{"dev"}, want: `log_format must be console or json, got "xml"`},
		{env: map[string]string{"PAIRDB_CACHE_BYTES": "lots"}, args: []string{"storagenode", "--id", "n1", "--data", dir}, want: `storagenode.cache_bytes: "lots" is not a size`},
		{args: []string{"storagenode", "--data", dir}, want: "storagenode.id is required"},
		{args: []string{"coordinator", "--ops-addr", "9090"}, want: "coordinator.ops_addr must be host:port"},
	} {
		env := map[string]string{}
		for k, v := range tc.env {
			env[k] = v
		}
		if tc.file != "" {
			path := filepath.Join(dir, "c.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.file), 0o600))
			env[config.FileEnv] = path
		}
		root := newRoot(envOf(env))
		root.SetArgs(tc.args)
		root.SetOut(&bytes.Buffer{})
		require.ErrorContains(t, root.Execute(), tc.want, tc.args)
	}
}

// TestFlagNamesStayCompatible parses the command lines the README, the
// Dockerfile and the Kubernetes manifests use.
func TestFlagNamesStayCompatible(t *testing.T) {
	for _, args := range [][]string{
		{"dev", "--listen", "127.0.0.1:4333", "--data", "d", "--nodes", "5", "--no-sync", "--postgres-url", "postgres://x"},
		{"coordinator", "--stream-replicas", "3", "--log-level", "info", "--virtual-nodes", "64", "--idempotency-ttl", "1h",
			"--request-timeout", "3s", "--replica-timeout", "1s", "--tenant-cache-ttl", "10s", "--ops-addr", ":9090", "--shutdown-timeout", "20s"},
		{"coordinator", "--server", "nats://nats:4222", "--nodes", "pairdb-storage-0,pairdb-storage-1"},
		{"storagenode", "--data", "/data", "--stream-replicas", "3", "--log-level", "info", "--id", "node-1",
			"--cleanup-grace", "1m", "--cache-bytes", "1GiB", "--no-sync", "--log-format", "json"},
		{"--tenant", "acme", "put", "k", "v", "--consistency", "all"},
		{"-t", "acme", "-s", "nats://x:4222", "--timeout", "1s", "--prefix", "p", "get", "k"},
	} {
		_, _, err := prepare(t, nil, args...)
		require.NoError(t, err, args)
	}
}

func TestDeployManifestArgsParse(t *testing.T) {
	parsed := 0
	for _, name := range []string{"coordinator.yaml", "storagenode.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "k8s", name))
		require.NoError(t, err)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var doc struct {
				Kind string `yaml:"kind"`
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Args []string `yaml:"args"`
							} `yaml:"containers"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			if dec.Decode(&doc) != nil {
				break
			}
			for _, c := range doc.Spec.Template.Spec.Containers {
				env := map[string]string{"PAIRDB_NODE_ID": "pairdb-storage-0"}
				_, _, err := prepare(t, env, c.Args...)
				require.NoError(t, err, "%s: %s", name, strings.Join(c.Args, " "))
				parsed++
			}
		}
	}
	require.Equal(t, 2, parsed, "one container each in the coordinator Deployment and the storage StatefulSet")
}

// TestDefaultsAgreeWithTheComponents keeps the defaults the config package
// spells out equal to the components' own.
func TestDefaultsAgreeWithTheComponents(t *testing.T) {
	sn := config.DefaultStorageNode()
	require.Equal(t, storagenode.DefaultCleanupGrace, sn.CleanupGrace)
	require.Equal(t, engine.DefaultCacheBytes, int64(sn.CacheBytes))
	require.Equal(t, ops.DefaultAddr, sn.OpsAddr)
	require.Equal(t, ops.DefaultAddr, config.DefaultCoordinator().OpsAddr)
}

func TestConfigDocsPrintsTheTable(t *testing.T) {
	// A bad environment must not stop the docs from printing.
	root := newRoot(envOf(map[string]string{"PAIRDB_TIMEOUT": "never"}))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"config", "docs"})
	require.NoError(t, root.Execute())
	require.Equal(t, config.Table(), out.String())
}

// TestDockerfileExampleUsesCurrentFlags parses the `docker run` lines of the
// Dockerfile's comment: they must parse and name no deprecated flag.
func TestDockerfileExampleUsesCurrentFlags(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "Dockerfile"))
	require.NoError(t, err)
	found := 0
	for _, line := range strings.Split(string(data), "\n") {
		_, run, ok := strings.Cut(line, "docker run ")
		if !ok || !strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		fields := strings.Fields(run)
		i := slices.IndexFunc(fields, func(f string) bool { return strings.HasPrefix(f, "pairdb:") })
		require.GreaterOrEqual(t, i, 0, "no image in %q", line)
		cmd, _, err := prepare(t, nil, fields[i+1:]...)
		require.NoError(t, err, line)
		cmd.Flags().Visit(func(f *pflag.Flag) {
			require.Empty(t, f.Deprecated, "%q uses the deprecated flag --%s", line, f.Name)
		})
		found++
	}
	require.Positive(t, found, "the Dockerfile shows how to run the image")
}

// TestEveryJSONFlagHasAnExample: a command that can print JSON shows how in
// its help.
func TestEveryJSONFlagHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if c.Flags().Lookup("json") != nil {
			require.Contains(t, c.Example, "--json", "pairdb %s --help shows no --json example", c.CommandPath())
			n++
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot(envOf(nil)))
	require.GreaterOrEqual(t, n, 14, "put, get, delete, tenant create|get|update|list, node add|remove|list, migration get|list, repair, bench")
}
