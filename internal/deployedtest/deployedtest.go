// Package deployedtest runs PairDB as deploy/nats ships it, for tests: a
// nats-server started in-process from deploy/nats/nats-server.conf (and the
// accounts.conf it includes) through nats-server's own config parser, with
// passwords the test sets in the environment, and every part on a
// connection of its own NATS user with its role's inbox prefix. Every
// permission violation any connection meets is recorded, so a test can
// require that the parts did nothing their users may not.
package deployedtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/cluster"
	"github.com/pairdb/pairdb/natsauth"
	"github.com/pairdb/pairdb/storagenode"
)

// Example ids of deploy/nats/accounts.conf.
var (
	Nodes   = []string{"pairdb-storage-0", "pairdb-storage-1", "pairdb-storage-2"}
	Tenants = []string{"acme"}
)

// Dir is deploy/nats in this repository.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "nats")
}

// Server is a nats-server running the shipped configuration.
type Server struct {
	*server.Server
	// passwords maps each user to its password.
	passwords map[string]string

	mu         sync.Mutex
	violations []string // "user: error", every connection's
	watchers   map[*nats.Conn]chan error
}

// StartServer starts nats-server from deploy/nats/nats-server.conf with a
// fresh password for every user in the environment, on a random port,
// alone (no routes), storing JetStream in a temporary directory. It uses
// t.Setenv: tests that call it cannot run in parallel.
func StartServer(t testing.TB, setenv func(key, value string)) *Server {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join(Dir(), "accounts.conf"))
	require.NoError(t, err)
	s := &Server{passwords: map[string]string{}, watchers: map[*nats.Conn]chan error{}}
	// Every user and its password variable, read from the file itself.
	users := regexp.MustCompile(`user:\s*"?([^",\s]+)"?\s*[,\n]\s*password:\s*\$([A-Z0-9_]+)`).FindAllStringSubmatch(string(conf), -1)
	require.NotEmpty(t, users, "accounts.conf names no users")
	for _, u := range users {
		pw := randomPassword(t)
		setenv(u[2], pw)
		s.passwords[u[1]] = pw
	}
	setenv("NATS_SERVER_NAME", "pairdb-test")
	for i := 1; i <= 3; i++ {
		setenv(fmt.Sprintf("NATS_ROUTE_%d", i), fmt.Sprintf("nats-route://127.0.0.1:%d", 1+i))
	}
	opts, err := server.ProcessConfigFile(filepath.Join(Dir(), "nats-server.conf"))
	require.NoError(t, err)
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "", 0
	opts.Cluster = server.ClusterOpts{}
	opts.Routes = nil
	opts.StoreDir = t.TempDir()
	opts.LameDuckDuration, opts.LameDuckGracePeriod = 0, 0
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	require.True(t, srv.ReadyForConnections(10*time.Second), "nats-server did not start")
	s.Server = srv
	return s
}

func randomPassword(t testing.TB) string {
	var b [16]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return hex.EncodeToString(b[:])
}

// Password is user's password.
func (s *Server) Password(user string) string { return s.passwords[user] }

// Connect opens a connection as user with inbox prefix inbox ("" keeps
// _INBOX), closed at cleanup. Every asynchronous error it gets is recorded
// (Violations) and, while Watch holds, passed on.
func (s *Server) Connect(t testing.TB, user, inbox string) *nats.Conn {
	t.Helper()
	nc, err := s.Dial(user, s.passwords[user], inbox)
	require.NoError(t, err, "connect as %s", user)
	t.Cleanup(nc.Close)
	return nc
}

// Dial is Connect with an explicit password and no cleanup.
func (s *Server) Dial(user, password, inbox string) (*nats.Conn, error) {
	opts := append(bus.PartOptions("test-"+user, inbox), nats.UserInfo(user, password),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			s.mu.Lock()
			s.violations = append(s.violations, user+": "+err.Error())
			ch := s.watchers[nc]
			s.mu.Unlock()
			if ch != nil {
				select {
				case ch <- err:
				default:
				}
			}
		}))
	return nats.Connect(s.ClientURL(), opts...)
}

// Violations lists the asynchronous errors every connection got so far.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Watch passes nc's asynchronous errors to the returned channel until stop.
func (s *Server) Watch(nc *nats.Conn) (errs <-chan error, stop func()) {
	ch := make(chan error, 64)
	s.mu.Lock()
	s.watchers[nc] = ch
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.watchers, nc)
		s.mu.Unlock()
	}
}

// Denied reports whether err is the server refusing op ("Publish" or
// "Subscription") on subject.
func Denied(err error, op, subject string) bool {
	return err != nil && strings.Contains(err.Error(), fmt.Sprintf("Permissions Violation for %s to %q", op, subject))
}

// Cluster is PairDB's parts on a Server, each as its own user.
type Cluster struct {
	t   testing.TB
	S   *Server
	log *zap.Logger

	mu     sync.Mutex
	coords []runningCoordinator
	nodes  map[string]*runningNode
	// Tweak adjusts each storage node's config before it starts.
	Tweak func(*storagenode.Config)
}

type runningCoordinator struct {
	c  *cluster.Coordinator
	nc *nats.Conn
}

type runningNode struct {
	n  *cluster.StorageNode
	nc *nats.Conn
}

// NewCluster returns an empty cluster on s; parts stop at cleanup.
func NewCluster(t testing.TB, s *Server, log *zap.Logger) *Cluster {
	c := &Cluster{t: t, S: s, log: log, nodes: map[string]*runningNode{}}
	t.Cleanup(c.stopAll)
	return c
}

// StartCoordinator starts a coordinator as user "coordinator".
func (c *Cluster) StartCoordinator(ctx context.Context, cfg cluster.CoordinatorConfig) *cluster.Coordinator {
	c.t.Helper()
	nc, err := c.S.Dial(natsauth.CoordinatorUser, c.S.Password(natsauth.CoordinatorUser), bus.CoordinatorInbox)
	require.NoError(c.t, err)
	if cfg.Logger == nil {
		cfg.Logger = c.log.Named("coordinator")
	}
	coord, err := cluster.StartCoordinator(ctx, nc, cfg)
	if err != nil {
		nc.Close()
	}
	require.NoError(c.t, err)
	c.mu.Lock()
	c.coords = append(c.coords, runningCoordinator{c: coord, nc: nc})
	c.mu.Unlock()
	return coord
}

// StartNode starts storage node id as its own user on dir.
func (c *Cluster) StartNode(ctx context.Context, id, dir string) *cluster.StorageNode {
	c.t.Helper()
	nc, err := c.S.Dial(id, c.S.Password(id), bus.NodeInbox(id))
	require.NoError(c.t, err)
	cfg := storagenode.DefaultConfig(id, dir)
	cfg.CacheBytes = 8 << 20
	cfg.Logger = c.log.Named(id)
	if c.Tweak != nil {
		c.Tweak(&cfg)
	}
	n, err := cluster.StartStorageNode(ctx, nc, cfg, 1)
	if err != nil {
		nc.Close()
	}
	require.NoError(c.t, err)
	c.mu.Lock()
	c.nodes[id] = &runningNode{n: n, nc: nc}
	c.mu.Unlock()
	return n
}

// Node is running storage node id, or nil.
func (c *Cluster) Node(id string) *cluster.StorageNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.nodes[id]; ok {
		return r.n
	}
	return nil
}

// StopNode stops storage node id, keeping its data.
func (c *Cluster) StopNode(ctx context.Context, id string) {
	c.t.Helper()
	c.mu.Lock()
	r := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	require.NotNil(c.t, r, "storage node %s is not running", id)
	err := r.n.Stop(ctx)
	r.nc.Close()
	require.NoError(c.t, err)
}

func (c *Cluster) stopAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c.mu.Lock()
	coords, nodes := c.coords, c.nodes
	c.coords, c.nodes = nil, map[string]*runningNode{}
	c.mu.Unlock()
	for _, co := range coords {
		_ = co.c.Stop(ctx)
		co.nc.Close()
	}
	for _, r := range nodes {
		_ = r.n.Stop(ctx)
		r.nc.Close()
	}
}
