package coordinator

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// Health is what this coordinator believes of a storage node.
type Health int

const (
	// Up: heard from within HeartbeatTimeout. A node never heard from is
	// judged by the time since this coordinator started, so a coordinator
	// that starts during an outage learns of it within DownAfter (or at
	// its first call to the node).
	Up Health = iota
	// Suspect: silent for longer than HeartbeatTimeout. Tried last as the
	// coordinating replica; still sent every merge.
	Suspect
	// Down: silent for longer than DownAfter, or a call to it found no
	// responders. Skipped as the coordinating replica (unless every replica
	// is down), and its merges go straight to a hint with no network call.
	Down
)

func (h Health) String() string {
	switch h {
	case Up:
		return "UP"
	case Suspect:
		return "SUSPECT"
	case Down:
		return "DOWN"
	}
	return "UNKNOWN"
}

// liveness is the coordinator's failure detector. Its signals are the
// nodes' heartbeats (a node beats every second) and NATS "no responders",
// which a call to a node whose process is gone gets at once. The first
// heartbeat after either marks the node up again. A wrong verdict costs
// little: a suspect node is only tried later, and a down node's writes are
// hinted, so it catches up when it is heard from again.
type liveness struct {
	suspectAfter, downAfter time.Duration
	// started stands in for the last beat of a node never heard from.
	started time.Time
	mu      sync.Mutex
	seen    map[string]time.Time
	beats   map[string]*pb.Heartbeat
	// gone marks nodes that found no responders since their last beat.
	gone map[string]bool
}

func newLiveness(suspectAfter, downAfter time.Duration) *liveness {
	return &liveness{
		suspectAfter: suspectAfter, downAfter: downAfter, started: time.Now(),
		seen: map[string]time.Time{}, beats: map[string]*pb.Heartbeat{}, gone: map[string]bool{},
	}
}

func (l *liveness) heartbeat(hb *pb.Heartbeat, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[hb.GetNodeId()] = at
	l.beats[hb.GetNodeId()] = hb
	delete(l.gone, hb.GetNodeId())
}

// last is the node's latest heartbeat and when it arrived.
func (l *liveness) last(node string) (*pb.Heartbeat, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	hb, ok := l.beats[node]
	return hb, l.seen[node], ok
}

// markDown records that a call to node found no responders.
func (l *liveness) markDown(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gone[node] = true
}

// health judges node at now.
func (l *liveness) health(node string, now time.Time) Health {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.healthLocked(node, now)
}

func (l *liveness) healthLocked(node string, now time.Time) Health {
	if l.gone[node] {
		return Down
	}
	at, ok := l.seen[node]
	if !ok {
		at = l.started
	}
	switch {
	case now.Sub(at) > l.downAfter:
		return Down
	case now.Sub(at) > l.suspectAfter:
		return Suspect
	}
	return Up
}

// view judges every node this coordinator has heard of or marked.
func (l *liveness) view(now time.Time) map[string]Health {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]Health, len(l.seen)+len(l.gone))
	for n := range l.seen {
		out[n] = l.healthLocked(n, now)
	}
	for n := range l.gone {
		out[n] = Down
	}
	return out
}

// order returns the nodes to try as the coordinating replica: up ones
// first, then suspect ones, keeping preference order within each; down
// ones are left out, unless every node is down — then all of them are
// tried, in preference order, since a wrong verdict must not cost
// availability.
func (l *liveness) order(nodes []string) []string {
	now := time.Now()
	out := make([]string, 0, len(nodes))
	var later []string
	for _, n := range nodes {
		switch l.health(n, now) {
		case Up:
			out = append(out, n)
		case Suspect:
			later = append(later, n)
		}
	}
	out = append(out, later...)
	if len(out) == 0 {
		return append(out, nodes...)
	}
	return out
}

func (s *Service) onHeartbeat(m *nats.Msg) {
	hb := new(pb.Heartbeat)
	if err := proto.Unmarshal(m.Data, hb); err != nil || hb.GetNodeId() == "" {
		return
	}
	s.liveness.heartbeat(hb, time.Now())
}

// Health is this coordinator's verdict on a storage node now.
func (s *Service) Health(node string) Health { return s.liveness.health(node, time.Now()) }

// Liveness is this coordinator's verdict on every node it has heard from or
// found gone (nodes never heard from are judged by Health, not listed).
func (s *Service) Liveness() map[string]Health { return s.liveness.view(time.Now()) }
