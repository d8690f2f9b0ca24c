package cluster

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/bus/embedded"
	"github.com/pairdb/pairdb/membership"
	"github.com/pairdb/pairdb/storagenode"
)

// DevConfig describes an all-in-one cluster.
type DevConfig struct {
	// Listen is the embedded NATS address; "" picks a free port.
	Listen string
	// DataDir holds nats/ and one directory per storage node.
	DataDir string
	// Nodes is the number of storage nodes (default 3).
	Nodes int
	// NoSync skips fsync on storage nodes (benchmarks only).
	NoSync bool
	// CleanupGrace is how long storage nodes keep ranges they lost (0: the
	// node's default).
	CleanupGrace time.Duration
	// HeartbeatInterval is the storage nodes' heartbeat period (0: the
	// node's default, 1s).
	HeartbeatInterval time.Duration
	// HintRate paces each storage node's hint replay in hints per second
	// (0: the node's default).
	HintRate float64
	// DefaultTenantRF is the replication factor of tenant "default",
	// created if absent (default min(3, Nodes)).
	DefaultTenantRF uint32
	// Cluster are the settings the dev cluster bootstraps its ring with
	// (zero fields: the defaults); its coordinators are configured to match.
	Cluster     membership.Settings
	Coordinator CoordinatorConfig
	// NodeURL, when set, is the NATS URL storage node id connects to (a
	// fault proxy in front of the server, in tests); nil: the server's.
	NodeURL func(id string) string
	// Middleware wraps every part's endpoint handlers (tests inject
	// message faults with internal/faults).
	Middleware bus.Middleware
	Logger     *zap.Logger
	Metrics    *metrics.Set
}

// Dev is a running development cluster: an embedded NATS server, storage
// nodes and coordinators in one process, each part on its own connection as
// it would be in production.
type Dev struct {
	cfg DevConfig
	// Server is the embedded NATS server (replaced by RestartServer).
	Server *server.Server
	url    string
	mu     sync.Mutex
	nodes  map[string]*devNode
	coords []*devCoordinator
}

type devNode struct {
	nc   *nats.Conn
	node *StorageNode
}

type devCoordinator struct {
	nc  *nats.Conn
	svc *Coordinator
}

// StartDev starts the whole system. Close stops it.
func StartDev(ctx context.Context, cfg DevConfig) (*Dev, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("dev cluster needs a data directory")
	}
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	cfg.Cluster = cfg.Cluster.WithDefaults()
	if cfg.DefaultTenantRF == 0 {
		cfg.DefaultTenantRF = uint32(min(3, cfg.Nodes))
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	srv, err := embedded.Start(embedded.Config{Listen: cfg.Listen, StoreDir: filepath.Join(cfg.DataDir, "nats"), ServerName: "pairdb-dev"})
	if err != nil {
		return nil, err
	}
	d := &Dev{cfg: cfg, Server: srv, url: srv.ClientURL(), nodes: map[string]*devNode{}}
	if err := d.start(ctx); err != nil {
		_ = d.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return d, nil
}

func (d *Dev) start(ctx context.Context) error {
	nc, err := d.connectTo(d.url, "pairdb-dev-setup", bus.CoordinatorInbox)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := d.cfg.Coordinator
	cfg.StreamReplicas = 1
	if cfg.Logger == nil {
		cfg.Logger = d.cfg.Logger
	}
	store, closeStore, err := OpenTenantStore(ctx, nc, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	// The coordinator first: it creates the control plane's streams, which
	// storage nodes only wait for.
	c, err := d.StartCoordinator(ctx)
	if err != nil {
		return err
	}
	for _, id := range NodeIDs(d.cfg.Nodes) {
		if err := d.StartNode(id); err != nil {
			return err
		}
	}
	// A new data directory: the configured nodes become the first members.
	if err := c.Ring.Bootstrap(ctx, d.NodeIDs(), d.cfg.Cluster); err != nil {
		return err
	}
	if err := EnsureTenant(ctx, store, "default", d.cfg.DefaultTenantRF); err != nil {
		return err
	}
	t, err := store.Get(ctx, "default")
	if err != nil {
		return err
	}
	return c.RecordTenant(ctx, t, false)
}

// ClientURL is where clients connect.
func (d *Dev) ClientURL() string { return d.url }

// RestartServer shuts the embedded NATS server down and starts it again on
// the same address and JetStream directory: every part loses its
// connection, reconnects, and finds the control plane as it was (JetStream
// syncs every write).
func (d *Dev) RestartServer() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	addr := d.Server.Addr().String()
	d.Server.Shutdown()
	d.Server.WaitForShutdown()
	srv, err := embedded.Start(embedded.Config{Listen: addr, StoreDir: filepath.Join(d.cfg.DataDir, "nats"), ServerName: "pairdb-dev"})
	if err != nil {
		return errors.Wrap(err, "restart the embedded NATS server")
	}
	d.Server = srv
	return nil
}

// NodeIDs lists the configured storage nodes.
func (d *Dev) NodeIDs() []string { return NodeIDs(d.cfg.Nodes) }

// connectTo connects a part to NATS at url with its inbox prefix, as it
// connects in production (no authentication here, the prefixes still
// matter: storage nodes send forwarded writes' acks only to coordinator
// inboxes).
func (d *Dev) connectTo(url, name, inbox string) (*nats.Conn, error) {
	nc, err := nats.Connect(url, bus.PartOptions(name, inbox)...)
	if err != nil {
		return nil, errors.Wrapf(err, "connect %s to NATS", name)
	}
	return nc, nil
}

// StartNode starts (or restarts) storage node id on its data directory.
func (d *Dev) StartNode(id string) error {
	d.mu.Lock()
	url, nodeURL := d.url, d.cfg.NodeURL
	d.mu.Unlock()
	if nodeURL != nil {
		url = nodeURL(id)
	}
	return d.StartNodeVia(id, url)
}

// StartNodeVia starts storage node id connected to NATS at url (a fault
// proxy in front of the server, in tests).
func (d *Dev) StartNodeVia(id, url string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.nodes[id]; ok {
		return errors.Newf("storage node %s is already running", id)
	}
	nc, err := d.connectTo(url, "pairdb-storagenode-"+id, bus.NodeInbox(id))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := StartStorageNode(ctx, nc, storagenode.Config{
		ID:           id,
		DataDir:      filepath.Join(d.cfg.DataDir, id),
		Sync:         !d.cfg.NoSync,
		Subjects:     d.cfg.Coordinator.Subjects,
		CleanupGrace: d.cfg.CleanupGrace,
		// As a storage node process has it by default.
		WALMinSyncInterval: storagenode.DefaultWALMinSyncInterval,
		HintRate:           d.cfg.HintRate,
		HeartbeatInterval:  d.cfg.HeartbeatInterval,
		Middleware:         d.cfg.Middleware,
		Logger:             d.cfg.Logger.Named(id),
		Metrics:            d.cfg.Metrics,
	}, 1)
	if err != nil {
		nc.Close()
		return errors.Wrapf(err, "start storage node %s", id)
	}
	d.nodes[id] = &devNode{nc: nc, node: n}
	return nil
}

// Node returns running storage node id, or nil.
func (d *Dev) Node(id string) *StorageNode {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.nodes[id]; ok {
		return n.node
	}
	return nil
}

// StopNode stops storage node id, keeping its data.
func (d *Dev) StopNode(ctx context.Context, id string) error {
	d.mu.Lock()
	n, ok := d.nodes[id]
	delete(d.nodes, id)
	d.mu.Unlock()
	if !ok {
		return errors.Newf("storage node %s is not running", id)
	}
	err := n.node.Stop(ctx)
	n.nc.Close()
	return err
}

// StartCoordinator adds a coordinator to the queue group.
func (d *Dev) StartCoordinator(ctx context.Context) (*Coordinator, error) {
	return d.StartCoordinatorVia(ctx, d.url)
}

// StartCoordinatorVia adds a coordinator connected to NATS at url (a fault
// proxy in front of the server, in tests).
func (d *Dev) StartCoordinatorVia(ctx context.Context, url string) (*Coordinator, error) {
	nc, err := d.connectTo(url, "pairdb-coordinator", bus.CoordinatorInbox)
	if err != nil {
		return nil, err
	}
	cfg := d.cfg.Coordinator
	cfg.StreamReplicas = 1
	if cfg.Middleware == nil {
		cfg.Middleware = d.cfg.Middleware
	}
	if cfg.Cluster == (membership.Settings{}) {
		cfg.Cluster = d.cfg.Cluster
	}
	if cfg.Logger == nil {
		cfg.Logger = d.cfg.Logger.Named("coordinator")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = d.cfg.Metrics
	}
	svc, err := StartCoordinator(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	d.mu.Lock()
	d.coords = append(d.coords, &devCoordinator{nc: nc, svc: svc})
	d.mu.Unlock()
	return svc, nil
}

// StopCoordinator stops one coordinator started by this cluster.
func (d *Dev) StopCoordinator(ctx context.Context, svc *Coordinator) error {
	d.mu.Lock()
	i := slices.IndexFunc(d.coords, func(c *devCoordinator) bool { return c.svc == svc })
	if i < 0 {
		d.mu.Unlock()
		return errors.New("coordinator is not part of this cluster")
	}
	c := d.coords[i]
	d.coords = slices.Delete(d.coords, i, i+1)
	d.mu.Unlock()
	err := c.svc.Stop(ctx)
	c.nc.Close()
	return err
}

// Close stops coordinators first (no new requests), then storage nodes
// (flushing Pebble), then NATS.
func (d *Dev) Close(ctx context.Context) error {
	var errs error
	d.mu.Lock()
	coords := d.coords
	d.coords = nil
	d.mu.Unlock()
	for _, c := range coords {
		errs = errors.CombineErrors(errs, c.svc.Stop(ctx))
		c.nc.Close()
	}
	d.mu.Lock()
	ids := make([]string, 0, len(d.nodes))
	for id := range d.nodes {
		ids = append(ids, id)
	}
	d.mu.Unlock()
	for _, id := range ids {
		errs = errors.CombineErrors(errs, d.StopNode(ctx, id))
	}
	d.mu.Lock()
	srv := d.Server
	d.mu.Unlock()
	srv.Shutdown()
	srv.WaitForShutdown()
	return errs
}

// Coordinators lists the running coordinators, oldest first.
func (d *Dev) Coordinators() []*Coordinator {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Coordinator, 0, len(d.coords))
	for _, c := range d.coords {
		out = append(out, c.svc)
	}
	return out
}

// Metrics is the set every part of this cluster records into.
func (d *Dev) Metrics() *metrics.Set { return d.cfg.Metrics }

// WaitFolded blocks until every running coordinator and storage node has
// folded the ring log up to seq, or ctx ends.
func (d *Dev) WaitFolded(ctx context.Context, seq uint64) error {
	d.mu.Lock()
	rings := make([]interface {
		WaitFor(context.Context, uint64) error
	}, 0, len(d.nodes)+len(d.coords))
	for _, n := range d.nodes {
		rings = append(rings, n.node.ring)
	}
	for _, c := range d.coords {
		rings = append(rings, c.svc.Ring)
	}
	d.mu.Unlock()
	for _, r := range rings {
		if err := r.WaitFor(ctx, seq); err != nil {
			return err
		}
	}
	return nil
}

// SetNodeURL changes where storage nodes started from now on connect (see
// DevConfig.NodeURL).
func (d *Dev) SetNodeURL(f func(id string) string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg.NodeURL = f
}
