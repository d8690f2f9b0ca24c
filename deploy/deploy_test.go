package deploy

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/pairdb/pairdb/ops"
)

// Names the manifests must agree on.
const (
	namespace       = "pairdb"
	coordinatorName = "pairdb-coordinator"
	storageName     = "pairdb-storage"
	postgresName    = "pairdb-postgres"
	secretName      = "pairdb-secrets"
	opsPortName     = "ops"
	imageRepo       = "ghcr.io/pairdb/pairdb"
)

// object is one Kubernetes manifest, decoded into the few fields checked.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec       spec              `yaml:"spec"`
	StringData map[string]string `yaml:"stringData"`
	file       string
}

type spec struct {
	// Deployment, StatefulSet.
	Replicas    *int   `yaml:"replicas"`
	ServiceName string `yaml:"serviceName"`
	Selector    struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
	VolumeClaimTemplates []struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
	} `yaml:"volumeClaimTemplates"`
	// Service (its selector is a plain map: decoded separately).
	ClusterIP string        `yaml:"clusterIP"`
	Ports     []servicePort `yaml:"ports"`
	// HorizontalPodAutoscaler.
	ScaleTargetRef struct {
		Kind string `yaml:"kind"`
		Name string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	MinReplicas int `yaml:"minReplicas"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
		RunAsUser    int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers     []container `yaml:"containers"`
	InitContainers []container `yaml:"initContainers"`
	Volumes        []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
		EmptyDir *struct {
			Medium string `yaml:"medium"`
		} `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe    *probe `yaml:"startupProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

type servicePort struct {
	Name       string    `yaml:"name"`
	Port       int       `yaml:"port"`
	TargetPort yaml.Node `yaml:"targetPort"`
}

// manifests holds every parsed deploy/ file.
type manifests struct {
	objects []*object
	// selectors of Services and PodDisruptionBudgets, by kind/name.
	selectors map[string]map[string]string
	values    map[string]any // deploy/nats/values.yaml
	dashboard map[string]any // deploy/grafana/pairdb-dashboard.json
}

func (m *manifests) get(t *testing.T, kind, name string) *object {
	t.Helper()
	for _, o := range m.objects {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	require.Failf(t, "missing manifest", "%s %s is in no file under deploy/", kind, name)
	return nil
}

func (m *manifests) kind(kind string) []*object {
	var out []*object
	for _, o := range m.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// load parses every YAML (multi-document) and JSON file under deploy/.
func load(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{selectors: map[string]map[string]string{}}
	parsed := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			parsed++
			m.loadYAML(t, path, raw)
		case ".json":
			parsed++
			var v map[string]any
			require.NoError(t, json.Unmarshal(raw, &v), "%s is not valid JSON", path)
			if path == filepath.Join("grafana", "pairdb-dashboard.json") {
				m.dashboard = v
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.GreaterOrEqual(t, parsed, 7, "fewer manifest files than expected under deploy/")
	require.NotNil(t, m.values, "nats/values.yaml not found")
	require.NotNil(t, m.dashboard, "grafana/pairdb-dashboard.json not found")
	return m
}

func (m *manifests) loadYAML(t *testing.T, path string, raw []byte) {
	t.Helper()
	if path == filepath.Join("nats", "values.yaml") {
		require.NoError(t, yaml.Unmarshal(raw, &m.values), path)
		return
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for i := 0; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "%s: document %d", path, i)
		o := &object{file: path}
		require.NoError(t, node.Decode(o), "%s: document %d", path, i)
		require.NotEmpty(t, o.Kind, "%s: document %d has no kind", path, i)
		require.NotEmpty(t, o.APIVersion, "%s: document %d has no apiVersion", path, i)
		if o.Kind == "Kustomization" {
			continue
		}
		require.NotEmpty(t, o.Metadata.Name, "%s: document %d has no name", path, i)
		if o.Kind != "Namespace" {
			require.Equal(t, namespace, o.Metadata.Namespace, "%s %s", o.Kind, o.Metadata.Name)
		}
		if o.Kind == "Service" || o.Kind == "PodDisruptionBudget" {
			var sel struct {
				Spec struct {
					Selector yaml.Node `yaml:"selector"`
				} `yaml:"spec"`
			}
			require.NoError(t, node.Decode(&sel))
			labels := map[string]string{}
			var pdb struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			}
			if o.Kind == "Service" {
				require.NoError(t, sel.Spec.Selector.Decode(&labels))
			} else {
				require.NoError(t, sel.Spec.Selector.Decode(&pdb))
				labels = pdb.MatchLabels
			}
			m.selectors[o.Kind+"/"+o.Metadata.Name] = labels
		}
		m.objects = append(m.objects, o)
	}
}

// portOf resolves a probe or Service target port (a name or a number)
// against a container's ports; ok is false when it names no port.
func portOf(c container, n yaml.Node) (int, bool) {
	if p, err := strconv.Atoi(n.Value); err == nil {
		return p, slices.ContainsFunc(c.Ports, func(cp struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		}) bool {
			return cp.ContainerPort == p
		})
	}
	for _, cp := range c.Ports {
		if cp.Name == n.Value {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func pairdbContainer(t *testing.T, o *object) container {
	t.Helper()
	for _, c := range o.Spec.Template.Spec.Containers {
		if strings.HasPrefix(c.Image, imageRepo+":") {
			return c
		}
	}
	require.Failf(t, "no PairDB container", "%s %s runs no %s image", o.Kind, o.Metadata.Name, imageRepo)
	return container{}
}

func (c container) env(name string) (value string, secretKey string, fieldPath string, index int) {
	for i, e := range c.Env {
		if e.Name != name {
			continue
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secretKey = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fieldPath = e.ValueFrom.FieldRef.FieldPath
		}
		return e.Value, secretKey, fieldPath, i
	}
	return "", "", "", -1
}

// flag returns the value after --name in args.
func flag(args []string, name string) (string, bool) {
	i := slices.Index(args, "--"+name)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

// TestWorkloadsPortsAndProbes checks every PairDB workload serves the ops
// port of the code, probes /healthz and /readyz on it, is scraped there and
// runs as non-root; and that Services, HPAs and PDBs point at real pods and
// ports.
func TestWorkloadsPortsAndProbes(t *testing.T) {
	m := load(t)
	workloads := []*object{m.get(t, "Deployment", coordinatorName), m.get(t, "StatefulSet", storageName)}
	for _, w := range workloads {
		c := pairdbContainer(t, w)
		what := w.Kind + " " + w.Metadata.Name
		port, ok := portOf(c, yaml.Node{Value: opsPortName})
		require.True(t, ok, "%s: no container port named %q", what, opsPortName)
		require.Equal(t, ops.DefaultPort, port, "%s: ops port", what)

		probes := []struct {
			name string
			p    *probe
			path string
		}{{"liveness", c.LivenessProbe, ops.PathHealthz}, {"readiness", c.ReadinessProbe, ops.PathReadyz}, {"startup", c.StartupProbe, ops.PathHealthz}}
		for _, pr := range probes {
			if pr.p == nil && pr.name == "startup" {
				continue
			}
			require.NotNil(t, pr.p, "%s: no %s probe", what, pr.name)
			require.NotNil(t, pr.p.HTTPGet, "%s: %s probe is not an HTTP GET", what, pr.name)
			require.Equal(t, pr.path, pr.p.HTTPGet.Path, "%s: %s probe path", what, pr.name)
			got, ok := portOf(c, pr.p.HTTPGet.Port)
			require.True(t, ok, "%s: %s probe port %q is no container port", what, pr.name, pr.p.HTTPGet.Port.Value)
			require.Equal(t, ops.DefaultPort, got, "%s: %s probe port", what, pr.name)
		}

		ann := w.Spec.Template.Metadata.Annotations
		require.Equal(t, "true", ann["prometheus.io/scrape"], what)
		require.Equal(t, strconv.Itoa(ops.DefaultPort), ann["prometheus.io/port"], what)
		require.Equal(t, ops.PathMetrics, ann["prometheus.io/path"], what)

		require.True(t, w.Spec.Template.Spec.SecurityContext.RunAsNonRoot, "%s must run as non-root", what)
		require.NotZero(t, w.Spec.Template.Spec.SecurityContext.RunAsUser, "%s: runAsUser", what)
		require.NotNil(t, c.SecurityContext.AllowPrivilegeEscalation, what)
		require.False(t, *c.SecurityContext.AllowPrivilegeEscalation, what)
		require.True(t, selects(w.Spec.Selector.MatchLabels, w.Spec.Template.Metadata.Labels), "%s: selector does not match its pods", what)
	}

	// Every Service selects pods, and its target ports are their ports.
	for _, svc := range m.kind("Service") {
		sel := m.selectors["Service/"+svc.Metadata.Name]
		var matched []*object
		for _, o := range m.objects {
			if (o.Kind == "Deployment" || o.Kind == "StatefulSet") && selects(sel, o.Spec.Template.Metadata.Labels) {
				matched = append(matched, o)
			}
		}
		require.NotEmpty(t, matched, "Service %s selects no pods", svc.Metadata.Name)
		for _, sp := range svc.Spec.Ports {
			for _, o := range matched {
				found := false
				for _, c := range o.Spec.Template.Spec.Containers {
					if p, ok := portOf(c, sp.TargetPort); ok {
						found = true
						if sp.Name == opsPortName {
							require.Equal(t, ops.DefaultPort, p, "Service %s port %s", svc.Metadata.Name, sp.Name)
							require.Equal(t, ops.DefaultPort, sp.Port, "Service %s port %s", svc.Metadata.Name, sp.Name)
						}
					}
				}
				require.True(t, found, "Service %s targets port %q, which %s %s does not have", svc.Metadata.Name, sp.TargetPort.Value, o.Kind, o.Metadata.Name)
			}
		}
	}

	for _, hpa := range m.kind("HorizontalPodAutoscaler") {
		target := m.get(t, hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name)
		require.GreaterOrEqual(t, hpa.Spec.MinReplicas, 2, "HPA %s: one coordinator is a single point of failure", hpa.Metadata.Name)
		require.Equal(t, "Deployment", target.Kind)
	}
	for _, pdb := range m.kind("PodDisruptionBudget") {
		sel := m.selectors["PodDisruptionBudget/"+pdb.Metadata.Name]
		require.True(t, slices.ContainsFunc(workloads, func(w *object) bool { return selects(sel, w.Spec.Template.Metadata.Labels) }),
			"PodDisruptionBudget %s selects no PairDB pods", pdb.Metadata.Name)
	}
	require.Len(t, m.kind("HorizontalPodAutoscaler"), 1)
	require.Len(t, m.kind("PodDisruptionBudget"), 2)
}

// storageNodeIDs are the StatefulSet's pod names, which are the node ids.
func storageNodeIDs(t *testing.T, m *manifests) []string {
	t.Helper()
	sts := m.get(t, "StatefulSet", storageName)
	require.NotNil(t, sts.Spec.Replicas)
	ids := make([]string, *sts.Spec.Replicas)
	for i := range ids {
		ids[i] = sts.Metadata.Name + "-" + strconv.Itoa(i)
	}
	return ids
}

// TestStorageNodeIdentityAndVolume checks node ids come from the pod name and
// the data directory is the claimed volume.
func TestStorageNodeIdentityAndVolume(t *testing.T) {
	m := load(t)
	sts := m.get(t, "StatefulSet", storageName)
	c := pairdbContainer(t, sts)
	require.Equal(t, "storagenode", c.Args[0])

	_, _, fieldPath, _ := c.env("PAIRDB_NODE_ID")
	require.Equal(t, "metadata.name", fieldPath, "PAIRDB_NODE_ID must be the pod name: stable across restarts and rescheduling")

	data, ok := flag(c.Args, "data")
	require.True(t, ok, "storagenode needs --data")
	var claims []string
	for _, v := range sts.Spec.VolumeClaimTemplates {
		claims = append(claims, v.Metadata.Name)
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == data {
			require.Contains(t, claims, vm.Name, "--data %s is mounted from %q, not from a volumeClaimTemplate", data, vm.Name)
			mounted = true
		}
	}
	require.True(t, mounted, "--data %s is not a volume mount", data)

	headless := m.get(t, "Service", sts.Spec.ServiceName)
	require.Equal(t, "None", headless.Spec.ClusterIP, "the StatefulSet's serviceName must be a headless Service")

	// Each node logs in as its own NATS user with its own password, which
	// no other node can read: only the init container mounts the Secret of
	// every node's password, and writes the node's settings file (the NATS
	// URL with the node's user and password) into a memory volume the
	// storage node container mounts read-only.
	_, _, _, urlIndex := c.env("NATS_URL")
	require.Equal(t, -1, urlIndex, "NATS_URL would override the settings file")
	file, _, _, _ := c.env("PAIRDB_CONFIG")
	require.Len(t, sts.Spec.Template.Spec.InitContainers, 1)
	init := sts.Spec.Template.Spec.InitContainers[0]
	_, _, initID, _ := init.env("PAIRDB_NODE_ID")
	require.Equal(t, "metadata.name", initID)
	script := strings.Join(init.Command, " ")
	require.Contains(t, script, "nats://%s:%s@nats:4222")
	require.Contains(t, script, `"$PAIRDB_NODE_ID" "$(cat "/passwords/$PAIRDB_NODE_ID")"`)
	require.Contains(t, script, "> "+file)
	volumes := map[string]string{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		switch {
		case v.Secret != nil:
			volumes[v.Name] = "secret/" + v.Secret.SecretName
		case v.EmptyDir != nil:
			volumes[v.Name] = "emptyDir/" + v.EmptyDir.Medium
		}
	}
	mounts := func(c container) map[string]string {
		out := map[string]string{}
		for _, vm := range c.VolumeMounts {
			out[volumes[vm.Name]] = vm.MountPath
		}
		return out
	}
	require.Equal(t, "/passwords", mounts(init)["secret/pairdb-storage-nats"])
	require.NotContains(t, mounts(c), "secret/pairdb-storage-nats", "the storage node must not see the other nodes' passwords")
	require.Equal(t, filepath.Dir(file), mounts(c)["emptyDir/Memory"])
	require.Equal(t, filepath.Dir(file), mounts(init)["emptyDir/Memory"])
	for _, vm := range c.VolumeMounts {
		if volumes[vm.Name] == "emptyDir/Memory" {
			require.True(t, vm.ReadOnly, "the storage node mounts its credentials read-only")
		}
	}
	// The example Secret has a password for every node of the StatefulSet.
	nodeSecret := m.get(t, "Secret", "pairdb-storage-nats")
	for _, id := range storageNodeIDs(t, m) {
		require.Contains(t, nodeSecret.StringData, id)
	}
}

// TestCoordinatorConfiguration checks the coordinators' storage node list,
// secrets and replica settings agree with the other manifests.
func TestCoordinatorConfiguration(t *testing.T) {
	m := load(t)
	dep := m.get(t, "Deployment", coordinatorName)
	c := pairdbContainer(t, dep)
	require.Equal(t, "coordinator", c.Args[0])

	// Both parts create control-plane streams: with as many replicas as
	// the NATS cluster has servers.
	natsReplicas := strconv.Itoa(natsValue(t, m.values, "config", "cluster", "replicas").(int))
	for _, w := range []*object{dep, m.get(t, "StatefulSet", storageName)} {
		replicas, ok := flag(pairdbContainer(t, w).Args, "stream-replicas")
		require.True(t, ok, "%s needs --stream-replicas", w.Metadata.Name)
		require.Equal(t, natsReplicas, replicas, "%s: --stream-replicas must equal the NATS cluster size", w.Metadata.Name)
	}

	secret := m.get(t, "Secret", secretName)
	for _, name := range []string{"PAIRDB_POSTGRES_URL", "NATS_URL"} {
		value, ref, _, i := c.env(name)
		require.GreaterOrEqual(t, i, 0, "coordinator env %s", name)
		require.Empty(t, value, "%s holds credentials: take it from a Secret", name)
		require.True(t, strings.HasPrefix(ref, secretName+"/"), "%s: from secret %q", name, ref)
		require.Contains(t, secret.StringData, strings.TrimPrefix(ref, secretName+"/"), "%s: key missing from the example Secret", name)
	}
	for _, arg := range c.Args {
		require.NotContains(t, arg, "postgres://", "no database URL in args: it would show in the pod spec")
	}

	// The example database URL points at the reference PostgreSQL.
	u, err := url.Parse(secret.StringData["postgres-url"])
	require.NoError(t, err)
	require.Equal(t, postgresName, u.Hostname())
	pgSvc := m.get(t, "Service", postgresName)
	require.Equal(t, u.Port(), strconv.Itoa(pgSvc.Spec.Ports[0].Port))
	pg := pgSvc.Spec.Ports[0]
	require.Equal(t, "postgres", pg.Name)
	pgc := m.get(t, "StatefulSet", postgresName).Spec.Template.Spec.Containers[0]
	db, _, _, _ := pgc.env("POSTGRES_DB")
	user, _, _, _ := pgc.env("POSTGRES_USER")
	require.Equal(t, "/"+db, u.Path)
	require.Equal(t, user, u.User.Username())

	// Both NATS URLs reach the chart's client Service on the NATS port.
	nu, err := url.Parse(secret.StringData["nats-coordinator-url"])
	require.NoError(t, err)
	require.Equal(t, "nats:4222", nu.Host)
}

func natsValue(t *testing.T, v any, path ...string) any {
	t.Helper()
	for _, k := range path {
		mv, ok := v.(map[string]any)
		require.True(t, ok, "nats values: %s is not a map", k)
		v, ok = mv[k]
		require.True(t, ok, "nats values: no %s in %v", k, path)
	}
	return v
}
