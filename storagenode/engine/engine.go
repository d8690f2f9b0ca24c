// Package engine is a storage node's Pebble store: one dvv.Object per
// (tenant, key), versions minted under a per-key lock and acknowledged only
// after their batch is committed (DESIGN.md §5, §7).
//
// Concurrency contract: every method may be called from any number of
// goroutines at once. Apply and Merge on the same key serialise on a striped
// lock; different keys proceed in parallel and share fsyncs through Pebble's
// group commit. Methods called after Close return an UNAVAILABLE error
// rather than touching a closed database.
package engine

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/cockroachdb/errors"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	"github.com/pairdb/pairdb/keyspace"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

const (
	// DefaultCacheBytes is the block cache size when Options.CacheBytes is 0.
	DefaultCacheBytes int64 = 64 << 20
	// DefaultWALMinSyncInterval is Pebble's own suggestion for
	// Options.WALMinSyncInterval (the engine itself defaults to 0; the
	// storage node uses this).
	DefaultWALMinSyncInterval = 500 * time.Microsecond

	// memTableBytes is larger than Pebble's 4 MiB default: small objects at
	// high write rates would otherwise flush tiny L0 files constantly, and
	// every extra L0 file is read amplification on the read path.
	memTableBytes = 64 << 20

	// bloomBitsPerKey gives a ~1% false-positive rate, so a point read of a
	// missing key (every read of a never-written key, every first write)
	// rarely touches a data block.
	bloomBitsPerKey = 10

	// lockStripes bounds the memory of per-key locking. Two keys sharing a
	// stripe only serialise with each other, which is harmless at this width.
	lockStripes = 1024

	incarnationBytes = 8 // 16 hex characters
)

// Options configures Open.
type Options struct {
	// Sync makes every Apply and Merge fsync its batch before returning.
	// Leave it on in production: with it off, a crash can lose writes that
	// were already acknowledged and replicated, and this incarnation would
	// then mint the same dots again for different values. Off is for
	// benchmarks only.
	Sync bool
	// CacheBytes sizes the block cache; 0 means DefaultCacheBytes.
	CacheBytes int64
	// WALMinSyncInterval spaces the WAL's fsyncs at least this far apart
	// (0: sync as soon as asked). A sync requested sooner waits, and the
	// writes arriving meanwhile share it: fewer, larger group commits. On
	// the 2-core development VM, where every fsync is a costly exit to the
	// hypervisor, 500µs gave 10-15% more synced writes per second at 16
	// clients (bench/layout.sh).
	WALMinSyncInterval time.Duration
	// Logger receives Pebble's own log lines and storage events; nil is
	// silent.
	Logger *zap.Logger
	// Metrics receives Pebble's metrics (see metrics.go), labelled with
	// MetricsNode; nil exports none.
	Metrics     *metrics.Set
	MetricsNode string
	// MaxObjectBytes is the largest object (encoded) a write may store:
	// what one NATS message can carry, less room for the envelope, so that
	// every stored object can still be read, repaired and transferred. 0
	// means DefaultMaxObjectBytes.
	MaxObjectBytes int
	// Now is the clock deadlines are judged by; nil means time.Now.
	Now func() time.Time
	// FS is the filesystem Pebble works on; nil means the real one. Tests
	// wrap it (pebble's vfs/errorfs) to fail a write where they choose.
	FS vfs.FS
}

// DefaultMaxObjectBytes fits NATS's default 1 MiB max_payload with room for
// the request around the object.
const DefaultMaxObjectBytes = 1<<20 - 64<<10

// Stats is a cheap snapshot of the store's state.
type Stats struct {
	// DiskBytes approximates the bytes on disk (tables, WAL, manifests).
	DiskBytes uint64
	// MemTableBytes is memory held by memtables not yet flushed.
	MemTableBytes uint64
	// ReadAmp is the number of sorted runs a point read may consult.
	ReadAmp int
	// CompactionDebtBytes estimates the compaction work outstanding.
	CompactionDebtBytes uint64
	// BlockCacheHits and BlockCacheMisses count block cache lookups.
	BlockCacheHits, BlockCacheMisses int64
}

// ErrClosed is the cause of every error returned after Close.
var ErrClosed = errors.New("storage engine is closed")

// stripe is padded to a cache line so neighbouring stripes taken by
// different cores do not share one.
type stripe struct {
	sync.Mutex
	_ [64 - 8]byte
}

// Engine is an open store. Create it with Open.
type Engine struct {
	log         *zap.Logger
	incarnation string
	writeOpts   *pebble.WriteOptions
	locks       [lockStripes]stripe

	// mu guards db against Close: operations hold it shared, Close takes it
	// exclusively, so Close waits for in-flight operations and nothing
	// touches db after it is closed. Holding it shared across a commit does
	// not serialise writers.
	mu     sync.RWMutex
	db     *pebble.DB
	closed bool

	// keys approximates the number of stored keys; see Keys.
	keys atomic.Int64
	// metrics exports Pebble's metrics; nil without Options.Metrics.
	metrics *pebbleMetrics

	// dots is the node-wide dot sequence Apply mints from (see purge.go).
	dots *dotCounter

	maxObjectBytes int
	now            func() time.Time
}

// Open opens (creating if needed) the store in dir. On first open of an
// empty dir it mints and durably records a new incarnation id.
func Open(dir string, opts Options) (*Engine, error) {
	if dir == "" {
		return nil, errors.New("engine: data dir must be set")
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cacheBytes := opts.CacheBytes
	if cacheBytes == 0 {
		cacheBytes = DefaultCacheBytes
	}
	if cacheBytes < 0 {
		return nil, errors.Newf("engine: cache size must not be negative, got %d", cacheBytes)
	}

	cache := pebble.NewCache(cacheBytes)
	// The DB takes its own reference; dropping ours means Close frees the
	// cache.
	defer cache.Unref()
	po := &pebble.Options{
		Cache:                       cache,
		FormatMajorVersion:          pebble.FormatNewest,
		MemTableSize:                memTableBytes,
		MemTableStopWritesThreshold: 4,
		Logger:                      log.Named("pebble").WithOptions(zap.AddCallerSkip(1)).Sugar(),
		EventListener:               eventListener(log),
		FS:                          opts.FS,
	}
	if d := opts.WALMinSyncInterval; d > 0 {
		po.WALMinSyncInterval = func() time.Duration { return d }
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(bloomBitsPerKey)
		po.Levels[i].FilterType = pebble.TableFilter
	}

	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, errors.Wrapf(err, "engine: open pebble in %s", dir)
	}
	inc, err := loadOrMintIncarnation(db)
	if err != nil {
		return nil, errors.CombineErrors(errors.Wrapf(err, "engine: incarnation of %s", dir), db.Close())
	}
	wo := pebble.NoSync
	if opts.Sync {
		wo = pebble.Sync
	}
	keys, err := countKeys(db)
	if err != nil {
		return nil, errors.CombineErrors(errors.Wrapf(err, "engine: count keys in %s", dir), db.Close())
	}
	dots, err := loadDotCounter(db, inc)
	if err != nil {
		return nil, errors.CombineErrors(errors.Wrapf(err, "engine: dot counter of %s", dir), db.Close())
	}
	log.Info("storage engine open", zap.String("dir", dir), zap.String("incarnation", inc),
		zap.Bool("sync", opts.Sync), zap.Int64("cache_bytes", cacheBytes), zap.Uint64("keys", keys))
	e := &Engine{log: log, incarnation: inc, writeOpts: wo, db: db, dots: dots,
		maxObjectBytes: opts.MaxObjectBytes, now: opts.Now}
	if e.maxObjectBytes <= 0 {
		e.maxObjectBytes = DefaultMaxObjectBytes
	}
	if e.now == nil {
		e.now = time.Now
	}
	e.keys.Store(int64(keys))
	e.metrics = registerMetrics(opts.Metrics, opts.MetricsNode, e.readMetrics)
	return e, nil
}

// loadOrMintIncarnation returns the stored incarnation, minting one only
// when the store holds no data at all. Data without an incarnation means the
// metadata was lost; the safe answer is to refuse rather than guess.
func loadOrMintIncarnation(db *pebble.DB) (string, error) {
	v, closer, err := db.Get(metaIncarnation)
	if err == nil {
		inc := string(v)
		return inc, closer.Close()
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return "", errors.Wrap(err, "read incarnation")
	}
	lo, hi := dataSpan()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return "", errors.Wrap(err, "scan for data")
	}
	hasData := it.First()
	if err := errors.CombineErrors(it.Error(), it.Close()); err != nil {
		return "", errors.Wrap(err, "scan for data")
	}
	if hasData {
		return "", errors.New("the store holds data but no incarnation id; refusing to mint one " +
			"(wipe the data dir to rejoin as a new incarnation)")
	}
	var b [incarnationBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", errors.Wrap(err, "generate incarnation")
	}
	inc := hex.EncodeToString(b[:])
	// Synced regardless of Options.Sync: an incarnation that could vanish
	// after dots were minted under it would let a later one collide.
	if err := db.Set(metaIncarnation, []byte(inc), pebble.Sync); err != nil {
		return "", errors.Wrap(err, "store incarnation")
	}
	return inc, nil
}

func eventListener(log *zap.Logger) *pebble.EventListener {
	log = log.Named("pebble")
	return &pebble.EventListener{
		BackgroundError: func(err error) { log.Error("background error", zap.Error(err)) },
		DataCorruption: func(i pebble.DataCorruptionInfo) {
			log.Error("data corruption", zap.Stringer("info", i))
		},
		DiskSlow:        func(i pebble.DiskSlowInfo) { log.Warn("disk slow", zap.Stringer("info", i)) },
		LowDiskSpace:    func(i pebble.LowDiskSpaceInfo) { log.Warn("low disk space", zap.Stringer("info", i)) },
		WriteStallBegin: func(i pebble.WriteStallBeginInfo) { log.Warn("write stall begin", zap.String("reason", i.Reason)) },
		WriteStallEnd:   func() { log.Info("write stall end") },
	}
}

// Incarnation is this data dir's id, the DVV actor of every version minted
// here. A wiped dir gets a new one, so counters of an actor never repeat.
func (e *Engine) Incarnation() string { return e.incarnation }

// Get returns what is stored for (tenant, key); found is false only when
// nothing is (a key holding only tombstones is found).
func (e *Engine) Get(tenant, key string) (dvv.Object, bool, error) {
	if err := validate(tenant, key); err != nil {
		return dvv.Object{}, false, err
	}
	if err := e.acquire(); err != nil {
		return dvv.Object{}, false, err
	}
	defer e.mu.RUnlock()
	return e.get(dataKey(tenant, keyspace.Hash(tenant, key), key))
}

// Stats reads Pebble's metrics; cheap enough to call every heartbeat.
func (e *Engine) Stats() (Stats, error) {
	if err := e.acquire(); err != nil {
		return Stats{}, err
	}
	defer e.mu.RUnlock()
	m := e.db.Metrics()
	return Stats{
		DiskBytes:           m.DiskSpaceUsage(),
		MemTableBytes:       m.MemTable.Size,
		ReadAmp:             m.ReadAmp(),
		CompactionDebtBytes: m.Compact.EstimatedDebt,
		BlockCacheHits:      m.BlockCache.Hits,
		BlockCacheMisses:    m.BlockCache.Misses,
	}, nil
}

// Close waits for in-flight operations and closes Pebble. Calling it again
// is a no-op.
func (e *Engine) Close() error {
	e.metrics.unregister()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if err := e.db.Close(); err != nil {
		return errors.Wrap(err, "engine: close pebble")
	}
	e.log.Info("storage engine closed", zap.String("incarnation", e.incarnation))
	return nil
}

// acquire takes the shared close guard; the caller must RUnlock on success.
func (e *Engine) acquire() error {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return status.Wrap(pb.ErrorCode_UNAVAILABLE, ErrClosed, "storage node is shutting down; retry on another replica")
	}
	return nil
}

func (e *Engine) lock(h uint64) *stripe { return &e.locks[h%lockStripes] }

func (e *Engine) get(k []byte) (dvv.Object, bool, error) {
	v, closer, err := e.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return dvv.Object{}, false, nil
	}
	if err != nil {
		return dvv.Object{}, false, errors.Wrap(err, "engine: read")
	}
	var o pb.Object
	// proto.Unmarshal copies bytes fields, so v may be released right after.
	err = proto.Unmarshal(v, &o)
	if cerr := closer.Close(); err == nil && cerr != nil {
		return dvv.Object{}, false, errors.Wrap(cerr, "engine: release read")
	}
	if err != nil {
		return dvv.Object{}, false, errors.Wrapf(err, "engine: stored object at %q is corrupt", k)
	}
	return dvvpb.ObjectFromProto(&o), true, nil
}

// commit writes one object (already encoded) and any records that go with
// it (origin records) in one batch.
//
// Group commit: every writer commits with its own pebble.Sync batch while
// holding only its key's stripe lock. Pebble's commit pipeline appends
// concurrent batches to the WAL in order and one fsync covers every batch
// queued behind it, so N concurrent writers cost about one fsync, not N.
// A process-wide lock held across Commit would defeat this and cap
// throughput at one write per fsync.
func (e *Engine) commit(k, v []byte, records ...record) error {
	b := e.db.NewBatch()
	defer func() { _ = b.Close() }()
	if err := b.Set(k, v, nil); err != nil {
		return errors.Wrap(err, "engine: stage write")
	}
	for _, r := range records {
		if err := b.Set(r.k, r.v, nil); err != nil {
			return errors.Wrap(err, "engine: stage origin record")
		}
	}
	if err := b.Commit(e.writeOpts); err != nil {
		return errors.Wrap(err, "engine: commit write")
	}
	return nil
}

// record is one key-value pair written beside an object.
type record struct{ k, v []byte }

func validate(tenant, key string) error {
	// The tenant rule is also the layout invariant: no 0x00 in a tenant id.
	if err := keyspace.ValidateTenantID(tenant); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid tenant id")
	}
	if err := keyspace.ValidateKey(key); err != nil {
		return status.Wrap(pb.ErrorCode_INVALID_ARGUMENT, err, "invalid key")
	}
	return nil
}
