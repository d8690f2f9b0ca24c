package tests

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/cluster"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// startBenchCluster runs a dev cluster with fsync on, as in production.
func startBenchCluster(b *testing.B) (*cluster.Dev, *nats.Conn) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := cluster.StartDev(ctx, cluster.DevConfig{DataDir: b.TempDir()})
	require.NoError(b, err)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
	nc, err := nats.Connect(d.ClientURL())
	require.NoError(b, err)
	b.Cleanup(nc.Close)
	return d, nc
}

// BenchmarkPut measures QUORUM puts of 128-byte values from parallel
// clients, with the idempotency key the Go client always sends and without
// one (a plain NATS request), to show what the idempotency record costs.
func BenchmarkPut(b *testing.B) {
	_, nc := startBenchCluster(b)
	c := client.New(nc)
	value := make([]byte, 128)
	var seq atomic.Int64
	b.Run("idempotent", func(b *testing.B) {
		b.SetParallelism(8) // 16 clients on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Put(context.Background(), fmt.Sprintf("key-%d", seq.Add(1)), value); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("plain", func(b *testing.B) {
		b.SetParallelism(8)
		subject := bus.Subjects{}.KV("default", bus.OpPut)
		b.RunParallel(func(p *testing.PB) {
			for p.Next() {
				req := &pb.PutRequest{Key: fmt.Sprintf("key-%d", seq.Add(1)), Value: value}
				if err := bus.Request(context.Background(), nc, subject, req, new(pb.PutResponse)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkGet measures QUORUM gets of existing keys from parallel clients.
func BenchmarkGet(b *testing.B) {
	_, nc := startBenchCluster(b)
	c := client.New(nc)
	const keys = 1000
	for i := range keys {
		_, err := c.Put(context.Background(), fmt.Sprintf("key-%d", i), make([]byte, 128))
		require.NoError(b, err)
	}
	var seq atomic.Int64
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Get(context.Background(), fmt.Sprintf("key-%d", seq.Add(1)%keys)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
