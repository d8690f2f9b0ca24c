// Package embedded starts an in-process nats-server with JetStream, for
// `pairdb dev` and for tests.
package embedded

import (
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats-server/v2/server"
)

// ErrAddrInUse marks a Start that failed because something else listens on
// the configured address.
var ErrAddrInUse = errors.New("address already in use")

// DefaultMaxPayload lets a 1 MiB value fit even as base64 JSON with headers.
const DefaultMaxPayload = 8 << 20

// Config describes the embedded server.
type Config struct {
	// Listen is host:port; port "-1" or an empty Listen picks a free port
	// on 127.0.0.1.
	Listen string
	// StoreDir holds JetStream data.
	StoreDir string
	// MaxPayload in bytes; 0 means DefaultMaxPayload.
	MaxPayload int32
	// ServerName names the server in monitoring and clusters.
	ServerName string
}

// Start runs the server and waits until it accepts connections.
func Start(cfg Config) (*server.Server, error) {
	host, port := "127.0.0.1", -1
	if cfg.Listen != "" {
		h, p, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, errors.Wrapf(err, "listen address %q must be host:port", cfg.Listen)
		}
		host = h
		if port, err = strconv.Atoi(p); err != nil {
			return nil, errors.Wrapf(err, "listen port in %q", cfg.Listen)
		}
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded NATS needs a JetStream store directory")
	}
	maxPayload := cfg.MaxPayload
	if maxPayload == 0 {
		maxPayload = DefaultMaxPayload
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		// Acknowledged control-plane writes (idempotency records, ring
		// events, hints) must survive a crash: fsync every write.
		SyncAlways: true,
		MaxPayload: maxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	if port > 0 {
		if err := probeListen(net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
			return nil, err
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, errors.Wrap(err, "configure embedded NATS server")
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.Newf("embedded NATS server on %s did not become ready within 10s", cfg.Listen)
	}
	return s, nil
}

// probeListen binds addr for a moment. nats-server reports a failed listen
// only to its logger (off here) and then never becomes ready, so without the
// probe a taken port costs the whole readiness wait and says nothing about
// why. The port could be taken between the probe and the server's own bind;
// that race ends in the readiness timeout, as before.
func probeListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// The syscall's text adds nothing to this message; it stays
			// reachable as the secondary error.
			inUse := errors.Newf("NATS address %s is already in use (another NATS server, or another pairdb dev?)", addr)
			return errors.Mark(errors.WithSecondaryError(inUse, err), ErrAddrInUse)
		}
		return errors.Wrapf(err, "embedded NATS server: listen on %s", addr)
	}
	return ln.Close()
}
