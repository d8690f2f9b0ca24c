package embedded_test

import (
	"net"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus/embedded"
)

// TestStartFailsAtOnceOnATakenAddress: a port something else listens on is
// reported as such before the server starts, instead of after the
// readiness wait (10 s) the server would otherwise sit out.
func TestStartFailsAtOnceOnATakenAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	s, err := embedded.Start(embedded.Config{Listen: ln.Addr().String(), StoreDir: t.TempDir()})
	if s != nil {
		s.Shutdown()
	}
	require.Error(t, err)
	require.True(t, errors.Is(err, embedded.ErrAddrInUse), "%v", err)
	require.Contains(t, err.Error(), "NATS address "+ln.Addr().String()+" is already in use")
	require.NotContains(t, err.Error(), "did not become ready", "refused before the server starts, not after its readiness wait")
}

func TestStartOnAFreeAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	s, err := embedded.Start(embedded.Config{Listen: addr, StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer s.Shutdown()
	require.Equal(t, "nats://"+addr, s.ClientURL())
}
