package bus

import (
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/errors"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

// Mux receives replies that a request's helpers send on the requester's
// behalf, for example the acks of replicas that the minting replica passed a
// write on to. One wildcard subscription serves every request, so no request
// subscribes (nats.go's own request mux works the same way but allows one
// reply per request). Create it with NewMux; close it with Close.
type Mux struct {
	sub  *nats.Subscription
	base string

	mu      sync.Mutex
	next    uint64
	waiting map[string]muxSlot
}

type muxSlot struct {
	w     *MuxWaiter
	index int
}

// MuxReply is one reply: Index is the position of its reply subject in
// the Open call.
type MuxReply struct {
	Index int
	Msg   *nats.Msg
}

// MuxWaiter collects the replies of one request.
type MuxWaiter struct {
	m       *Mux
	tokens  []string
	got     []bool
	replies chan MuxReply
}

// NewMux subscribes to a fresh inbox wildcard on nc.
func NewMux(nc *nats.Conn) (*Mux, error) {
	// An inbox of its own: NewRespInbox's prefix is the wildcard nats.go's
	// request mux already subscribes to, and sharing it would deliver every
	// reply of either kind to both subscriptions.
	m := &Mux{base: nc.NewInbox(), waiting: map[string]muxSlot{}}
	sub, err := nc.Subscribe(m.base+".*", m.deliver)
	if err != nil {
		return nil, errors.Wrap(err, "subscribe reply mux")
	}
	m.sub = sub
	return m, nil
}

// Open reserves n reply subjects. Each delivers at most one reply (a
// duplicate is dropped), so Replies never blocks a sender and never
// carries more than n values. Close the waiter when done with it.
func (m *Mux) Open(n int) *MuxWaiter {
	w := &MuxWaiter{m: m, tokens: make([]string, n), got: make([]bool, n), replies: make(chan MuxReply, n)}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range n {
		m.next++
		tok := strconv.FormatUint(m.next, 36)
		w.tokens[i] = tok
		m.waiting[tok] = muxSlot{w: w, index: i}
	}
	return w
}

// Subject is the reply subject of the i-th reply.
func (w *MuxWaiter) Subject(i int) string { return w.m.base + "." + w.tokens[i] }

// Replies delivers the replies as they arrive.
func (w *MuxWaiter) Replies() <-chan MuxReply { return w.replies }

// Close releases the reply subjects; later replies to them are dropped.
func (w *MuxWaiter) Close() {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	for _, tok := range w.tokens {
		delete(w.m.waiting, tok)
	}
}

func (m *Mux) deliver(msg *nats.Msg) {
	tok := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	m.mu.Lock()
	slot, ok := m.waiting[tok]
	if ok {
		if slot.w.got[slot.index] {
			ok = false // a duplicate: the first reply counted
		} else {
			slot.w.got[slot.index] = true
		}
	}
	m.mu.Unlock()
	if ok {
		// Never blocks: one slot per subject, at most one reply each.
		slot.w.replies <- MuxReply{Index: slot.index, Msg: msg}
	}
}

// DecodeReply decodes a reply received through a Mux as Request does: a
// reply carrying an error becomes a typed *status.Error.
func DecodeReply(subject string, msg *nats.Msg, resp proto.Message) error {
	return decodeReply(subject, msg, resp)
}

// Close unsubscribes. Waiters still open receive nothing more.
func (m *Mux) Close() error {
	return errors.Wrap(m.sub.Unsubscribe(), "unsubscribe reply mux")
}
