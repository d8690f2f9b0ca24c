package bench

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Dialer opens a NATS connection with the given client name.
type Dialer func(name string) (*nats.Conn, error)

// transportReplicas is the fan-out of the transport baseline: N=3.
const transportReplicas = 3

// transportMaxInFlight caps the requests the baseline responder runs at
// once, as the coordinator's limiter does.
const transportMaxInFlight = 4096

// Transport is the messaging ceiling of a QUORUM operation with N=3: a
// responder that, for each request, sends it to three no-op replicas and
// answers at the second reply. It has the shape of PairDB's path (client
// → coordinator → replicas → coordinator → client, each part on its own
// connection) without any of the work. Puts send the request body to the
// replicas, which answer with a short ack; gets send the short request,
// and the replicas answer with a value of the configured size.
type Transport struct {
	client    *nats.Conn
	responder *nats.Conn
	replicas  []*nats.Conn
	subs      []*nats.Subscription
	lim       *bus.Limiter
	base      string
	timeout   time.Duration
	// ownConns: Stop closes the responder's and replicas' connections
	// (StartTransport dialled them).
	ownConns bool
	stopOnce sync.Once
	stopErr  error
}

// StartTransport starts the responder and its replicas on connections of
// their own, subscribed under a private random subject, and uses conn to
// send requests.
func StartTransport(conn *nats.Conn, dial Dialer, valueSize int, timeout time.Duration) (*Transport, error) {
	t := &Transport{client: conn, lim: bus.NewLimiter(transportMaxInFlight), base: NewTransportBase(), timeout: timeout, ownConns: true}
	if err := t.start(dial, valueSize); err != nil {
		_ = t.Stop(context.Background())
		return nil, err
	}
	return t, nil
}

// NewTransportBase is a fresh private subject prefix for a transport.
func NewTransportBase() string { return "_pairdb_bench." + client.NewIdempotencyKey() }

// ConnectTransport sends requests over conn to a transport whose responder
// and replicas run elsewhere (ServeTransportPart, in processes of their
// own, so the baseline pays the same context switches as PairDB's
// processes) under the subject prefix base.
func ConnectTransport(conn *nats.Conn, base string, timeout time.Duration) *Transport {
	return &Transport{client: conn, lim: bus.NewLimiter(transportMaxInFlight), base: base, timeout: timeout}
}

// Transport roles for ServeTransportPart.
const (
	RoleResponder = "responder"
	RoleReplica   = "replica"
)

// ServeTransportPart serves one part of the transport baseline on nc under
// base: the responder, or replica number index (0 to 2). Stop the returned
// transport to end it; nc stays the caller's.
func ServeTransportPart(nc *nats.Conn, base, role string, index, valueSize int, timeout time.Duration) (*Transport, error) {
	t := &Transport{lim: bus.NewLimiter(transportMaxInFlight), base: base, timeout: timeout}
	var err error
	switch role {
	case RoleResponder:
		t.responder = nc
		err = t.serveResponder()
	case RoleReplica:
		if index < 0 || index >= transportReplicas {
			return nil, errors.Newf("replica index %d out of range 0..%d", index, transportReplicas-1)
		}
		err = t.serveReplica(nc, index, valueSize)
	default:
		return nil, errors.Newf("unknown transport role %q (want %s or %s)", role, RoleResponder, RoleReplica)
	}
	if err != nil {
		_ = t.Stop(context.Background())
		return nil, err
	}
	return t, nil
}

func (t *Transport) start(dial Dialer, valueSize int) error {
	for i := range transportReplicas {
		nc, err := dial("pairdb-bench-replica")
		if err != nil {
			return err
		}
		t.replicas = append(t.replicas, nc)
		if err := t.serveReplica(nc, i, valueSize); err != nil {
			return err
		}
	}
	nc, err := dial("pairdb-bench-responder")
	if err != nil {
		return err
	}
	t.responder = nc
	return t.serveResponder()
}

func (t *Transport) serveReplica(nc *nats.Conn, i, valueSize int) error {
	ack := mustMarshal(&pb.MergeResponse{})
	value := mustMarshal(&pb.ReadResponse{Object: &pb.Object{Siblings: []*pb.StoredSibling{{Value: make([]byte, valueSize)}}}})
	for op, body := range map[string][]byte{bus.OpPut: ack, bus.OpGet: value} {
		sub, err := nc.Subscribe(t.replicaSubject(i, op), func(m *nats.Msg) { _ = m.Respond(body) })
		if err != nil {
			return errors.Wrap(err, "subscribe baseline replica")
		}
		t.subs = append(t.subs, sub)
	}
	return errors.Wrap(nc.Flush(), "flush baseline replica subscriptions")
}

func (t *Transport) serveResponder() error {
	for _, op := range []string{bus.OpPut, bus.OpGet} {
		sub, err := t.responder.Subscribe(t.subject(op), func(m *nats.Msg) { t.serve(op, m) })
		if err != nil {
			return errors.Wrap(err, "subscribe baseline responder")
		}
		t.subs = append(t.subs, sub)
	}
	return errors.Wrap(t.responder.Flush(), "flush baseline responder subscriptions")
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err) // only fixed, valid messages are marshalled here
	}
	return b
}

func (t *Transport) subject(op string) string { return t.base + "." + op }

func (t *Transport) replicaSubject(i int, op string) string {
	return t.base + ".replica." + string(rune('0'+i)) + "." + op
}

// serve fans one request out on its own goroutine, as the coordinator does,
// and answers with the second replica reply.
func (t *Transport) serve(op string, m *nats.Msg) {
	ok := t.lim.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
		defer cancel()
		replies := make(chan *nats.Msg, transportReplicas)
		for i := range transportReplicas {
			go func() {
				r, err := t.responder.RequestWithContext(ctx, t.replicaSubject(i, op), m.Data)
				if err != nil {
					r = nil
				}
				replies <- r
			}()
		}
		acks, failed := 0, 0
		for acks < 2 && failed <= transportReplicas-2 {
			select {
			case r := <-replies:
				if r == nil {
					failed++
					continue
				}
				if acks++; acks == 2 {
					_ = m.Respond(r.Data)
				}
			case <-ctx.Done():
				return
			}
		}
	})
	if !ok {
		refusal := nats.NewMsg(m.Reply)
		refusal.Header.Set(micro.ErrorCodeHeader, pb.ErrorCode_UNAVAILABLE.String())
		_ = m.RespondMsg(refusal)
	}
}

// Get sends a get-shaped request through the fan-out.
func (t *Transport) Get(ctx context.Context, key string) (ReadResult, error) {
	_, err := t.request(ctx, bus.OpGet, &pb.GetRequest{Key: key})
	return ReadResult{Found: err == nil}, err
}

// Put sends a put-shaped request through the fan-out.
func (t *Transport) Put(ctx context.Context, key string, value []byte, _ *ReadResult) error {
	_, err := t.request(ctx, bus.OpPut, &pb.PutRequest{Key: key, Value: value})
	return err
}

func (t *Transport) request(ctx context.Context, op string, req proto.Message) (*nats.Msg, error) {
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, errors.Wrap(err, "encode baseline request")
	}
	m, err := t.client.RequestWithContext(ctx, t.subject(op), data)
	if err != nil {
		return nil, status.Wrap(status.CodeOf(err), err, "baseline %s", op)
	}
	if m.Header.Get(micro.ErrorCodeHeader) != "" {
		return nil, status.Errorf(pb.ErrorCode_UNAVAILABLE, "baseline responder refused a request: too many in flight")
	}
	return m, nil
}

// Stop unsubscribes, waits (bounded by ctx) for the fan-outs in flight and
// closes the connections it opened. It may be called more than once.
func (t *Transport) Stop(ctx context.Context) error {
	t.stopOnce.Do(func() {
		ctx, cancel := bus.WithDefaultTimeout(ctx)
		defer cancel()
		var errs error
		for _, s := range t.subs {
			if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = errors.CombineErrors(errs, errors.Wrap(err, "unsubscribe baseline"))
			}
		}
		errs = errors.CombineErrors(errs, t.lim.Drain(ctx))
		if t.ownConns {
			if t.responder != nil {
				t.responder.Close()
			}
			for _, nc := range t.replicas {
				nc.Close()
			}
		}
		t.stopErr = errs
	})
	return t.stopErr
}

// KV is JetStream KV put and get on a bucket made for the run.
type KV struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
}

// NewKV creates a fresh file-backed bucket (one replica, history 1).
func NewKV(ctx context.Context, nc *nats.Conn) (*KV, error) {
	return NewKVReplicas(ctx, nc, 1)
}

// NewKVReplicas creates a fresh file-backed bucket with history 1 and the
// given number of replicas (3 on a three-server NATS cluster).
func NewKVReplicas(ctx context.Context, nc *nats.Conn, replicas int) (*KV, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, errors.Wrap(err, "open JetStream")
	}
	bucket := "pairdb_bench_" + client.NewIdempotencyKey()
	ctx, cancel := bus.WithDefaultTimeout(ctx)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Storage: jetstream.FileStorage, Replicas: replicas, History: 1})
	if err != nil {
		return nil, errors.Wrapf(err, "create JetStream KV bucket %s", bucket)
	}
	return &KV{js: js, kv: kv, bucket: bucket}, nil
}

// Get reads key; a missing key is not an error.
func (k *KV) Get(ctx context.Context, key string) (ReadResult, error) {
	_, err := k.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ReadResult{}, nil
	}
	if err != nil {
		return ReadResult{}, status.Wrap(status.CodeOf(err), err, "JetStream KV get")
	}
	return ReadResult{Found: true}, nil
}

// Put writes key (the server acknowledges once stored).
func (k *KV) Put(ctx context.Context, key string, value []byte, _ *ReadResult) error {
	if _, err := k.kv.Put(ctx, key, value); err != nil {
		return status.Wrap(status.CodeOf(err), err, "JetStream KV put")
	}
	return nil
}

// Delete removes the bucket.
func (k *KV) Delete(ctx context.Context) error {
	ctx, cancel := bus.WithDefaultTimeout(ctx)
	defer cancel()
	return errors.Wrapf(k.js.DeleteKeyValue(ctx, k.bucket), "delete JetStream KV bucket %s", k.bucket)
}
