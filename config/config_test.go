package config

import (
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// envOf is a LookupEnv over a map.
func envOf(m map[string]string) LookupEnv {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// resolveCoordinator binds a coordinator's flags, parses args and resolves
// the rest from env and file, as the coordinator command does.
func resolveCoordinator(t *testing.T, args []string, env map[string]string, file string) (Coordinator, error) {
	t.Helper()
	cfg := DefaultCoordinator()
	fs := pflag.NewFlagSet("coordinator", pflag.ContinueOnError)
	Bind(fs, SectionCoordinator, &cfg)
	require.NoError(t, fs.Parse(args))
	var f *File
	if file != "" {
		var err error
		f, err = Parse("pairdb.yaml", []byte(file))
		require.NoError(t, err)
	}
	err := Resolve(fs, SectionCoordinator, &cfg, envOf(env), f)
	return cfg, err
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	const file = `
coordinator:
  request_timeout: 4s
  replica_timeout: 1500ms
  tenant_cache_ttl: 1m
`
	env := map[string]string{"PAIRDB_REQUEST_TIMEOUT": "3s", "PAIRDB_REPLICA_TIMEOUT": "1s"}
	cfg, err := resolveCoordinator(t, []string{"--request-timeout", "2s"}, env, file)
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, cfg.RequestTimeout, "the flag beats the environment and the file")
	require.Equal(t, time.Second, cfg.ReplicaTimeout, "the environment beats the file")
	require.Equal(t, time.Minute, cfg.TenantCacheTTL, "the file beats the default")
	require.Equal(t, 24*time.Hour, cfg.IdempotencyTTL, "the default stays when nothing sets it")
	require.NoError(t, cfg.Validate())

	// Without the flag the environment wins; without both, the file.
	cfg, err = resolveCoordinator(t, nil, env, file)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, cfg.RequestTimeout)
	cfg, err = resolveCoordinator(t, nil, nil, file)
	require.NoError(t, err)
	require.Equal(t, 4*time.Second, cfg.RequestTimeout)
	cfg, err = resolveCoordinator(t, nil, nil, "")
	require.NoError(t, err)
	require.Equal(t, DefaultCoordinator(), cfg)
}

func TestEmptyEnvironmentVariableIsUnset(t *testing.T) {
	cfg, err := resolveCoordinator(t, nil, map[string]string{"PAIRDB_POSTGRES_URL": ""}, "coordinator:\n  postgres_url: postgres://db/x\n")
	require.NoError(t, err)
	require.Equal(t, "postgres://db/x", cfg.PostgresURL)
}

func TestGlobalServerFromNATSURL(t *testing.T) {
	resolve := func(args []string, env map[string]string, file string) Global {
		t.Helper()
		g := DefaultGlobal()
		fs := pflag.NewFlagSet("pairdb", pflag.ContinueOnError)
		Bind(fs, Top, &g)
		require.NoError(t, fs.Parse(args))
		var f *File
		if file != "" {
			var err error
			f, err = Parse("f.yaml", []byte(file))
			require.NoError(t, err)
		}
		require.NoError(t, Resolve(fs, Top, &g, envOf(env), f))
		require.NoError(t, g.Validate())
		return g
	}
	require.Equal(t, "nats://127.0.0.1:4222", resolve(nil, nil, "").Server)
	require.Equal(t, "nats://file:4222", resolve(nil, nil, "server: nats://file:4222").Server)
	require.Equal(t, "nats://legacy:4222", resolve(nil, map[string]string{"NATS_URL": "nats://legacy:4222"}, "server: nats://file:4222").Server)
	require.Equal(t, "nats://new:4222", resolve(nil, map[string]string{
		"NATS_URL": "nats://legacy:4222", "PAIRDB_SERVER": "nats://new:4222",
	}, "").Server, "PAIRDB_SERVER is tried before NATS_URL")
	require.Equal(t, "nats://flag:4222", resolve([]string{"-s", "nats://flag:4222"}, map[string]string{"PAIRDB_SERVER": "nats://env:4222"}, "").Server)
	g := resolve([]string{"-t", "acme", "--log-format", "json"}, nil, "")
	require.Equal(t, "acme", g.Tenant)
	require.Equal(t, LogJSON, g.LogFormat)
}

func TestStorageNodeSettings(t *testing.T) {
	cfg := DefaultStorageNode()
	fs := pflag.NewFlagSet("storagenode", pflag.ContinueOnError)
	Bind(fs, SectionStorageNode, &cfg)
	require.NoError(t, fs.Parse([]string{"--data", "/data", "--no-sync"}))
	f, err := Parse("f.yaml", []byte("storagenode:\n  cache_bytes: 256MiB\n  no_sync: false\n  stream_replicas: 3\n"))
	require.NoError(t, err)
	require.NoError(t, Resolve(fs, SectionStorageNode, &cfg, envOf(map[string]string{"PAIRDB_NODE_ID": "pairdb-storage-0"}), f))
	require.NoError(t, cfg.Validate())
	require.Equal(t, "pairdb-storage-0", cfg.ID)
	require.Equal(t, "/data", cfg.Data)
	require.True(t, cfg.NoSync, "a bare boolean flag is true and beats the file")
	require.Equal(t, Bytes(256<<20), cfg.CacheBytes)
	require.Equal(t, 3, cfg.StreamReplicas)
}

func TestUnknownKeysAreRejectedWithTheirName(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"sever: nats://x:4222\n", `line 1: unknown setting "sever"`},
		{"coordinator:\n  request_timout: 3s\n", `line 2: unknown setting "coordinator.request_timout"`},
		{"storagenode:\n  id: n1\n  cache: 1GiB\n", `line 3: unknown setting "storagenode.cache"`},
		{"dev:\n  request_timeout: 3s\n", `unknown setting "dev.request_timeout"`},
		{"coordinator: 3\n", `"coordinator" must be a mapping of coordinator settings`},
		{"coordinator:\n  request_timeout: [1s, 2s]\n", "coordinator.request_timeout needs a single value"},
		{"coordinator:\n  request_timeout:\n", "coordinator.request_timeout needs a single value"},
		{"tenant: a\ntenant: b\n", "tenant is set twice"},
		{"- a\n- b\n", "the top level must be a mapping"},
		{"server: [\n", "config file pairdb.yaml"},
	} {
		_, err := Parse("pairdb.yaml", []byte(tc.file))
		require.ErrorContains(t, err, tc.want, tc.file)
	}
	f, err := Parse("empty.yaml", []byte("# nothing set\n"))
	require.NoError(t, err)
	require.Empty(t, f.values)
}

func TestBadValuesNameTheSettingAndSource(t *testing.T) {
	_, err := resolveCoordinator(t, nil, map[string]string{"PAIRDB_REQUEST_TIMEOUT": "soon"}, "")
	require.ErrorContains(t, err, `coordinator.request_timeout: "soon" is not a duration`)
	require.ErrorContains(t, err, "from PAIRDB_REQUEST_TIMEOUT")

	_, err = resolveCoordinator(t, nil, nil, "coordinator:\n  virtual_nodes: many\n")
	require.ErrorContains(t, err, `coordinator.virtual_nodes: "many" is not a whole number (pairdb.yaml line 2)`)

	_, err = resolveCoordinator(t, nil, nil, "coordinator:\n  request_timeout: 5\n")
	require.ErrorContains(t, err, `coordinator.request_timeout: "5" is not a duration`)

	cfg := DefaultCoordinator()
	fs := pflag.NewFlagSet("coordinator", pflag.ContinueOnError)
	Bind(fs, SectionCoordinator, &cfg)
	require.ErrorContains(t, fs.Parse([]string{"--tenant-cache-ttl", "x"}), `"x" is not a duration`)
}

func TestValidationNamesTheSetting(t *testing.T) {
	coord := func(f func(*Coordinator)) error {
		c := DefaultCoordinator()
		f(&c)
		return c.Validate()
	}
	node := func(f func(*StorageNode)) error {
		s := DefaultStorageNode()
		s.ID, s.Data = "node-1", "/data"
		f(&s)
		return s.Validate()
	}
	dev := func(f func(*Dev)) error {
		d := DefaultDev()
		f(&d)
		return d.Validate()
	}
	global := func(f func(*Global)) error {
		g := DefaultGlobal()
		f(&g)
		return g.Validate()
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{coord(func(c *Coordinator) { c.RequestTimeout = 0 }), "coordinator.request_timeout must be positive"},
		{coord(func(c *Coordinator) { c.ReplicaTimeout = -time.Second }), "coordinator.replica_timeout must be positive"},
		{coord(func(c *Coordinator) { c.ReplicaTimeout = time.Minute }), "coordinator.replica_timeout (1m0s) must not exceed coordinator.request_timeout"},
		{coord(func(c *Coordinator) { c.TenantCacheTTL = 0 }), "coordinator.tenant_cache_ttl must be positive"},
		{coord(func(c *Coordinator) { c.StreamReplicas = 6 }), "coordinator.stream_replicas must be between 1 and 5"},
		{coord(func(c *Coordinator) { c.VirtualNodes = 0 }), "coordinator.virtual_nodes must be between 1 and 4096"},
		{coord(func(c *Coordinator) { c.TombstoneGrace = time.Hour }), "coordinator.tombstone_grace (1h0m0s) must be at least coordinator.hint_max_age (3h0m0s)"},
		{coord(func(c *Coordinator) { c.IdempotencyTTL = 0 }), "coordinator.idempotency_ttl must be positive"},
		{coord(func(c *Coordinator) { c.OpsAddr = "9090" }), "coordinator.ops_addr must be host:port"},
		{coord(func(c *Coordinator) { c.ShutdownTimeout = 0 }), "coordinator.shutdown_timeout must be positive"},
		{node(func(s *StorageNode) { s.ID = "" }), "storagenode.id is required"},
		{node(func(s *StorageNode) { s.ID = "a.b" }), "storagenode.id is a subject token"},
		{node(func(s *StorageNode) { s.Data = "" }), "storagenode.data is required"},
		{node(func(s *StorageNode) { s.CacheBytes = 1024 }), "storagenode.cache_bytes must be at least 1MiB, got 1KiB"},
		{node(func(s *StorageNode) { s.CleanupGrace = 0 }), "storagenode.cleanup_grace must be positive"},
		{node(func(s *StorageNode) { s.StreamReplicas = 0 }), "storagenode.stream_replicas must be between 1 and 5"},
		{dev(func(d *Dev) { d.Nodes = 0 }), "dev.nodes must be between 1 and 64"},
		{dev(func(d *Dev) { d.Listen = "nowhere" }), "dev.listen must be host:port"},
		{dev(func(d *Dev) { d.Data = "" }), "dev.data must name a directory"},
		{global(func(g *Global) { g.LogLevel = "loud" }), `log_level must be debug, info, warn or error, got "loud"`},
		{global(func(g *Global) { g.LogFormat = "xml" }), `log_format must be console or json, got "xml"`},
		{global(func(g *Global) { g.Prefix = "a.b" }), "prefix must be one NATS subject token"},
		{global(func(g *Global) { g.Timeout = 0 }), "timeout must be positive"},
		{global(func(g *Global) { g.Tenant = "" }), "tenant"},
		{global(func(g *Global) { g.Server = " " }), "server must name a NATS server URL"},
	} {
		require.ErrorContains(t, tc.err, tc.want)
	}
	require.NoError(t, DefaultGlobal().Validate())
	require.NoError(t, DefaultDev().Validate())
	require.NoError(t, DefaultCoordinator().Validate())
	require.NoError(t, node(func(*StorageNode) {}))
	require.ErrorContains(t, DefaultStorageNode().Validate(), "storagenode.id is required", "a storage node has no default id")
}

func TestBytes(t *testing.T) {
	for in, want := range map[string]Bytes{
		"0": 0, "1024": 1024, "64MiB": 64 << 20, "1 GiB": 1 << 30, "2KB": 2000, "3MB": 3e6, "10B": 10, "1GB": 1e9,
	} {
		got, err := ParseBytes(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "MiB", "1.5GiB", "ten", "1TiB", "99999999999GiB"} {
		_, err := ParseBytes(bad)
		require.Error(t, err, bad)
	}
	require.Equal(t, "64MiB", Bytes(64<<20).String())
	require.Equal(t, "1GiB", Bytes(1<<30).String())
	require.Equal(t, "1536KiB", Bytes(1536<<10).String())
	require.Equal(t, "1000", Bytes(1000).String())
	require.Equal(t, "0", Bytes(0).String())
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "24h", 10 * time.Minute: "10m", 90 * time.Second: "1m30s", 5 * time.Second: "5s",
		1500 * time.Millisecond: "1.5s", 0: "0s", time.Hour + time.Second: "1h0m1s",
	} {
		require.Equal(t, want, FormatDuration(d))
	}
}

func TestEverySettingHasUsageAndUniqueFlagAndEnvPerCommand(t *testing.T) {
	global := Settings(Top, new(Global))
	for _, sec := range sections() {
		if sec.name == Top {
			continue
		}
		flags, envs := map[string]string{}, map[string]string{}
		for _, s := range append(append([]Setting(nil), global...), Settings(sec.name, sec.cfg)...) {
			require.NotEmpty(t, s.Usage, s.Name())
			require.NotContains(t, flags, s.Flag, "flag --%s of %s is also %s", s.Flag, s.Name(), flags[s.Flag])
			flags[s.Flag] = s.Name()
			for _, e := range s.Env {
				require.NotContains(t, envs, e, "%s of %s is also %s", e, s.Name(), envs[e])
				envs[e] = s.Name()
			}
		}
		require.NotContains(t, flags, FileFlag)
		require.NotContains(t, envs, FileEnv)
	}
}

func TestUnknownEnv(t *testing.T) {
	require.Equal(t, []string{"PAIRDB_REQUST_TIMEOUT"}, UnknownEnv([]string{
		"PATH=/bin", "PAIRDB_REQUST_TIMEOUT=3s", "PAIRDB_REQUEST_TIMEOUT=3s", "PAIRDB_NODE_ID=n1",
		"PAIRDB_CONFIG=/etc/pairdb.yaml", "PAIRDB_TEST_POSTGRES_URL=postgres://x", "NATS_URL=nats://x",
		"PAIRDB_HEALTHCHECK_URL=http://x",
	}))
}
