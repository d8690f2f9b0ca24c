package bus_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	"github.com/pairdb/pairdb/internal/natstest"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// A waiter gets one reply per subject, in any order, each tagged with its
// index; duplicates and replies after Close are dropped.
func TestMuxRoutesRepliesByIndexAndDropsDuplicates(t *testing.T) {
	srv, nc := natstest.Start(t)
	mux, err := bus.NewMux(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = mux.Close() })
	// The replies below come from another connection without a request on
	// nc first (which would order them after the subscription): wait until
	// the server has the subscription.
	require.NoError(t, nc.Flush())

	// Replies come from another connection, as a replica's would.
	other, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(other.Close)

	w := mux.Open(3)
	other2 := mux.Open(1)
	require.NotEqual(t, w.Subject(0), w.Subject(1))
	ack := func(epoch uint64) []byte {
		b, err := proto.Marshal(&pb.MergeResponse{Epoch: epoch})
		require.NoError(t, err)
		return b
	}
	require.NoError(t, other.Publish(w.Subject(2), ack(2)))
	require.NoError(t, other.Publish(w.Subject(2), ack(99))) // duplicate
	require.NoError(t, other.Publish(w.Subject(0), ack(0)))
	require.NoError(t, other.Publish(other2.Subject(0), ack(7)))
	require.NoError(t, other.Flush())

	got := map[int]uint64{}
	for len(got) < 2 {
		select {
		case r := <-w.Replies():
			resp := new(pb.MergeResponse)
			require.NoError(t, bus.DecodeReply("test", r.Msg, resp))
			_, dup := got[r.Index]
			require.False(t, dup, "index %d delivered twice", r.Index)
			got[r.Index] = resp.GetEpoch()
		case <-time.After(5 * time.Second):
			t.Fatalf("replies missing: got %v", got)
		}
	}
	require.Equal(t, map[int]uint64{0: 0, 2: 2}, got)
	select {
	case r := <-other2.Replies():
		require.Equal(t, 0, r.Index)
	case <-time.After(5 * time.Second):
		t.Fatal("the second waiter got nothing")
	}

	// After Close, a late reply goes nowhere; the channel stays empty.
	w.Close()
	require.NoError(t, other.Publish(w.Subject(1), ack(1)))
	require.NoError(t, other.Flush())
	// A round trip through the mux's own connection proves the late reply
	// was processed (same subscription, in order) before we look.
	probe := mux.Open(1)
	require.NoError(t, other.Publish(probe.Subject(0), ack(5)))
	select {
	case <-probe.Replies():
	case <-time.After(5 * time.Second):
		t.Fatal("probe reply missing")
	}
	require.Empty(t, w.Replies())
}

// A "no responders" status delivered raw (the sender shares the mux's
// connection) is an UNAVAILABLE error, never an empty, successful reply.
func TestDecodeReplyTurnsNoRespondersStatusIntoAnError(t *testing.T) {
	_, nc := natstest.Start(t)
	mux, err := bus.NewMux(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = mux.Close() })
	w := mux.Open(1)
	// Nothing listens here: the server answers the publisher with a 503 on
	// the reply subject, which this same connection subscribes to.
	require.NoError(t, nc.PublishMsg(&nats.Msg{Subject: "nobody.home", Reply: w.Subject(0)}))
	select {
	case r := <-w.Replies():
		err := bus.DecodeReply("nobody.home", r.Msg, new(pb.MergeResponse))
		require.Error(t, err)
		require.True(t, status.Is(err, pb.ErrorCode_UNAVAILABLE), "got %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no status reply")
	}
}

// The mux listens on an inbox of its own, not under the prefix of nats.go's
// request mux (which would hand every reply to both subscriptions).
func TestMuxDoesNotShareTheRequestInbox(t *testing.T) {
	_, nc := natstest.Start(t)
	mux, err := bus.NewMux(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = mux.Close() })
	resp := nc.NewRespInbox()
	respPrefix := resp[:strings.LastIndexByte(resp, '.')+1]
	require.False(t, strings.HasPrefix(mux.Open(1).Subject(0), respPrefix), "mux subject %q under %q", mux.Open(1).Subject(0), respPrefix)
}
