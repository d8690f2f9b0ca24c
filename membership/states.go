package membership

import (
	"fmt"
)

// NodeState is a storage node's place in its lifecycle, as the ring log
// says. The ring itself only knows which nodes own points (Normal and
// Leaving ones in the current ring, Normal and Joining ones in the next).
type NodeState int

const (
	// Registered nodes announced themselves but are not (or no longer)
	// ring members. They own nothing.
	Registered NodeState = iota
	// Joining members own no points in the current ring yet: they take
	// writes for the next ring while ranges are transferred to them.
	Joining
	// Normal members own points and serve reads and writes.
	Normal
	// Leaving members still own points (they serve reads) until cutover.
	Leaving
	// Removed members own nothing; they stay listed so late messages from
	// them can be recognised.
	Removed
)

func (s NodeState) String() string {
	switch s {
	case Registered:
		return "REGISTERED"
	case Joining:
		return "JOINING"
	case Normal:
		return "NORMAL"
	case Leaving:
		return "LEAVING"
	case Removed:
		return "REMOVED"
	}
	return fmt.Sprintf("NodeState(%d)", int(s))
}

// member reports whether a node in state s belongs to the ring at all.
func (s NodeState) member() bool { return s == Joining || s == Normal || s == Leaving }

// Shown is the node's state as operators see it (node list, heartbeats):
// its NodeState, except REFILLING for a NORMAL member being refilled.
func (n Node) Shown() string {
	if n.Refilling && n.State == Normal {
		return "REFILLING"
	}
	return n.State.String()
}
