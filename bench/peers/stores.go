package main

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bench"
)

// Store names, in the order a repetition runs them by default.
const (
	storePairDB         = "pairdb"
	storePairDBBatch    = "pairdb-batch"
	storeTransport      = "transport"
	storeTransportProcs = "transport-procs"
	storeJSKV           = "jskv"
	storeEtcd           = "etcd"
)

var allStores = []string{storePairDB, storePairDBBatch, storeTransport, storeTransportProcs, storeJSKV, storeEtcd}

// readyWait bounds the wait for a peer cluster to elect its leaders.
const readyWait = 60 * time.Second

// conns are the driver's connections to the stores, one per system, shared
// by all of its clients as `pairdb bench` shares one NATS connection.
type conns struct {
	pairdb *nats.Conn       // PairDB's NATS server (also the transports')
	js     *nats.Conn       // the three-server NATS cluster
	etcd   *clientv3.Client // the three etcd members
	// pdb is repetition n's PairDB store: pairdb-batch uses pairdb's, with
	// its records and the contexts its puts saw.
	pdb map[int]*bench.PairDB
}

func dialNATS(urls, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(urls, nats.Name(name), nats.MaxReconnects(-1))
	return nc, errors.Wrapf(err, "connect to NATS at %s", urls)
}

// dial opens a connection to every store cfg names an address for.
func dial(cfg config) (*conns, error) {
	c := &conns{}
	var err error
	if c.pairdb, err = dialNATS(cfg.pairdbServer, "pairdb-bench-peers"); err != nil {
		return nil, err
	}
	if cfg.jskvServers != "" {
		if c.js, err = dialNATS(cfg.jskvServers, "pairdb-bench-peers-jskv"); err != nil {
			c.close()
			return nil, err
		}
	}
	if cfg.etcdEndpoints != "" {
		c.etcd, err = clientv3.New(clientv3.Config{
			Endpoints: strings.Split(cfg.etcdEndpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		})
		if err != nil {
			c.close()
			return nil, errors.Wrap(err, "etcd client")
		}
	}
	return c, nil
}

func (c *conns) close() {
	for _, nc := range []*nats.Conn{c.pairdb, c.js} {
		if nc != nil {
			nc.Close()
		}
	}
	if c.etcd != nil {
		_ = c.etcd.Close()
	}
}

// available says whether cfg lets the driver reach store.
func available(cfg config, store string) bool {
	switch store {
	case storePairDBBatch:
		return cfg.batch > 1
	case storeTransportProcs:
		return cfg.transportBase != ""
	case storeJSKV:
		return cfg.jskvServers != ""
	case storeEtcd:
		return cfg.etcdEndpoints != ""
	}
	return true
}

// opened is a store ready for a repetition: load says whether it keeps
// data (and so gets the records loaded first); done releases what open made.
type opened struct {
	store bench.Store
	load  bool
	done  func(context.Context) error
}

func nothing(context.Context) error { return nil }

// open prepares store for repetition rep: PairDB on that repetition's
// tenant, JetStream KV on a fresh bucket, etcd emptied.
func (c *conns) open(ctx context.Context, cfg config, store string, rep int) (opened, error) {
	switch store {
	case storePairDB, storePairDBBatch:
		db := c.pdb[rep]
		if db == nil {
			db = bench.NewPairDB(c.pairdb, bench.PairDBOptions{
				Tenant: cfg.tenantPrefix + strconv.Itoa(rep), Consistency: cfg.consistency, Idempotency: cfg.idempotency,
			})
			if c.pdb == nil {
				c.pdb = map[int]*bench.PairDB{}
			}
			c.pdb[rep] = db
			return opened{store: db, load: true, done: nothing}, nil
		}
		return opened{store: db, done: nothing}, nil
	case storeTransport:
		dialer := func(name string) (*nats.Conn, error) { return dialNATS(cfg.pairdbServer, name) }
		t, err := bench.StartTransport(c.pairdb, dialer, cfg.valueSize, cfg.timeout)
		if err != nil {
			return opened{}, err
		}
		return opened{store: t, done: t.Stop}, nil
	case storeTransportProcs:
		return opened{store: bench.ConnectTransport(c.pairdb, cfg.transportBase, cfg.timeout), done: nothing}, nil
	case storeJSKV:
		kv, err := retryReady(ctx, func(ctx context.Context) (*bench.KV, error) {
			return bench.NewKVReplicas(ctx, c.js, cfg.jskvReplicas)
		})
		if err != nil {
			return opened{}, err
		}
		return opened{store: kv, load: true, done: kv.Delete}, nil
	case storeEtcd:
		e := &etcdStore{c: c.etcd}
		if _, err := retryReady(ctx, e.empty); err != nil {
			return opened{}, err
		}
		return opened{store: e, load: true, done: func(ctx context.Context) error { _, err := e.empty(ctx); return err }}, nil
	}
	return opened{}, errors.Newf("unknown store %q", store)
}

// retryReady retries fn for up to readyWait: a peer cluster that just
// started may not have a leader yet.
func retryReady[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(readyWait)
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := fn(actx)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return v, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// etcdStore is etcd's KV API through the official client: linearizable
// gets (etcd's default, a quorum read index) and puts acknowledged after
// the Raft quorum persisted them (etcd fsyncs its WAL on every commit).
type etcdStore struct{ c *clientv3.Client }

func (e *etcdStore) Get(ctx context.Context, key string) (bench.ReadResult, error) {
	r, err := e.c.Get(ctx, key)
	if err != nil {
		return bench.ReadResult{}, errors.Wrap(err, "etcd get")
	}
	return bench.ReadResult{Found: r.Count > 0}, nil
}

func (e *etcdStore) Put(ctx context.Context, key string, value []byte, _ *bench.ReadResult) error {
	_, err := e.c.Put(ctx, key, string(value))
	return errors.Wrap(err, "etcd put")
}

// empty deletes every key and compacts the history away, so each
// repetition loads into an empty keyspace as the other stores do.
func (e *etcdStore) empty(ctx context.Context) (struct{}, error) {
	r, err := e.c.Delete(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		return struct{}{}, errors.Wrap(err, "etcd delete all")
	}
	_, err = e.c.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical())
	if errors.Is(err, rpctypes.ErrCompacted) {
		err = nil // nothing was written since the last compaction
	}
	return struct{}{}, errors.Wrap(err, "etcd compact")
}
