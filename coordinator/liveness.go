package coordinator

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
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
	// slow marks when a call to a node went unanswered: it is suspect
	// until a heartbeat sent after that arrives.
	slow map[string]time.Time
	// maxSkew bounds how far a node's clock may be from this
	// coordinator's; skew holds the offsets its last beats measured.
	maxSkew time.Duration
	skew    map[string]*skewSamples
}

// skewWindow is how many beats a node's clock offset is judged over.
//
// A beat measures the node's wall time at sending minus this coordinator's
// at arrival: the true offset minus the beat's transit and queueing delay,
// never more than the truth. So the largest of the last few measures is the
// tightest lower bound on the offset, and a beat held up in a busy process
// (a 300 ms stall under a large message, a coordinator resumed from a
// pause with old beats queued) does not brand a healthy node as behind. A
// node whose clock really is behind shows it in every beat, and is flagged
// once the window holds nothing else: up to skewWindow-1 beats later than
// a single measure would, a delay the deadline margin does not depend on
// (the replica enforces the deadline on its own clock; see mint.go). A
// clock ahead is flagged at its first beat, since no delay can make a
// measure read ahead.
const skewWindow = 3

// skewSamples are a node's last skewWindow measured offsets.
type skewSamples struct {
	last [skewWindow]time.Duration
	n    int
}

func (s *skewSamples) add(d time.Duration) {
	copy(s.last[1:], s.last[:skewWindow-1])
	s.last[0] = d
	s.n = min(s.n+1, skewWindow)
}

// estimate is the largest offset of the window.
func (s *skewSamples) estimate() time.Duration {
	est := s.last[0]
	for i := 1; i < s.n; i++ {
		est = max(est, s.last[i])
	}
	return est
}

func newLiveness(suspectAfter, downAfter, maxSkew time.Duration) *liveness {
	return &liveness{
		suspectAfter: suspectAfter, downAfter: downAfter, maxSkew: maxSkew, started: time.Now(),
		seen: map[string]time.Time{}, beats: map[string]*pb.Heartbeat{}, gone: map[string]bool{},
		slow: map[string]time.Time{}, skew: map[string]*skewSamples{},
	}
}

// heartbeat records a beat that arrived at at, and returns the node's
// clock offset from this coordinator's as its last beats measure it (see
// skewWindow) and whether that offset just crossed the bound, in either
// direction.
func (l *liveness) heartbeat(hb *pb.Heartbeat, at time.Time) (skew time.Duration, crossed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := hb.GetNodeId()
	l.seen[id] = at
	l.beats[id] = hb
	delete(l.gone, id)
	if sent := time.UnixMilli(hb.GetUnixMs()); !sent.Before(l.slow[id]) {
		delete(l.slow, id)
	}
	samples, known := l.skew[id]
	if !known {
		samples = &skewSamples{}
		l.skew[id] = samples
	}
	was := samples.estimate()
	samples.add(time.UnixMilli(hb.GetUnixMs()).Sub(at))
	skew = samples.estimate()
	crossed = known && outside(was, l.maxSkew) != outside(skew, l.maxSkew) || !known && outside(skew, l.maxSkew)
	return skew, crossed
}

func outside(skew, bound time.Duration) bool { return skew > bound || skew < -bound }

// skewed reports whether node's last beats showed a clock further from this
// coordinator's than the bound: its deadline checks cannot be trusted, so
// it mints nothing for this coordinator until its clock is back.
func (l *liveness) skewed(node string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	samples, ok := l.skew[node]
	return ok && outside(samples.estimate(), l.maxSkew)
}

// markSlow records that a call to node went unanswered: the node is
// suspect (tried last) until a heartbeat it sent after now arrives. A
// paused or overloaded node then stops being asked first by this
// coordinator at once, instead of after HeartbeatTimeout.
func (l *liveness) markSlow(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slow[node] = time.Now()
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
	if _, slow := l.slow[node]; slow {
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
	skew, crossed := s.liveness.heartbeat(hb, time.Now())
	s.m.clockSkew.with(labels{hb.GetNodeId()}).Set(skew.Seconds())
	if !crossed {
		return
	}
	if outside(skew, s.cfg.MaxClockSkew) {
		s.m.skewExceeded.with(labels{hb.GetNodeId()}).Inc()
		s.log.Error("a storage node's clock is off from this coordinator's by more than the bound; it mints no writes for this coordinator until it is back within",
			zap.String("node", hb.GetNodeId()), zap.Duration("skew", skew), zap.Duration("max_clock_skew", s.cfg.MaxClockSkew))
		return
	}
	s.log.Info("a storage node's clock is back within the bound", zap.String("node", hb.GetNodeId()), zap.Duration("skew", skew))
}

// Health is this coordinator's verdict on a storage node now.
func (s *Service) Health(node string) Health { return s.liveness.health(node, time.Now()) }

// Liveness is this coordinator's verdict on every node it has heard from or
// found gone (nodes never heard from are judged by Health, not listed).
func (s *Service) Liveness() map[string]Health { return s.liveness.view(time.Now()) }
