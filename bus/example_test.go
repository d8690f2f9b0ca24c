package bus_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/bus/embedded"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// Example serves one endpoint the way every PairDB part does and calls it:
// the handler gets a decoded request and returns a response or a typed
// error; the caller gets the response, or the error with its code, whether
// the request went as protobuf (as here) or as JSON (as `nats req` sends).
func Example() {
	dir, err := os.MkdirTemp("", "bus-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	// A service with one endpoint; the limiter bounds the requests handled
	// at once, and every request gets Timeout to finish.
	server := &bus.Server{Conn: nc, Limiter: bus.NewLimiter(16), Timeout: 5 * time.Second, Log: zap.NewNop()}
	svc, err := bus.AddService(nc, micro.Config{Name: "example", Version: "1.0.0"})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = svc.Stop(context.Background()) }()
	get := bus.Endpoint(server, "get",
		func() *pb.GetRequest { return &pb.GetRequest{} }, func() *pb.GetResponse { return &pb.GetResponse{} },
		func(_ context.Context, subject string, req *pb.GetRequest) (*pb.GetResponse, error) {
			if req.GetKey() != "hello" {
				return nil, status.Errorf(pb.ErrorCode_KEY_NOT_FOUND, "key %q not found", req.GetKey())
			}
			return &pb.GetResponse{Key: req.GetKey(), Found: true, Value: []byte("world")}, nil
		})
	subject := bus.Subjects{Prefix: "example"}.KV("acme", bus.OpGet)
	if err := svc.AddEndpoint("get", subject, get); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp := new(pb.GetResponse)
	if err := bus.Request(ctx, nc, subject, &pb.GetRequest{Key: "hello"}, resp); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s\n", subject, resp.GetValue())
	err = bus.Request(ctx, nc, subject, &pb.GetRequest{Key: "nope"}, new(pb.GetResponse))
	fmt.Println(status.CodeOf(err), bus.IsReply(err))
	// Output:
	// example.v1.kv.acme.get: world
	// KEY_NOT_FOUND true
}

// ExampleSubjects shows the subject families: the key-value API per
// tenant, the admin API, a storage node's endpoints and its heartbeat.
func ExampleSubjects() {
	s := bus.Subjects{} // the default prefix, pairdb
	fmt.Println(s.KV("acme", bus.OpPut))
	fmt.Println(s.Admin("tenants", "create"))
	fmt.Println(s.Node("node-1", bus.OpApply))
	fmt.Println(s.Heartbeat("node-1"))
	// Output:
	// pairdb.v1.kv.acme.put
	// pairdb.v1.admin.tenants.create
	// pairdb.v1.node.node-1.apply
	// pairdb.v1.heartbeat.node-1
}
