package coordinator

import (
	"fmt"
	"strings"
)

// writeEventKind is what a call of the write path answered.
type writeEventKind int

const (
	evPlaced         writeEventKind = iota // the ring was read: view
	evPlaceFailed                          // the key cannot be placed: err
	evApplied                              // the apply at node answered: existing, forwards
	evRefusedNode                          // node certainly minted nothing; another may (deadlinePassed ends the search)
	evRefusedRequest                       // the request itself is refused: err
	evRefusedStale                         // node is at a newer ring epoch: epoch
	evUnknown                              // node may have minted: err
	evReassigned                           // the claim names the next candidate
	evReassignFailed                       // the claim could not be renamed: err
	evSurvivors                            // the survivors were read: found, holds, complete, candidates
	evMergeAck                             // node holds the version
	evMergeFail                            // node failed or timed out (it is hinted)
	evMergeStale                           // node refused the merge at a newer epoch
	evDeadline                             // the request's deadline passed
	evCaughtUp                             // the newer epoch is folded
	evCatchUpFailed                        // it could not be: err
)

var writeEventNames = [...]string{
	"placed", "place-failed", "applied", "refused-node", "refused-request", "stale", "unknown",
	"reassigned", "reassign-failed", "survivors", "ack", "fail", "merge-stale", "deadline",
	"caught-up", "catch-up-failed",
}

func (k writeEventKind) String() string { return writeEventNames[k] }

// writeEvent is one answer fed to the write machine.
type writeEvent struct {
	kind  writeEventKind
	node  string
	epoch uint64
	err   error
	view  ringView // evPlaced
	// evApplied: the version is an earlier attempt's; the replicas the
	// minter forwarded it to.
	existing bool
	forwards []string
	// evRefusedNode: the request's deadline has passed, so no other
	// candidate is asked.
	deadlinePassed bool
	// evSurvivors: a replica holds the write's sibling or a record of it;
	// one holds the key; every replica answered; and the minter order now,
	// should it mint after all.
	found, holds, complete bool
	candidates             []string
}

func (e writeEvent) String() string {
	s := e.kind.String()
	if e.node != "" {
		s += " " + e.node
	}
	if e.epoch != 0 {
		s += fmt.Sprintf(" epoch=%d", e.epoch)
	}
	return s
}

// writeActionKind is what the write machine asks its driver to do.
type writeActionKind int

const (
	actPlace                 writeActionKind = iota // read the ring and place the key
	actApply                                        // ask node to mint (resolve: a retry at its named minter)
	actReassign                                     // rename the claim's minter to node
	actReadSurvivors                                // read the write's origin from nodes
	actMerge                                        // send the version to nodes at epoch
	actAwait                                        // wait for the next replica result or the deadline
	actCatchUp                                      // fold the ring up to epoch
	actCountQuorumFailure                           // coordinator_quorum_failures_total
	actCountOutcomeUnknown                          // coordinator_outcome_unknown_total; node is suspect
	actCountMinterReassigned                        // coordinator_minter_reassigned_total
	actFinish                                       // answer: err, or acks and existing
)

// writeAction is one thing the driver does for the machine.
type writeAction struct {
	kind     writeActionKind
	node     string
	nodes    []string
	epoch    uint64
	resolve  bool
	acks     int
	existing bool
	err      error
}

// String is the action as the table files write it.
func (a writeAction) String() string {
	switch a.kind {
	case actPlace:
		return "place"
	case actApply:
		s := fmt.Sprintf("apply %s epoch=%d", a.node, a.epoch)
		if a.resolve {
			s += " resolve"
		}
		return s
	case actReassign:
		return "reassign " + a.node
	case actReadSurvivors:
		return fmt.Sprintf("read-survivors (%s) epoch=%d", strings.Join(a.nodes, ","), a.epoch)
	case actMerge:
		return fmt.Sprintf("merge (%s) epoch=%d", strings.Join(a.nodes, ","), a.epoch)
	case actAwait:
		return "await"
	case actCatchUp:
		return fmt.Sprintf("catch-up epoch=%d", a.epoch)
	case actCountQuorumFailure:
		return "count quorum-failure"
	case actCountOutcomeUnknown:
		return "count outcome-unknown " + a.node
	case actCountMinterReassigned:
		return "count minter-reassigned"
	case actFinish:
		if a.err != nil {
			return "finish " + a.err.Error()
		}
		s := fmt.Sprintf("finish won acks=%d", a.acks)
		if a.existing {
			s += " existing"
		}
		return s
	}
	return fmt.Sprintf("action(%d)", int(a.kind))
}
