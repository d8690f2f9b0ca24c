package jsbucket_test

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/internal/natstest"
	"github.com/pairdb/pairdb/jetstream/jsbucket"
)

func TestEnsureKVAndIsConflict(t *testing.T) {
	_, nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cfg := jetstream.KeyValueConfig{Bucket: "b", History: 1, Storage: jetstream.FileStorage}
	kv, err := jsbucket.EnsureKV(ctx, js, cfg)
	require.NoError(t, err)
	_, err = jsbucket.EnsureKV(ctx, js, cfg) // idempotent
	require.NoError(t, err)
	cfg.Storage = jetstream.MemoryStorage // cannot change storage in place
	_, err = jsbucket.EnsureKV(ctx, js, cfg)
	require.ErrorContains(t, err, `bucket "b"`)

	rev, err := kv.Create(ctx, "k", []byte("1"))
	require.NoError(t, err)
	_, err = kv.Create(ctx, "k", []byte("2"))
	require.True(t, jsbucket.IsConflict(err), "%v", err)
	_, err = kv.Update(ctx, "k", []byte("2"), rev+10)
	require.True(t, jsbucket.IsConflict(err), "%v", err)
	err = kv.Delete(ctx, "k", jetstream.LastRevision(rev+10))
	require.True(t, jsbucket.IsConflict(err), "%v", err)

	// Over a delete marker, kv.Create CASes on the marker's revision and
	// returns the raw API error when it loses.
	require.NoError(t, kv.Delete(ctx, "k"))
	_, err = kv.Create(ctx, "k", []byte("3"))
	require.NoError(t, err)

	require.False(t, jsbucket.IsConflict(nil))
	require.False(t, jsbucket.IsConflict(jetstream.ErrKeyNotFound))
	require.False(t, jsbucket.IsConflict(errors.New("boom")))
}

func TestWithDefaultTimeout(t *testing.T) {
	ctx, cancel := jsbucket.WithDefaultTimeout(context.Background())
	defer cancel()
	dl, ok := ctx.Deadline()
	require.True(t, ok)
	require.WithinDuration(t, time.Now().Add(jsbucket.DefaultTimeout), dl, time.Second)

	parent, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	same, scancel := jsbucket.WithDefaultTimeout(parent)
	defer scancel()
	require.Equal(t, parent, same)
}
