package coordinator

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

func TestRequestHash(t *testing.T) {
	clock := []*pb.ClockEntry{{Actor: "b", Counter: 2}, {Actor: "a", Counter: 9}}
	base := requestHash("put", "k", []byte("v"), false, clock)
	require.Len(t, base, 32)
	require.Equal(t, "b", clock[0].GetActor(), "input clock must not be reordered")

	reordered := []*pb.ClockEntry{{Actor: "a", Counter: 9}, {Actor: "b", Counter: 2}}
	require.Equal(t, base, requestHash("put", "k", []byte("v"), false, reordered))

	differ := map[string][]byte{
		"op":        requestHash("delete", "k", []byte("v"), false, clock),
		"key":       requestHash("put", "k2", []byte("v"), false, clock),
		"value":     requestHash("put", "k", []byte("w"), false, clock),
		"tombstone": requestHash("put", "k", []byte("v"), true, clock),
		"clock":     requestHash("put", "k", []byte("v"), false, clock[:1]),
		"counter":   requestHash("put", "k", []byte("v"), false, []*pb.ClockEntry{{Actor: "b", Counter: 3}, {Actor: "a", Counter: 9}}),
		"no clock":  requestHash("put", "k", []byte("v"), false, nil),
	}
	for name, h := range differ {
		require.False(t, bytes.Equal(base, h), "changing the %s must change the hash", name)
	}
	// Length prefixes: moving a byte across a field boundary changes the hash.
	require.NotEqual(t,
		requestHash("put", "ab", []byte("c"), false, nil),
		requestHash("put", "a", []byte("bc"), false, nil))
	require.NotEqual(t,
		requestHash("put", "k", nil, false, []*pb.ClockEntry{{Actor: "ab"}, {Actor: "c"}}),
		requestHash("put", "k", nil, false, []*pb.ClockEntry{{Actor: "a"}, {Actor: "bc"}}))
}
