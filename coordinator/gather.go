package coordinator

import (
	"time"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/bus"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// gather is one request sent to several replicas, their replies arriving
// through the coordinator's reply mux: no goroutine, context or inbox per
// replica call (they were a third of a coordinator's CPU on reads). It may
// send to some nodes first and more later (send). Exactly one reply per
// sent node comes out of next; a node that has not answered by the replica
// timeout (counted from the gather's start) yields DEADLINE_EXCEEDED, one
// with no subscriber UNAVAILABLE at once (and is marked down). Whoever
// reads the last reply, or gives up, calls close.
type gather struct {
	s      *Service
	op     string
	nodes  []string
	data   []byte
	encErr error
	w      *bus.MuxWaiter
	timer  *time.Timer
	sent   int // nodes[:sent] were sent the request
	done   []bool
	left   int           // sent and not yet reported
	failed []gatherReply // sends that failed, reported first
}

// gatherReply is one node's answer (msg nil when err is set before any
// reply arrived).
type gatherReply struct {
	node  string
	index int
	msg   *nats.Msg
	err   error
}

// gatherStatus says why next returned.
type gatherStatus int

const (
	gotReply gatherStatus = iota
	aborted               // the abort channel closed
	hedged                // the hedge timer fired
)

// gather opens reply subjects for every node and sends req to the first
// `first` of them.
func (s *Service) gather(nodes []string, op string, req proto.Message, first int) *gather {
	g := s.openGather(nodes, op)
	g.data, g.encErr = proto.Marshal(req)
	g.send(first)
	return g
}

// sentElsewhere opens a gather for requests someone else sends to every
// node with the gather's reply subjects (a minting replica's forwards).
func (s *Service) sentElsewhere(nodes []string, op string) *gather {
	g := s.openGather(nodes, op)
	g.sent, g.left = len(nodes), len(nodes)
	return g
}

func (s *Service) openGather(nodes []string, op string) *gather {
	return &gather{
		s: s, op: op, nodes: nodes, w: s.acks.Open(len(nodes)), done: make([]bool, len(nodes)),
		timer: time.NewTimer(s.cfg.ReplicaTimeout),
	}
}

// send sends the request to up to k more nodes, in order.
func (g *gather) send(k int) {
	for ; k > 0 && g.sent < len(g.nodes); k-- {
		i := g.sent
		g.sent++
		g.left++
		var err error
		if g.encErr != nil {
			err = status.Wrap(pb.ErrorCode_INTERNAL, g.encErr, "encode %s for %s", g.op, g.nodes[i])
		} else if perr := g.s.nc.PublishMsg(&nats.Msg{Subject: g.s.cfg.Subjects.Node(g.nodes[i], g.op), Reply: g.w.Subject(i), Data: g.data}); perr != nil {
			err = status.Wrap(pb.ErrorCode_UNAVAILABLE, perr, "send %s to %s", g.op, g.nodes[i])
		}
		if err != nil {
			g.failed = append(g.failed, gatherReply{node: g.nodes[i], err: err, index: i})
		}
	}
}

// unsent is how many nodes have not been sent the request.
func (g *gather) unsent() int { return len(g.nodes) - g.sent }

// next blocks for the next reply of a sent node. abort and hedge (either
// may be nil) end the wait early. It must not be called when left is 0.
func (g *gather) next(abort <-chan struct{}, hedge <-chan time.Time) (gatherReply, gatherStatus) {
	if len(g.failed) > 0 {
		f := g.failed[0]
		g.failed = g.failed[1:]
		return g.finish(f.index, nil, f.err), gotReply
	}
	for {
		// A reply already in counts before the timer: when both are ready,
		// select would pick at random.
		select {
		case rep := <-g.w.Replies():
			if !g.done[rep.Index] {
				return g.finish(rep.Index, rep.Msg, nil), gotReply
			}
			continue
		default:
		}
		select {
		case rep := <-g.w.Replies():
			if g.done[rep.Index] {
				continue // already reported as timed out
			}
			return g.finish(rep.Index, rep.Msg, nil), gotReply
		case <-g.timer.C:
			for i := range g.sent {
				if !g.done[i] {
					// Reported one by one: the rest stay due at once.
					g.timer.Reset(0)
					return g.finish(i, nil, status.Errorf(pb.ErrorCode_DEADLINE_EXCEEDED,
						"no reply from %s to %s within %s", g.nodes[i], g.op, g.s.cfg.ReplicaTimeout)), gotReply
				}
			}
		case <-hedge:
			return gatherReply{}, hedged
		case <-abort:
			return gatherReply{}, aborted
		}
	}
}

func (g *gather) finish(i int, msg *nats.Msg, err error) gatherReply {
	g.done[i] = true
	g.left--
	return gatherReply{node: g.nodes[i], index: i, msg: msg, err: err}
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
