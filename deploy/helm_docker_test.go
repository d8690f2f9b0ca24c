package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pairdb/pairdb/natsauth"
	"github.com/pairdb/pairdb/ops"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestNATSHelmValues checks the chart values: a three-server cluster,
// JetStream on files, every write synced, the accounts included.
func TestNATSHelmValues(t *testing.T) {
	m := load(t)
	require.Equal(t, true, natsValue(t, m.values, "config", "cluster", "enabled"))
	require.Equal(t, 3, natsValue(t, m.values, "config", "cluster", "replicas"))
	require.Equal(t, true, natsValue(t, m.values, "config", "jetstream", "enabled"))
	require.Equal(t, true, natsValue(t, m.values, "config", "jetstream", "fileStore", "enabled"))
	require.Equal(t, true, natsValue(t, m.values, "config", "jetstream", "fileStore", "pvc", "enabled"))
	require.Equal(t, "always", natsValue(t, m.values, "config", "jetstream", "merge", "sync_interval"))
	include := natsValue(t, m.values, "config", "merge", "$include").(string)
	require.Equal(t, "accounts.conf", filepath.Base(include))
	_, err := os.Stat(filepath.Join("nats", "accounts.conf"))
	require.NoError(t, err)
	// Every password the accounts reference is given to the NATS container,
	// from the Secret, under its user's name: the block is what
	// `pairdb nats-accounts --helm-env` prints for the example ids.
	env := natsValue(t, m.values, "container", "env").(map[string]any)
	rendered, err := natsauth.HelmEnv(exampleIDs, "pairdb-nats-auth")
	require.NoError(t, err)
	var want struct {
		Env map[string]any `yaml:"env"`
	}
	require.NoError(t, yaml.Unmarshal(rendered, &want))
	require.Equal(t, want.Env, env, "values.yaml container.env is stale: run `%s --helm-env`", exampleCommand)
	conf, err := os.ReadFile(filepath.Join("nats", "accounts.conf"))
	require.NoError(t, err)
	for _, v := range regexp.MustCompile(`password:\s*\$([A-Z0-9_]+)`).FindAllStringSubmatch(string(conf), -1) {
		require.Contains(t, env, v[1], "accounts.conf needs %s in the NATS pods' environment", v[1])
	}
}

// TestDockerfile checks the build targets exist and the image serves the
// ops port, runs as non-root and health-checks /healthz there.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	df := strings.ReplaceAll(string(raw), "\\\n", " ")

	builds := regexp.MustCompile(`go build [^&\n]*?-o (\S+) (\./\S+)`).FindAllStringSubmatch(df, -1)
	require.Len(t, builds, 2)
	require.Equal(t, "./cmd/pairdb", builds[0][2])
	for _, b := range builds {
		requireMainPackage(t, filepath.Join("..", b[2]))
	}
	require.Contains(t, df, "CGO_ENABLED=0")

	stages := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(df, -1)
	require.Len(t, stages, 2, "multi-stage build")
	require.True(t, strings.HasPrefix(stages[1][1], "gcr.io/distroless/static"), "runtime image %s", stages[1][1])

	user := regexp.MustCompile(`(?m)^USER (\S+)`).FindStringSubmatch(df)
	require.NotNil(t, user)
	require.NotContains(t, []string{"root", "0", "0:0"}, user[1])
	require.Regexp(t, `(?m)^EXPOSE `+strconv.Itoa(ops.DefaultPort)+`$`, df)
	hc := regexp.MustCompile(`(?m)^HEALTHCHECK .*$`).FindString(df)
	require.Contains(t, hc, "pairdb-healthcheck")
	require.Contains(t, hc, "127.0.0.1:"+strconv.Itoa(ops.DefaultPort)+ops.PathHealthz)
}

func requireMainPackage(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		if regexp.MustCompile(`(?m)^package main$`).Match(src) {
			return
		}
	}
	require.Failf(t, "not a command", "the Dockerfile builds %s, which has no package main", dir)
}
