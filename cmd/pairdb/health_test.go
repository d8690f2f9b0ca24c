package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

func beatOf(t *testing.T, id, inc string, epoch uint64) []byte {
	t.Helper()
	b, err := proto.Marshal(&pb.Heartbeat{NodeId: id, Incarnation: inc, Epoch: epoch})
	require.NoError(t, err)
	return b
}

func TestHeartbeatChecks(t *testing.T) {
	now := time.Unix(1000, 0)
	h := &heartbeats{now: func() time.Time { return now }, want: map[string]string{"n1": "", "n2": ""}, last: map[string]beat{}}
	ctx := context.Background()

	require.ErrorContains(t, h.engineCheck(ctx), "storage node n1: no heartbeat yet; storage node n2: no heartbeat yet")
	h.record("n1", beatOf(t, "n1", "a", 0))
	h.record("n2", beatOf(t, "n2", "b", 7))
	h.record("n3", beatOf(t, "n3", "c", 7))              // not watched
	h.record("n2", beatOf(t, "n1", "a", 7))              // subject and body disagree
	h.record("n1", []byte("not a heartbeat at all\xff")) // undecodable
	require.NoError(t, h.engineCheck(ctx))
	require.EqualError(t, h.ringCheck(ctx), "storage node n1: the ring has no members yet; bootstrap it with `pairdb node add ID...`")

	h.expect("n1", "a2") // n1 restarted as a new incarnation
	now = now.Add(heartbeatMaxAge + time.Second)
	h.record("n1", beatOf(t, "n1", "a", 9)) // the old incarnation does not count
	h.record("n2", beatOf(t, "n2", "b", 9))
	require.EqualError(t, h.engineCheck(ctx), "storage node n1: no heartbeat for 4s (its storage engine or NATS connection is failing)")
	h.record("n1", beatOf(t, "n1", "a2", 9))
	require.NoError(t, h.engineCheck(ctx))
	require.NoError(t, h.ringCheck(ctx))
}
