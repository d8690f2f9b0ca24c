// Package natstest starts an embedded NATS server with JetStream for tests:
// a random port, storage in t.TempDir(), shut down at cleanup.
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/bus/embedded"
)

// Start runs a server for the test and returns it with a connection.
func Start(t testing.TB) (*server.Server, *nats.Conn) {
	t.Helper()
	s := StartServer(t, t.TempDir())
	return s, Connect(t, s)
}

// StartServer runs a server storing JetStream data in dir (reuse dir to
// restart a server with its data).
func StartServer(t testing.TB, dir string) *server.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{StoreDir: dir})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a connection closed at cleanup.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	return ConnectWith(t, s)
}

// ConnectWith opens a connection with opts, closed at cleanup.
func ConnectWith(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// ConnectCoordinator opens a connection whose replies arrive under the
// coordinators' inbox prefix, the only one under which storage nodes send
// the acks of forwarded writes.
func ConnectCoordinator(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	return ConnectWith(t, s, nats.CustomInboxPrefix(bus.CoordinatorInbox))
}
