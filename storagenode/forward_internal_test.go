package storagenode

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/dvv/dvvpb"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// A forward built around the stored bytes decodes to the same merge as one
// encoded whole.
func TestEncodeForwardReusesTheStoredBytes(t *testing.T) {
	obj := dvv.Update(dvv.Object{}, nil, "n1-inc", []byte("value"), false, 1234, dvv.Siblings)
	stored, err := proto.Marshal(dvvpb.ObjectToProto(obj))
	require.NoError(t, err)
	req := &pb.ApplyRequest{TenantId: "acme", Key: "k", Policy: pb.ConflictPolicy_SIBLINGS, Epoch: 7,
		DeadlineUnixMs: 99, TenantIncarnation: 3}
	for _, encoded := range [][]byte{stored, nil} {
		data, err := encodeForward(req, obj, encoded, true)
		require.NoError(t, err)
		var got pb.MergeRequest
		require.NoError(t, proto.Unmarshal(data, &got))
		want := &pb.MergeRequest{TenantId: "acme", Key: "k", Object: dvvpb.ObjectToProto(obj), Policy: pb.ConflictPolicy_SIBLINGS,
			Epoch: 7, DeadlineUnixMs: 99, Minted: true, TenantIncarnation: 3}
		require.True(t, proto.Equal(want, &got), "encoded %v: got %v", encoded != nil, &got)
	}
}
