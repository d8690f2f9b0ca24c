package coordinator

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// liveness is the coordinator's failure detector. A node is suspect when a
// call to it found no responders (the fast signal NATS gives for free) or
// when its heartbeats stopped; its next heartbeat clears it. Suspect nodes
// are tried last as the coordinating replica, never skipped outright, so a
// wrong suspicion costs latency, not availability.
type liveness struct {
	timeout time.Duration
	mu      sync.Mutex
	seen    map[string]time.Time
	beats   map[string]*pb.Heartbeat
	suspect map[string]bool
}

func newLiveness(timeout time.Duration) *liveness {
	return &liveness{timeout: timeout, seen: map[string]time.Time{}, beats: map[string]*pb.Heartbeat{}, suspect: map[string]bool{}}
}

func (l *liveness) heartbeat(hb *pb.Heartbeat, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[hb.GetNodeId()] = at
	l.beats[hb.GetNodeId()] = hb
	delete(l.suspect, hb.GetNodeId())
}

// last is the node's latest heartbeat and when it arrived.
func (l *liveness) last(node string) (*pb.Heartbeat, time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	hb, ok := l.beats[node]
	return hb, l.seen[node], ok
}

func (l *liveness) markSuspect(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.suspect[node] = true
}

// isSuspect reports whether node should be tried last. A node never heard
// from is not suspect: a coordinator that just started knows nothing yet.
func (l *liveness) isSuspect(node string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.suspect[node] {
		return true
	}
	at, ok := l.seen[node]
	return ok && now.Sub(at) > l.timeout
}

// order returns nodes with healthy ones first, keeping preference order
// within each group.
func (l *liveness) order(nodes []string) []string {
	now := time.Now()
	out := make([]string, 0, len(nodes))
	var later []string
	for _, n := range nodes {
		if l.isSuspect(n, now) {
			later = append(later, n)
		} else {
			out = append(out, n)
		}
	}
	return append(out, later...)
}

func (s *Service) onHeartbeat(m *nats.Msg) {
	hb := new(pb.Heartbeat)
	if err := proto.Unmarshal(m.Data, hb); err != nil || hb.GetNodeId() == "" {
		return
	}
	s.liveness.heartbeat(hb, time.Now())
}
