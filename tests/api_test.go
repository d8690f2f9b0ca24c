package tests

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// jsonRequest sends a JSON body the way `nats req ... -H Content-Type:application/json` does.
func (h *harness) jsonRequest(subject, body string) (map[string]any, nats.Header) {
	h.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Header.Set("Content-Type", "application/json")
	msg.Data = []byte(body)
	reply, err := h.nc.RequestMsg(msg, 5*time.Second)
	require.NoError(h.t, err)
	out := map[string]any{}
	require.NoError(h.t, json.Unmarshal(reply.Data, &out), "reply must be JSON: %s", reply.Data)
	return out, reply.Header
}

func TestJSONFromPlainNATS(t *testing.T) {
	h := startCluster(t, 3)
	val := base64.StdEncoding.EncodeToString([]byte("hello"))
	out, _ := h.jsonRequest("pairdb.v1.kv.default.put", `{"key":"greeting","value":"`+val+`","consistency":"QUORUM"}`)
	require.Nil(t, out["error"], "%v", out)
	require.NotEmpty(t, out["vector_clock"])
	require.Equal(t, "quorum", out["consistency"])

	out, _ = h.jsonRequest("pairdb.v1.kv.default.get", `{"key":"greeting"}`)
	require.Equal(t, true, out["found"])
	require.Equal(t, val, out["value"])

	out, hdr := h.jsonRequest("pairdb.v1.kv.default.get", `{"key":"nope"}`)
	require.Equal(t, "KEY_NOT_FOUND", hdr.Get("Nats-Service-Error-Code"))
	require.Equal(t, "KEY_NOT_FOUND", out["error"].(map[string]any)["code"])

	out, hdr = h.jsonRequest("pairdb.v1.kv.default.get", `{"key":`)
	require.Equal(t, "INVALID_ARGUMENT", hdr.Get("Nats-Service-Error-Code"))
	require.Contains(t, out["error"].(map[string]any)["message"], "malformed JSON")
}

func TestBadInputGetsTypedErrors(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.Put(ctx, "", []byte("v"))
	requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)
	_, err = h.c.Put(ctx, strings.Repeat("k", 1025), []byte("v"))
	requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)
	_, err = h.c.Get(ctx, strings.Repeat("k", 1025))
	requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)
	_, err = h.c.Put(ctx, "k", []byte("v"), client.Consistency("most"))
	requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)
	_, err = client.New(h.nc, client.WithTenant("nobody")).Put(ctx, "k", []byte("v"))
	requireCode(t, err, pb.ErrorCode_TENANT_NOT_FOUND)
	// A tenant id that is a valid subject token but not a valid tenant id
	// is refused, not looked up.
	_, err = client.New(h.nc, client.WithTenant(strings.Repeat("t", 65))).Get(ctx, "k")
	requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)

	// Malformed protobuf.
	reply, err := h.nc.Request("pairdb.v1.kv.default.put", []byte{0xff, 0xff, 0xff}, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "INVALID_ARGUMENT", reply.Header.Get("Nats-Service-Error-Code"))
	resp := new(pb.PutResponse)
	require.NoError(t, proto.Unmarshal(reply.Data, resp))
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, resp.GetError().GetCode())
}

func TestTenantAdmin(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	created, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "acme", ReplicationFactor: 2})
	require.NoError(t, err)
	require.EqualValues(t, 2, created.GetReplicationFactor())
	require.Equal(t, "quorum", created.GetDefaultConsistency())
	require.EqualValues(t, 1, created.GetVersion())

	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "acme"})
	requireCode(t, err, pb.ErrorCode_TENANT_EXISTS)
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "wide", ReplicationFactor: 4})
	requireCode(t, err, pb.ErrorCode_INVALID_REPLICATION_FACTOR)
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "bad id"})
	requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)
	_, err = h.c.GetTenant(ctx, "ghost")
	requireCode(t, err, pb.ErrorCode_TENANT_NOT_FOUND)

	acme := client.New(h.nc, client.WithTenant("acme"))
	put, err := acme.Put(ctx, "k", []byte("v"), client.Consistency("all"))
	require.NoError(t, err)
	require.EqualValues(t, 2, put.GetReplicaCount(), "RF 2 means two replicas")

	// A change made through the admin API is used on the very next request.
	upd, err := h.c.UpdateTenant(ctx, &pb.UpdateTenantRequest{TenantId: "acme", ReplicationFactor: proto.Uint32(3)})
	require.NoError(t, err)
	require.EqualValues(t, 2, upd.GetOldReplicationFactor())
	require.EqualValues(t, 2, upd.GetTenant().GetVersion())
	put, err = acme.Put(ctx, "k2", []byte("v"), client.Consistency("all"))
	require.NoError(t, err)
	require.EqualValues(t, 3, put.GetReplicaCount())

	_, err = h.c.UpdateTenant(ctx, &pb.UpdateTenantRequest{TenantId: "acme", MaxSiblings: proto.Uint32(4), ExpectedVersion: 1})
	requireCode(t, err, pb.ErrorCode_VERSION_CONFLICT)

	ts, next, err := h.c.ListTenants(ctx, 1, "")
	require.NoError(t, err)
	require.Len(t, ts, 1)
	require.NotEmpty(t, next)
	ts, _, err = h.c.ListTenants(ctx, 100, "")
	require.NoError(t, err)
	require.Len(t, ts, 2) // acme and default

	_, err = h.c.DeleteTenant(ctx, &pb.DeleteTenantRequest{TenantId: "acme", Force: true})
	require.NoError(t, err)
	_, err = acme.Get(ctx, "k")
	requireCode(t, err, pb.ErrorCode_TENANT_NOT_FOUND)
	_, err = h.c.DeleteTenant(ctx, &pb.DeleteTenantRequest{TenantId: "acme"})
	requireCode(t, err, pb.ErrorCode_TENANT_NOT_FOUND)
}

func TestTenantChangeSeenByOtherCoordinator(t *testing.T) {
	checkTenantChangeSeenByOtherCoordinator(t, startCluster(t, 3))
}

// checkTenantChangeSeenByOtherCoordinator changes a tenant's replication
// factor through one coordinator and expects the other to use it on its
// next requests.
func checkTenantChangeSeenByOtherCoordinator(t *testing.T, h *harness) {
	ctx := ctxT(t)
	_, err := h.dev.StartCoordinator(ctx)
	require.NoError(t, err)
	_, err = h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "shared", ReplicationFactor: 1})
	require.NoError(t, err)
	c := client.New(h.nc, client.WithTenant("shared"))
	// Warm both coordinators' caches.
	for i := range 20 {
		_, err := c.Put(ctx, fmt.Sprintf("warm-%d", i), []byte("v"))
		require.NoError(t, err)
	}
	_, err = h.c.UpdateTenant(ctx, &pb.UpdateTenantRequest{TenantId: "shared", ReplicationFactor: proto.Uint32(3)})
	require.NoError(t, err)
	// The invalidation is published before the update answers, but another
	// coordinator processes it asynchronously: wait for it, bounded.
	require.Eventually(t, func() bool {
		for i := range 10 {
			put, err := c.Put(ctx, fmt.Sprintf("after-%d", i), []byte("v"), client.Consistency("all"))
			if err != nil || put.GetReplicaCount() != 3 {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond)
}

func TestErrorsCarryMicroHeaders(t *testing.T) {
	h := startCluster(t, 3)
	data, err := proto.Marshal(&pb.GetTenantRequest{TenantId: "ghost"})
	require.NoError(t, err)
	reply, err := h.nc.Request(bus.Subjects{}.Admin("tenants", "get"), data, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "TENANT_NOT_FOUND", reply.Header.Get("Nats-Service-Error-Code"))
	require.Contains(t, reply.Header.Get("Nats-Service-Error"), "ghost")
}
