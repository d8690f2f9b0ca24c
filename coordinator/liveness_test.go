package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/membership"
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

// A node whose heartbeats show its clock off by more than the bound mints
// nothing for this coordinator until it is back within; the crossing is
// reported once each way.
func TestLivenessSkew(t *testing.T) {
	l := newLiveness(time.Hour, 2*time.Hour, 250*time.Millisecond)
	s := &Service{liveness: l}
	now := time.Now()
	beat := func(node string, offset time.Duration) bool {
		_, crossed := l.heartbeat(&pb.Heartbeat{NodeId: node, UnixMs: now.Add(offset).UnixMilli()}, now)
		return crossed
	}
	require.False(t, beat("a", 10*time.Millisecond), "within the bound: nothing to report")
	require.False(t, beat("b", -100*time.Millisecond))
	require.True(t, beat("c", 2*time.Second), "ahead past the bound: reported")
	require.False(t, beat("c", 3*time.Second), "still past it: not reported again")
	require.True(t, l.skewed("c"))
	require.False(t, l.skewed("a"))
	require.Equal(t, []string{"a", "b"}, s.minterCandidates(membership.New(), []string{"c", "a", "b"}), "a skewed node mints nothing")
	require.False(t, beat("c", 0), "a clock set back is trusted once the window holds no beat ahead")
	require.False(t, beat("c", 0))
	require.True(t, beat("c", 0), "back within: reported")
	require.Equal(t, []string{"c", "a", "b"}, s.minterCandidates(membership.New(), []string{"c", "a", "b"}))

	// A beat held up on its way reads as a clock behind: one alone is not
	// believed, a window of them is.
	require.False(t, beat("b", -time.Second), "one late beat is a delay, not a clock")
	require.False(t, l.skewed("b"))
	require.False(t, beat("b", -10*time.Millisecond))
	require.False(t, beat("b", -time.Second))
	require.False(t, beat("b", -time.Second), "the window still holds a beat within the bound")
	require.True(t, beat("b", -time.Second), "behind past the bound in every beat of the window counts too")
	require.True(t, l.skewed("b"))
}

// An unanswered call makes a node suspect (asked last) until a heartbeat
// it sent after the call arrives.
func TestLivenessMarkSlow(t *testing.T) {
	l := newLiveness(time.Hour, 2*time.Hour, time.Second)
	now := time.Now()
	for _, n := range []string{"a", "b"} {
		l.heartbeat(&pb.Heartbeat{NodeId: n, UnixMs: now.UnixMilli()}, now)
	}
	l.markSlow("a")
	require.Equal(t, Suspect, l.health("a", time.Now()))
	require.Equal(t, []string{"b", "a"}, l.order([]string{"a", "b"}))
	l.heartbeat(&pb.Heartbeat{NodeId: "a", UnixMs: now.Add(-time.Second).UnixMilli()}, time.Now())
	require.Equal(t, Suspect, l.health("a", time.Now()), "a beat sent before the call proves nothing")
	l.heartbeat(&pb.Heartbeat{NodeId: "a", UnixMs: time.Now().Add(time.Millisecond).UnixMilli()}, time.Now())
	require.Equal(t, Up, l.health("a", time.Now()), "a beat sent after it does")
}
