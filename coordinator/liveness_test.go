package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

func TestLivenessStates(t *testing.T) {
	l := newLiveness(time.Second, 3*time.Second, time.Second)
	t0 := l.started
	require.Equal(t, Up, l.health("a", t0), "never heard of, just started")
	require.Equal(t, Suspect, l.health("a", t0.Add(2*time.Second)), "never heard of since start")
	require.Equal(t, Down, l.health("a", t0.Add(4*time.Second)))

	l.heartbeat(&pb.Heartbeat{NodeId: "a"}, t0.Add(10*time.Second))
	require.Equal(t, Up, l.health("a", t0.Add(10500*time.Millisecond)))
	require.Equal(t, Suspect, l.health("a", t0.Add(12*time.Second)))
	require.Equal(t, Down, l.health("a", t0.Add(14*time.Second)))

	// No responders is down at once; the next beat is up again.
	l.heartbeat(&pb.Heartbeat{NodeId: "b"}, t0)
	l.markDown("b")
	require.Equal(t, Down, l.health("b", t0))
	require.Equal(t, map[string]Health{"a": Down, "b": Down}, l.view(t0.Add(14*time.Second)))
	l.heartbeat(&pb.Heartbeat{NodeId: "b"}, t0.Add(time.Millisecond))
	require.Equal(t, Up, l.health("b", t0.Add(time.Millisecond)))
	require.Equal(t, "DOWN", Down.String())
}

func TestLivenessOrderSkipsDownUnlessAllAreDown(t *testing.T) {
	l := newLiveness(time.Hour, 2*time.Hour, time.Second)
	now := time.Now()
	for _, n := range []string{"a", "b", "c"} {
		l.heartbeat(&pb.Heartbeat{NodeId: n}, now)
	}
	require.Equal(t, []string{"a", "b", "c"}, l.order([]string{"a", "b", "c"}))
	l.markDown("a")
	require.Equal(t, []string{"b", "c"}, l.order([]string{"a", "b", "c"}), "down is skipped")
	l.heartbeat(&pb.Heartbeat{NodeId: "b"}, now.Add(-90*time.Minute)) // suspect
	require.Equal(t, []string{"c", "b"}, l.order([]string{"a", "b", "c"}), "suspect goes last")
	l.markDown("b")
	l.markDown("c")
	require.Equal(t, []string{"a", "b", "c"}, l.order([]string{"a", "b", "c"}), "all down: try them all anyway")
}
