package engine_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// BenchmarkApplyParallel writes distinct keys from many goroutines. With
// Sync on, throughput far above one write per fsync shows group commit at
// work: concurrent commits share fsyncs. The parallelism is set well above
// GOMAXPROCS because the writers spend their time waiting on the disk.
func BenchmarkApplyParallel(b *testing.B) {
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%t", sync), func(b *testing.B) {
			e, err := engine.Open(b.TempDir(), engine.Options{Sync: sync, Logger: zap.NewNop()})
			require.NoError(b, err)
			defer func() { require.NoError(b, e.Close()) }()
			value := make([]byte, 256)
			var seq atomic.Int64
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key := fmt.Sprintf("key-%d", seq.Add(1))
					if _, err := e.Apply("bench", key, nil, value, false, dvv.Siblings, 0, 1, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkApplySerial is the single-writer baseline: with Sync on, each
// write pays a whole fsync, which BenchmarkApplyParallel amortises.
func BenchmarkApplySerial(b *testing.B) {
	for _, sync := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%t", sync), func(b *testing.B) {
			e, err := engine.Open(b.TempDir(), engine.Options{Sync: sync, Logger: zap.NewNop()})
			require.NoError(b, err)
			defer func() { require.NoError(b, e.Close()) }()
			value := make([]byte, 256)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := e.Apply("bench", fmt.Sprintf("key-%d", i), nil, value, false, dvv.Siblings, 0, 1, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
