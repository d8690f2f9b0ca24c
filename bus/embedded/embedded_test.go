package embedded_test

import (
	"net"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus/embedded"
)

// TestStartFailsAtOnceOnATakenAddress: a port something else listens on is
// reported as such, without the readiness wait (10 s) the server would
// otherwise sit out.
func TestStartFailsAtOnceOnATakenAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	began := time.Now()
	s, err := embedded.Start(embedded.Config{Listen: ln.Addr().String(), StoreDir: t.TempDir()})
	if s != nil {
		s.Shutdown()
	}
	require.Error(t, err)
	require.True(t, errors.Is(err, embedded.ErrAddrInUse), "%v", err)
	require.Contains(t, err.Error(), "NATS address "+ln.Addr().String()+" is already in use")
	require.Less(t, time.Since(began), 5*time.Second, "fails at once, not after the readiness wait")
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
