package bus

import (
	"github.com/cockroachdb/errors"
	"google.golang.org/protobuf/proto"
)

// Group registers the endpoints of one API group (the key-value API, the
// tenant admin API, a node's endpoints) on a service, writing each name
// once: an endpoint of op is named Prefix-op (op when Prefix is empty)
// and listens on Subject(op).
type Group struct {
	Server  *Server
	Service *Service
	Prefix  string
	Subject func(op string) string
	err     error
}

// Handle serves fn as op of g. Registration errors are kept: Err reports
// the first.
func Handle[Req, Resp proto.Message](g *Group, op string, fn HandlerFunc[Req, Resp]) {
	if g.err != nil {
		return
	}
	name := op
	if g.Prefix != "" {
		name = g.Prefix + "-" + op
	}
	subject := g.Subject(op)
	h := Endpoint(g.Server, name, newMessage[Req], newMessage[Resp], fn)
	if err := g.Service.AddEndpoint(name, subject, h); err != nil {
		g.err = errors.Wrapf(err, "on %s", subject)
	}
}

// Err is the first registration error of g.
func (g *Group) Err() error { return g.err }

// newMessage allocates a fresh message of type M (a pointer to a generated
// struct).
func newMessage[M proto.Message]() M {
	var m M
	return m.ProtoReflect().Type().New().Interface().(M)
}
