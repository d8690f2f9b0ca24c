package coordinator

import (
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// gather is one request sent to several replicas at once, their replies
// arriving through the coordinator's reply mux: no goroutine, context or
// inbox per replica call (they were a third of a coordinator's CPU on
// reads). Exactly one reply per node comes out of next; a node that has
// not answered within the replica timeout yields DEADLINE_EXCEEDED, one
// with no subscriber UNAVAILABLE at once (and is marked down). Whoever
// reads the last reply, or gives up, calls close.
type gather struct {
	s      *Service
	op     string
	nodes  []string
	w      *bus.MuxWaiter
	timer  *time.Timer
	done   []bool
	left   int
	failed []int // indexes whose send failed, reported first
}

// gatherReply is one node's answer (msg nil when err is set before any
// reply arrived).
type gatherReply struct {
	node string
	msg  *nats.Msg
	err  error
}

func (s *Service) gather(nodes []string, op string, req proto.Message) *gather {
	g := &gather{s: s, op: op, nodes: nodes, w: s.acks.Open(len(nodes)), done: make([]bool, len(nodes)), left: len(nodes)}
	g.timer = time.NewTimer(s.cfg.ReplicaTimeout)
	data, err := proto.Marshal(req)
	for i, node := range nodes {
		if err == nil {
			err = s.nc.PublishMsg(&nats.Msg{Subject: s.cfg.Subjects.Node(node, op), Reply: g.w.Subject(i), Data: data})
		}
		if err != nil {
			g.failed = append(g.failed, i)
		}
	}
	return g
}

// next blocks for the next reply; abort (may be nil) ends the wait early
// with ok false. It must not be called more than len(nodes) times.
func (g *gather) next(abort <-chan struct{}) (r gatherReply, ok bool) {
	if len(g.failed) > 0 {
		i := g.failed[0]
		g.failed = g.failed[1:]
		return g.finish(i, nil, bus.Errorf(pb.ErrorCode_UNAVAILABLE, "could not send %s to %s", g.op, g.nodes[i])), true
	}
	for {
		select {
		case rep := <-g.w.Replies():
			if g.done[rep.Index] {
				continue // already reported as timed out
			}
			return g.finish(rep.Index, rep.Msg, nil), true
		case <-g.timer.C:
			for i, node := range g.nodes {
				if !g.done[i] {
					// Reported one by one: the rest stay due at once.
					g.timer.Reset(0)
					return g.finish(i, nil, bus.Errorf(pb.ErrorCode_DEADLINE_EXCEEDED,
						"no reply from %s to %s within %s", node, g.op, g.s.cfg.ReplicaTimeout)), true
				}
			}
		case <-abort:
			return gatherReply{}, false
		}
	}
}

func (g *gather) finish(i int, msg *nats.Msg, err error) gatherReply {
	g.done[i] = true
	g.left--
	return gatherReply{node: g.nodes[i], msg: msg, err: err}
}

// decode fills resp from a reply (typed errors as Request returns them)
// and counts the call in the replica metrics.
func (g *gather) decode(r gatherReply, kind string, resp proto.Message) error {
	err := r.err
	if err == nil {
		err = bus.DecodeReply(g.s.cfg.Subjects.Node(r.node, g.op), r.msg, resp)
	}
	if errors.Is(err, nats.ErrNoResponders) {
		g.s.liveness.markDown(r.node)
	}
	g.s.m.replica(kind, r.node, err)
	return err
}

// close releases the reply subjects and the timer.
func (g *gather) close() {
	g.timer.Stop()
	g.w.Close()
}
