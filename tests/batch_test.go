package tests

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/client"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// A batch answers every item on its own: good items are written and read
// back, bad ones fail with their own code and leave nothing behind.
func TestBatchItemsSucceedAndFailOnTheirOwn(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	var items []*pb.PutRequest
	for i := range 300 {
		items = append(items, &pb.PutRequest{Key: fmt.Sprintf("b-%03d", i), Value: []byte(fmt.Sprintf("v-%d", i))})
	}
	items[7].Key = ""                                          // invalid key
	items[11].Value = bytes.Repeat([]byte("x"), 2<<20)         // over the tenant's 1 MiB
	items[13].Consistency = "most"                             // no such level
	items[17].Context, items[17].Value = []byte("forged"), nil // a context the cluster never issued
	bad := map[int]pb.ErrorCode{7: pb.ErrorCode_INVALID_ARGUMENT, 11: pb.ErrorCode_VALUE_TOO_LARGE,
		13: pb.ErrorCode_INVALID_ARGUMENT, 17: pb.ErrorCode_INVALID_ARGUMENT}

	puts, err := h.c.PutMany(ctx, items)
	require.NoError(t, err)
	require.Len(t, puts, len(items))
	keys := make([]string, len(items))
	for i, p := range puts {
		keys[i] = items[i].GetKey()
		require.Equal(t, items[i].GetKey(), p.GetKey(), "answers come in request order")
		if code, isBad := bad[i]; isBad {
			require.Equal(t, code, p.GetError().GetCode(), "item %d", i)
			continue
		}
		require.Nil(t, p.GetError(), "item %d", i)
		require.GreaterOrEqual(t, p.GetReplicaCount(), uint32(2))
		require.NotEmpty(t, p.GetContext())
	}
	keys[7] = "never-written"

	gets, err := h.c.GetMany(ctx, keys)
	require.NoError(t, err)
	require.Len(t, gets, len(keys))
	var dels []*pb.DeleteRequest
	for i, g := range gets {
		require.Nil(t, g.GetError(), "item %d: a missing key is not an error", i)
		if _, isBad := bad[i]; isBad || i == 7 {
			require.False(t, g.GetFound(), "item %d failed, so nothing of it may be stored", i)
			continue
		}
		require.Equal(t, fmt.Sprintf("v-%d", i), string(g.GetValue()))
		if i%2 == 0 {
			dels = append(dels, &pb.DeleteRequest{Key: g.GetKey(), Context: g.GetContext()})
		}
	}

	deleted, err := h.c.DeleteMany(ctx, dels)
	require.NoError(t, err)
	for _, d := range deleted {
		require.Nil(t, d.GetError())
	}
	gets, err = h.c.GetMany(ctx, keys)
	require.NoError(t, err)
	for i, g := range gets {
		if _, isBad := bad[i]; isBad || i == 7 {
			continue
		}
		require.Equal(t, i%2 == 1, g.GetFound(), "item %d: even keys were deleted, odd ones stay", i)
	}
}

func TestBatchRefusedWhole(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	// A key twice: the whole batch is refused and neither item is written.
	_, err := h.c.PutMany(ctx, []*pb.PutRequest{{Key: "twice", Value: []byte("a")}, {Key: "once", Value: []byte("b")}, {Key: "twice", Value: []byte("c")}})
	requireCode(t, err, pb.ErrorCode_INVALID_ARGUMENT)
	require.Contains(t, err.Error(), `"twice"`)
	gets, err := h.c.GetMany(ctx, []string{"twice", "once"})
	require.NoError(t, err)
	require.False(t, gets[0].GetFound())
	require.False(t, gets[1].GetFound())

	// Past the limit (sent raw: the client splits long lists itself), and empty.
	keys := make([]string, client.MaxBatchItems+1)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	out, _ := h.jsonRequest("pairdb.v1.kv.default.get_many", `{"keys":["`+strings.Join(keys, `","`)+`"]}`)
	require.Equal(t, "INVALID_ARGUMENT", out["error"].(map[string]any)["code"])
	out, _ = h.jsonRequest("pairdb.v1.kv.default.put_many", `{"items":[]}`)
	require.Equal(t, "INVALID_ARGUMENT", out["error"].(map[string]any)["code"])

	// The client splits a long list into batches the cluster takes.
	gets, err = h.c.GetMany(ctx, keys)
	require.NoError(t, err)
	require.Len(t, gets, len(keys))
	require.Equal(t, keys[len(keys)-1], gets[len(gets)-1].GetKey())
}

// Each item's idempotency key holds: the same batch sent again is answered
// as duplicates and writes nothing twice.
func TestBatchIdempotentPerItem(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	mk := func() []*pb.PutRequest {
		var items []*pb.PutRequest
		for i := range 50 {
			items = append(items, &pb.PutRequest{Key: fmt.Sprintf("i-%d", i), Value: []byte("once"), IdempotencyKey: fmt.Sprintf("idem-%d", i)})
		}
		return items
	}
	first, err := h.c.PutMany(ctx, mk())
	require.NoError(t, err)
	again, err := h.c.PutMany(ctx, mk())
	require.NoError(t, err)
	keys := make([]string, len(first))
	for i := range first {
		require.Nil(t, first[i].GetError())
		require.False(t, first[i].GetDuplicate())
		require.True(t, again[i].GetDuplicate(), "item %d sent again must be a duplicate", i)
		require.Equal(t, first[i].GetVectorClock(), again[i].GetVectorClock())
		keys[i] = first[i].GetKey()
	}
	gets, err := h.c.GetMany(ctx, keys, client.ReadConsistency("all"))
	require.NoError(t, err)
	for i, g := range gets {
		require.Equal(t, []string{"once"}, values(g), "item %d: one write, one value", i)
	}
}

// With a node down, QUORUM items succeed and ALL items fail, each on its own.
func TestBatchWithANodeDown(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	h.stopNode(h.dev.NodeIDs()[0])
	items := []*pb.PutRequest{
		{Key: "q1", Value: []byte("a"), Consistency: "quorum"},
		{Key: "a1", Value: []byte("b"), Consistency: "all"},
		{Key: "q2", Value: []byte("c")},
	}
	puts, err := h.c.PutMany(ctx, items, client.Consistency("quorum"))
	require.NoError(t, err)
	require.Nil(t, puts[0].GetError())
	require.Equal(t, pb.ErrorCode_QUORUM_NOT_REACHED, puts[1].GetError().GetCode())
	require.Nil(t, puts[2].GetError())
	require.Equal(t, "quorum", puts[2].GetConsistency(), "the batch's consistency fills in the items' empty one")
}

// A get_many answer stays within one NATS message: keys past the budget
// say VALUE_TOO_LARGE, and a read of one of them alone still works.
func TestGetManyAnswerFitsOneMessage(t *testing.T) {
	h := startCluster(t, 3)
	ctx := ctxT(t)
	_, err := h.c.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "large", MaxValueBytes: 4 << 20})
	require.NoError(t, err)
	c := client.New(h.nc, client.WithTenant("large"), client.WithRetries(0))
	// Three values of 2 MiB: each fits a message (the dev server's
	// max_payload is 8 MiB), two do not.
	big := bytes.Repeat([]byte("z"), 2<<20)
	for i := range 3 {
		_, err := c.Put(ctx, fmt.Sprintf("big-%d", i), big)
		require.NoError(t, err)
	}
	gets, err := c.GetMany(ctx, []string{"big-0", "big-1", "big-2"})
	require.NoError(t, err)
	require.True(t, gets[0].GetFound(), "%v", gets[0].GetError())
	require.Equal(t, pb.ErrorCode_VALUE_TOO_LARGE, gets[1].GetError().GetCode())
	require.Equal(t, pb.ErrorCode_VALUE_TOO_LARGE, gets[2].GetError().GetCode())
	one, err := c.Get(ctx, "big-2")
	require.NoError(t, err)
	require.Equal(t, big, one.GetValue())
}

// Any NATS client can send a batch as JSON.
func TestBatchJSONFromPlainNATS(t *testing.T) {
	h := startCluster(t, 3)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	out, _ := h.jsonRequest("pairdb.v1.kv.default.put_many",
		`{"items":[{"key":"j1","value":"`+b64("one")+`"},{"key":"","value":"`+b64("bad")+`"}],"consistency":"all"}`)
	items := out["items"].([]any)
	require.Len(t, items, 2)
	require.Nil(t, items[0].(map[string]any)["error"])
	require.Equal(t, "all", items[0].(map[string]any)["consistency"])
	require.Equal(t, "INVALID_ARGUMENT", items[1].(map[string]any)["error"].(map[string]any)["code"])
	out, _ = h.jsonRequest("pairdb.v1.kv.default.get_many", `{"keys":["j1","j2"]}`)
	items = out["items"].([]any)
	require.Equal(t, b64("one"), items[0].(map[string]any)["value"])
	require.Equal(t, pb.ErrorCode_KEY_NOT_FOUND.String(), items[1].(map[string]any)["error"].(map[string]any)["code"])
}

// Garbage on the batch and list subjects is refused with INVALID_ARGUMENT,
// from protobuf and JSON alike, and the coordinator goes on serving.
func TestBatchAndListSubjectsRefuseGarbage(t *testing.T) {
	h := startCluster(t, 3)
	sameIdem := `{"items":[{"key":"a","value":"YQ==","idempotency_key":"x"},{"key":"b","value":"Yg==","idempotency_key":"x"}]}`
	for _, op := range []string{"get_many", "put_many", "delete_many", "list"} {
		subject := "pairdb.v1.kv.default." + op
		reply, err := h.nc.Request(subject, []byte{0xff, 0xff, 0xff, 0x01}, 5*time.Second)
		require.NoError(t, err, op)
		require.Equal(t, "INVALID_ARGUMENT", reply.Header.Get("Nats-Service-Error-Code"), "%s: protobuf garbage", op)
		for _, body := range []string{`{"items":`, `{"keys":[1,2]}`, `{"page_token":"` + strings.Repeat("A", 4000) + `"}`, `{"nope":true}`} {
			out, _ := h.jsonRequest(subject, body)
			e, ok := out["error"].(map[string]any)
			require.True(t, ok, "%s %s: refused, not served: %v", op, body, out)
			require.Equal(t, "INVALID_ARGUMENT", e["code"], "%s %s", op, body)
		}
	}
	// One idempotency key on two items of different payloads: one is
	// written, the other refused as a conflict (or still in flight); never both.
	out, _ := h.jsonRequest("pairdb.v1.kv.default.put_many", sameIdem)
	items := out["items"].([]any)
	failed := 0
	for _, it := range items {
		if it.(map[string]any)["error"] != nil {
			failed++
		}
	}
	require.GreaterOrEqual(t, failed, 1, "one idempotency key cannot write two payloads")
	_, err := h.c.Put(ctxT(t), "still-serving", []byte("yes"))
	require.NoError(t, err)
}
