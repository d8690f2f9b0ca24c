package coordinator

import (
	"slices"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// One write, at most one version (DESIGN.md §6, step 3).
//
// A write's version is minted by exactly one replica, its minter. The
// coordinator tries another replica only when the one it asked certainly
// did not mint: nothing was serving its subject (no responders), the send
// itself failed, or it answered a refusal. A replica answers an error only
// when nothing of the write left it; the one exception, a commit that
// failed after the version was forwarded, it answers OUTCOME_UNKNOWN.
// Everything else (no answer by the deadline, a lost connection, an answer
// that cannot be read) leaves the outcome unknown, and the write is never
// minted anywhere else: the client gets OUTCOME_UNKNOWN.
//
// Every apply carries a deadline, and the replica mints nothing at or past
// it; the coordinator stops waiting only once the deadline has passed on
// the replica's clock too (MaxClockSkew), so a replica that was paused, or
// a request that sat in a buffer, can never mint a write its coordinator
// has given up on.
//
// A write with an idempotency key names its minter in its idempotency
// record before the first apply, and renames it only after a certain
// refusal (Claim.Reassign). A retry of that write (the record is RETRY, or
// a takeover) is resolved where it may have landed (resolve): the named
// minter is asked again, and its origin check makes that idempotent
// (existing: nothing new is minted). If the minter has left the cluster
// (removed, force-removed, or back with an empty disk) the survivors are
// read instead.
//
// writeMachine holds these rules, and the joint quorum and the epoch
// refresh of the fan-out, as decisions without I/O: it takes what a call
// answered (a writeEvent) and says what to do next (writeActions). The
// driver (writerun.go) performs the actions with the real NATS calls.
// testdata/write/*.txt drive it from scripted replica replies.

// writeStep is where a write stands.
type writeStep int

const (
	stepPlace     writeStep = iota // waiting for the key's placement (at the start and after each catch-up)
	stepMint                       // an apply is out at candidates[0]
	stepReassign                   // the claim is being renamed to candidates[0]
	stepResolve                    // a retry's apply is out at its named minter
	stepSurvivors                  // a retry's survivors are being read
	stepCollect                    // the version is out; counting acks per replica set
	stepCatchUp                    // waiting to fold a newer ring epoch
	stepDone                       // finished: no event is expected
)

func (s writeStep) String() string {
	return [...]string{"place", "mint", "reassign", "resolve", "survivors", "collect", "catch-up", "done"}[s]
}

// writeSpec is what the machine knows of the request.
type writeSpec struct {
	key   string
	level quorum.Level
	// idemKey: the request has an idempotency key (what an error advises).
	idemKey bool
	// claimed: an idempotency claim is held; named is the minter it names,
	// and retry says an earlier attempt may have landed.
	claimed bool
	retry   bool
	named   string
	// maxSkew is MaxClockSkew, for a message.
	maxSkew time.Duration
}

// ringView is the key's placement under one ring epoch, as the driver read
// it.
type ringView struct {
	epoch uint64
	joint quorum.Joint
	all   []string // every replica a write goes to: cur, then next's others
	// candidates are the replicas that may be asked to mint, in the order
	// to ask them (liveness, clock skew, refills).
	candidates []string
	// namedMember: the named minter is still a ring member with the
	// incarnation the record names (it may hold the earlier attempt).
	namedMember bool
}

// writeMachine decides one write. It is not safe for concurrent use.
type writeMachine struct {
	spec     writeSpec
	step     writeStep
	view     ringView
	attempt  int    // catch-ups so far; maxEpochRetries bounds them
	named    string // the minter the idempotency record names now
	resolved bool   // an earlier attempt's fate is settled

	// Minting: the candidates not yet refused (the one asked first), and
	// the last certain refusal.
	candidates []string
	refusal    error

	// The fan-out of the settled version.
	minted        bool
	existing      bool // the version is an earlier attempt's
	sent          map[string]bool
	acked, failed map[string]bool
	pending       int    // sends not yet answered, across epochs
	stale         uint64 // the newest epoch a merge was refused with under this view
}

func newWriteMachine(spec writeSpec) *writeMachine {
	return &writeMachine{spec: spec, named: spec.named}
}

// start is the first action: read the ring.
func (m *writeMachine) start() []writeAction {
	m.step = stepPlace
	return []writeAction{{kind: actPlace}}
}

// handle takes the answer to the last action and returns the next ones.
func (m *writeMachine) handle(ev writeEvent) []writeAction {
	switch m.step {
	case stepPlace:
		return m.onPlaced(ev)
	case stepMint:
		return m.onMintReply(ev)
	case stepReassign:
		return m.onReassigned(ev)
	case stepResolve:
		return m.onResolveReply(ev)
	case stepSurvivors:
		return m.onSurvivors(ev)
	case stepCollect:
		return m.onReplicaResult(ev)
	case stepCatchUp:
		return m.onCaughtUp(ev)
	}
	return m.unexpected(ev)
}

func (m *writeMachine) onPlaced(ev writeEvent) []writeAction {
	switch ev.kind {
	case evPlaceFailed:
		return m.finish(ev.err)
	case evPlaced:
	default:
		return m.unexpected(ev)
	}
	m.view = ev.view
	switch {
	case m.minted:
		// A newer ring: the same version goes to the replicas it adds.
		return m.fanOut()
	case m.spec.claimed && m.spec.retry && !m.resolved:
		return m.resolve()
	}
	return m.mint(m.view.candidates)
}

// mint asks the candidates in order, the named minter first: it may still
// be asked, and asking another first would need a Reassign anyway.
func (m *writeMachine) mint(candidates []string) []writeAction {
	c := slices.Clone(candidates)
	if m.spec.claimed {
		if i := slices.Index(c, m.named); i > 0 {
			c = append([]string{m.named}, slices.Delete(c, i, i+1)...)
		}
	}
	if len(c) == 0 {
		return m.finish(status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"no replica of key %q can mint the write: every one is down or its clock is off by more than %s",
			m.spec.key, m.spec.maxSkew))
	}
	m.candidates, m.refusal = c, nil
	return m.askCandidate()
}

// askCandidate asks candidates[0], renaming the minter first when it is
// not the named one: the named one certainly refused.
func (m *writeMachine) askCandidate() []writeAction {
	node := m.candidates[0]
	if m.spec.claimed && m.named != node {
		m.step = stepReassign
		return []writeAction{{kind: actReassign, node: node}}
	}
	m.step = stepMint
	return []writeAction{{kind: actApply, node: node, epoch: m.view.epoch}}
}

func (m *writeMachine) onReassigned(ev writeEvent) []writeAction {
	node := m.candidates[0]
	switch ev.kind {
	case evReassigned:
		m.named = node
		m.step = stepMint
		return []writeAction{{kind: actCountMinterReassigned}, {kind: actApply, node: node, epoch: m.view.epoch}}
	case evReassignFailed:
		return m.finish(status.Wrap(pb.ErrorCode_UNAVAILABLE, ev.err,
			"could not name replica %s as the write's minter; nothing was written, retry", node))
	}
	return m.unexpected(ev)
}

func (m *writeMachine) onMintReply(ev writeEvent) []writeAction {
	node := m.candidates[0]
	if ev.node != node {
		return m.unexpected(ev)
	}
	switch ev.kind {
	case evApplied:
		return m.adopt(node, ev.existing, ev.forwards)
	case evRefusedStale:
		return m.mintStale(ev.epoch)
	case evRefusedRequest:
		return m.finish(ev.err)
	case evUnknown:
		// It may have minted: nobody else may be asked.
		return m.unknown(node, ev.err)
	case evRefusedNode:
		m.refusal = ev.err
		m.candidates = m.candidates[1:]
		if len(m.candidates) > 0 && !ev.deadlinePassed {
			return m.askCandidate()
		}
		return append([]writeAction{{kind: actCountQuorumFailure}}, m.finish(status.Wrap(pb.ErrorCode_QUORUM_NOT_REACHED,
			errOrNone(m.refusal), "no replica of key %q could take the write; nothing was written", m.spec.key))...)
	}
	return m.unexpected(ev)
}

// mintStale follows a replica that refused the apply with a newer epoch:
// nothing was minted, so the write catches up and looks for its minter
// under the newer ring.
func (m *writeMachine) mintStale(epoch uint64) []writeAction {
	if m.attempt >= maxEpochRetries {
		return m.finish(status.Errorf(pb.ErrorCode_UNAVAILABLE,
			"the ring kept moving (epoch %d) while the write of key %q looked for its minter; nothing was written, retry",
			epoch, m.spec.key))
	}
	m.step = stepCatchUp
	return []writeAction{{kind: actCatchUp, epoch: epoch}}
}

func (m *writeMachine) onCaughtUp(ev writeEvent) []writeAction {
	switch ev.kind {
	case evCaughtUp:
		m.attempt++
		m.step = stepPlace
		return []writeAction{{kind: actPlace}}
	case evCatchUpFailed:
		return m.finish(ev.err)
	}
	return m.unexpected(ev)
}

// unknown ends a write whose minter may have minted it.
func (m *writeMachine) unknown(node string, cause error) []writeAction {
	hint := "retry with the same idempotency key: the retry completes the write at that replica, or finds it done"
	if !m.spec.idemKey {
		hint = "without an idempotency key, a retry is a new write (it may store the value twice)"
	}
	return append([]writeAction{{kind: actCountOutcomeUnknown, node: node}}, m.finish(status.Wrap(pb.ErrorCode_OUTCOME_UNKNOWN, cause,
		"the write of key %q may or may not have been applied: replica %s, the only one allowed to mint it, did not confirm it in time; %s",
		m.spec.key, node, hint))...)
}

func errOrNone(err error) error {
	if err == nil {
		return errors.New("no replica was asked")
	}
	return err
}

func (m *writeMachine) finish(err error) []writeAction {
	m.step = stepDone
	return []writeAction{{kind: actFinish, err: err}}
}

// unexpected ends the write on an event its step cannot take: a bug in
// the driver, never a replica's doing.
func (m *writeMachine) unexpected(ev writeEvent) []writeAction {
	return m.finish(status.Errorf(pb.ErrorCode_INTERNAL, "write of key %q: event %s in step %s", m.spec.key, ev, m.step))
}

// resolve settles a retry of a write whose earlier attempt may have
// landed: at its named minter when that replica is still one of the key's,
// by reading the survivors when it has left.
func (m *writeMachine) resolve() []writeAction {
	if m.named != "" && m.view.namedMember && slices.Contains(m.view.all, m.named) {
		m.step = stepResolve
		return []writeAction{{kind: actApply, node: m.named, epoch: m.view.epoch, resolve: true}}
	}
	// The named minter is gone, or no longer a replica of the key. Every
	// copy of the write that exists is on a replica of the key (copies move
	// with the data) or, if it is still a ring member, on the old minter
	// itself.
	ask := slices.Clone(m.view.all)
	if m.view.namedMember && !slices.Contains(ask, m.named) {
		ask = append(ask, m.named)
	}
	m.step = stepSurvivors
	return []writeAction{{kind: actReadSurvivors, nodes: ask, epoch: m.view.epoch}}
}

func (m *writeMachine) onResolveReply(ev writeEvent) []writeAction {
	if ev.node != m.named {
		return m.unexpected(ev)
	}
	switch ev.kind {
	case evApplied:
		m.resolved = true
		return m.adopt(m.named, ev.existing, ev.forwards)
	case evRefusedStale:
		return m.mintStale(ev.epoch)
	case evRefusedRequest:
		// The minter holds nothing of the write (it would have said
		// existing) and refuses it now: nothing was ever written.
		return m.finish(ev.err)
	case evRefusedNode, evUnknown:
		// Only the named minter may mint it, and it did not say.
		return m.unknown(m.named, ev.err)
	}
	return m.unexpected(ev)
}

func (m *writeMachine) onSurvivors(ev writeEvent) []writeAction {
	if ev.kind != evSurvivors {
		return m.unexpected(ev)
	}
	switch {
	case ev.found && ev.holds:
		m.resolved = true
		return m.adopt("", true, nil)
	case ev.found || !ev.complete:
		return m.unknown(m.named, errors.Newf("the replicas that could hold it did not all answer"))
	}
	// Every replica that could hold a copy answered, and none has one: the
	// earlier attempt never minted. Mint it now.
	m.resolved = true
	return m.mint(ev.candidates)
}

// adopt settles the write on a version: minted by `by` ("" when it was
// read from the survivors), an earlier attempt's when existing, already
// forwarded by its minter to forwards. Then it fans out.
func (m *writeMachine) adopt(by string, existing bool, forwards []string) []writeAction {
	m.minted, m.existing = true, existing
	m.sent, m.acked, m.failed = map[string]bool{}, map[string]bool{}, map[string]bool{}
	if by != "" {
		// The minter holds it: its answer is its ack.
		m.sent[by], m.acked[by] = true, true
	}
	for _, node := range forwards {
		m.sent[node] = true
		m.pending++
	}
	return m.fanOut()
}

// fanOut sends the version to every replica of the view not sent to yet
// (under a newer ring: the ones it adds, and those that refused as stale)
// and counts from there.
func (m *writeMachine) fanOut() []writeAction {
	m.step = stepCollect
	m.stale = 0
	var send []string
	for _, node := range m.view.all {
		if !m.sent[node] {
			m.sent[node] = true
			m.pending++
			send = append(send, node)
		}
	}
	var acts []writeAction
	if len(send) > 0 {
		acts = append(acts, writeAction{kind: actMerge, nodes: send, epoch: m.view.epoch})
	}
	return append(acts, m.decide()...)
}

func (m *writeMachine) onReplicaResult(ev writeEvent) []writeAction {
	switch ev.kind {
	case evMergeAck:
		m.pending--
		m.acked[ev.node] = true
	case evMergeFail:
		m.pending--
		m.failed[ev.node] = true
	case evMergeStale:
		m.pending--
		m.stale = max(m.stale, ev.epoch, m.view.epoch+1)
		// Sent again under the newer ring.
		delete(m.sent, ev.node)
	case evDeadline:
		return m.lost(" before the deadline")
	default:
		return m.unexpected(ev)
	}
	return m.decide()
}

// decide answers as soon as W replicas hold the version in each replica
// set, and gives up when that can no longer happen under this view.
func (m *writeMachine) decide() []writeAction {
	switch m.view.joint.Outcome(m.spec.level, m.acked, m.failed) {
	case quorum.Won:
		m.step = stepDone
		return []writeAction{{kind: actFinish, acks: len(m.acked), existing: m.existing}}
	case quorum.Lost:
		if m.pending == 0 || m.stale > 0 {
			return m.lost("")
		}
		// A stale refusal may still arrive: it would make this a resend
		// under a newer ring rather than a failure.
	}
	if m.pending == 0 {
		return m.lost("")
	}
	return []writeAction{{kind: actAwait}}
}

// lost ends a write that cannot meet W under this view with
// QUORUM_NOT_REACHED, unless a replica refused as stale: then it catches
// up and goes on under the newer ring, and fails only once it gives up
// following the ring (uncounted: the ring moved, no quorum was missed).
func (m *writeMachine) lost(why string) []writeAction {
	var acts []writeAction
	if m.stale == 0 {
		acts = append(acts, writeAction{kind: actCountQuorumFailure})
	}
	if m.stale == 0 || m.attempt >= maxEpochRetries {
		return append(acts, m.finish(status.Errorf(pb.ErrorCode_QUORUM_NOT_REACHED,
			"write reached %d of its replicas%s; %s needs %s (it may still be applied: retry with the same idempotency key)",
			len(m.acked), why, m.spec.level, m.view.joint.Need(m.spec.level)))...)
	}
	m.step = stepCatchUp
	return append(acts, writeAction{kind: actCatchUp, epoch: m.stale})
}
