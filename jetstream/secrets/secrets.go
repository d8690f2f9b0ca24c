// Package secrets keeps the cluster's secrets in a JetStream KV bucket that
// only coordinators may read (see deploy/nats): today one, the key that
// seals causal contexts (package causal). The first coordinator to start
// creates it; every other one reads the same key, so a context sealed by any
// coordinator opens at every other.
package secrets

import (
	"context"
	"crypto/rand"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pairdb/pairdb/causal"
	"github.com/pairdb/pairdb/jetstream/jsbucket"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

const (
	// Bucket is the secrets bucket.
	Bucket = "pairdb_secrets"
	// contextKeyName holds the current context-sealing key.
	contextKeyName = "context-key-1"
	// ContextKeyID is the id tokens sealed with that key carry.
	ContextKeyID = 1
)

// ContextKey returns the cluster's context-sealing key, creating it on first
// use. Creation is create-if-absent, so coordinators starting together
// agree on one key. replicas is the bucket's replication (3 on a cluster).
func ContextKey(ctx context.Context, js jetstream.JetStream, replicas int) ([]byte, error) {
	kv, err := jsbucket.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "PairDB cluster secrets (coordinators only)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "open the secrets bucket")
	}
	key := make([]byte, causal.KeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, errors.Wrap(err, "generate the context key")
	}
	_, err = kv.Create(ctx, contextKeyName, key)
	switch {
	case err == nil:
		return key, nil
	case !jsbucket.IsConflict(err):
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "store the context key")
	}
	e, err := kv.Get(ctx, contextKeyName)
	if err != nil {
		return nil, status.Wrap(pb.ErrorCode_UNAVAILABLE, err, "read the context key")
	}
	if len(e.Value()) != causal.KeyBytes {
		return nil, errors.Newf("the context key in bucket %s is %d bytes, want %d", Bucket, len(e.Value()), causal.KeyBytes)
	}
	return e.Value(), nil
}
