// Package jsbucket holds the small pieces every JetStream-backed store here
// shares: idempotent bucket setup and the default deadline for calls whose
// caller gave none.
package jsbucket

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultTimeout bounds a store call whose context has no deadline. nats.go
// already does this for single requests; watches and key listings stream
// and would otherwise wait for as long as the server stays silent.
const DefaultTimeout = 10 * time.Second

// EnsureKV creates the bucket, or updates it to cfg when it exists, so every
// process can call it at start in any order. It fails when the existing
// bucket cannot take cfg (for example a different storage type): silently
// running on a bucket with other durability settings than configured would
// be worse than not starting.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	ctx, cancel := WithDefaultTimeout(ctx)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, errors.Wrapf(err, "create or update JetStream KV bucket %q (storage %s, replicas %d, history %d, ttl %s)",
			cfg.Bucket, cfg.Storage, cfg.Replicas, cfg.History, cfg.TTL)
	}
	return kv, nil
}

// WithDefaultTimeout returns ctx unchanged when it has a deadline, else a
// child with DefaultTimeout. The cancel func must always be called.
func WithDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// IsConflict reports whether a conditional KV write (Create, Update, or a
// Delete/Purge with LastRevision) lost its compare-and-swap: the key exists
// or moved past the expected revision. nats.go maps most of these to
// ErrKeyExists or ErrKeyRevisionMismatch, but kv.Create over a delete marker
// returns the raw API error, and replicated streams report code 10164
// instead of 10071; a lost race must never be mistaken for an outage.
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// streamPoll is how often WaitStream looks for a stream that is missing.
const streamPoll = 250 * time.Millisecond

// WaitStream returns stream name once it exists, looking again every
// streamPoll until ctx ends; it never creates it. Storage nodes use it:
// only coordinators create the control plane's streams and buckets (a
// node's NATS user may not), so a node that starts first waits for them.
// waiting, when set, is called once if the stream is missing at first.
func WaitStream(ctx context.Context, js jetstream.JetStream, name string, waiting func()) (jetstream.Stream, error) {
	t := time.NewTicker(streamPoll)
	defer t.Stop()
	told := false
	for {
		st, err := js.Stream(ctx, name)
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, errors.Wrapf(err, "look up JetStream stream %s", name)
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, errors.Wrapf(ctx.Err(), "JetStream stream %s does not exist (a coordinator creates it at start)", name)
		}
	}
}
