package engine_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/storagenode/engine"
)

// TestFailedCommitAfterForwardStopsTheNode fails the write-ahead log's
// sync under a mint that has already forwarded its version. Pebble treats a
// failed WAL write as fatal (an fsync that failed cannot be retried: the
// kernel may have dropped the pages), and so does the node: the mint never
// answers, so the coordinator cannot count this replica, and learns the
// outcome from the replicas the version was forwarded to. What must not
// happen is an answer as if nothing were written. Reopened on a healthy
// disk, the store does not hold the version.
func TestFailedCommitAfterForwardStopsTheNode(t *testing.T) {
	dir := t.TempDir()
	walFails := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if strings.HasSuffix(op.Path, ".log") && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && op.Kind != errorfs.OpFileClose {
			return errorfs.ErrInjected
		}
		return nil
	})}
	// A fatal log line panics here instead of exiting, so the test sees it.
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WithFatalHook(zapcore.WriteThenPanic)))
	e, err := engine.Open(dir, engine.Options{Sync: true, CacheBytes: 8 << 20, Logger: log, FS: errorfs.Wrap(vfs.Default, walFails)})
	require.NoError(t, err)
	_, err = e.Apply("t", "before", nil, []byte("v"), false, dvv.Siblings, 0, 1, nil)
	require.NoError(t, err)

	var forwarded []dvv.Object
	walFails.On()
	require.Panics(t, func() {
		_, _ = e.Mint(engine.Write{Tenant: "t", Key: "k", Value: []byte("lost"), Policy: dvv.Siblings, NowMs: 1,
			Deadline: time.Now().Add(time.Minute), Forward: func(o dvv.Object, _ []byte, _ bool) { forwarded = append(forwarded, o) }})
	}, "a failed WAL sync under a mint must not be answered")
	require.Len(t, forwarded, 1, "the version was forwarded before the commit failed")
	// The broken instance is abandoned, as the process would be.

	// What a restart finds on disk (a copy: the broken instance holds the
	// directory's lock).
	copied := t.TempDir()
	names, err := vfs.Default.List(dir)
	require.NoError(t, err)
	for _, name := range names {
		if name != "LOCK" {
			require.NoError(t, vfs.Copy(vfs.Default, filepath.Join(dir, name), filepath.Join(copied, name)))
		}
	}
	re, err := engine.Open(copied, engine.Options{Sync: true, CacheBytes: 8 << 20, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, re.Close()) })
	_, found, err := re.Get("t", "before")
	require.NoError(t, err)
	require.True(t, found)
	_, found, err = re.Get("t", "k")
	require.NoError(t, err)
	require.False(t, found, "a version whose commit failed is not stored")
}
