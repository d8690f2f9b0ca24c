package coordinator

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// TestWriteMachineTables drives the write machine from scripted replica
// replies, one fault case per file in testdata/write. Each step is an event
// line, "----", and the actions the machine answers with, one a line (see
// writeAction.String); blank lines separate steps and "#" starts a comment.
// The first line is start, and the last answer must finish the write.
//
//	start level=quorum keyed named=a          the request (keyed: an idempotency claim; retry; named minter)
//	placed epoch=1 cur=(a,b,c) next=(a,b,d)   the ring (candidates=(...) defaults to every replica; named-member)
//	applied a existing forwards=(b,c)         the apply's answer; also refused-node a [deadline-passed],
//	                                          refused-request a code=C, stale a epoch=E, unknown a
//	reassigned | reassign-failed              the claim's rename
//	survivors found holds complete            the survivors' read (candidates=(...) defaults to the placement's)
//	ack b | fail b | merge-stale b epoch=E    a replica's merge result; deadline; caught-up | catch-up-failed
func TestWriteMachineTables(t *testing.T) {
	files, err := filepath.Glob("testdata/write/*.txt")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			var m *writeMachine
			var view ringView
			finished := false
			for _, st := range readScript(t, file) {
				require.False(t, finished, "%s:%d: an event after the write finished", file, st.line)
				var acts []writeAction
				if st.cmd == "start" {
					m = newWriteMachine(scriptSpec(st))
					acts = m.start()
				} else {
					require.NotNil(t, m, "%s:%d: the script must start with start", file, st.line)
					ev := scriptEvent(t, st, view)
					if ev.kind == evPlaced {
						view = ev.view
					}
					acts = m.handle(ev)
				}
				lines := make([]string, len(acts))
				for i, a := range acts {
					lines[i] = a.String()
					finished = finished || a.kind == actFinish
				}
				require.Equal(t, st.want, strings.Join(lines, "\n"), "%s:%d: %s %s", file, st.line, st.cmd, strings.Join(st.pos, " "))
			}
			require.True(t, finished, "%s: the script ends before the write finished", file)
		})
	}
}

// scriptStep is one event of a table file and the actions it expects.
type scriptStep struct {
	line int
	cmd  string
	pos  []string // the words without "=": a node, then flags
	args map[string]string
	want string
}

func (st scriptStep) flag(name string) bool { return slices.Contains(st.pos, name) }

func (st scriptStep) node() string {
	if len(st.pos) == 0 {
		return ""
	}
	return st.pos[0]
}

func (st scriptStep) epoch(t *testing.T) uint64 {
	e, err := strconv.ParseUint(st.args["epoch"], 10, 64)
	require.NoError(t, err, "line %d: epoch", st.line)
	return e
}

func (st scriptStep) code() pb.ErrorCode {
	if c, ok := pb.ErrorCode_value[st.args["code"]]; ok {
		return pb.ErrorCode(c)
	}
	return pb.ErrorCode_UNAVAILABLE
}

func readScript(t *testing.T, file string) []scriptStep {
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	lines := strings.Split(string(data), "\n")
	var out []scriptStep
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		st := scriptStep{line: i + 1, cmd: fields[0], args: map[string]string{}}
		for _, f := range fields[1:] {
			if k, v, ok := strings.Cut(f, "="); ok {
				st.args[k] = v
			} else {
				st.pos = append(st.pos, f)
			}
		}
		i++
		require.Less(t, i, len(lines), "%s:%d: no ---- after the event", file, st.line)
		require.Equal(t, "----", strings.TrimSpace(lines[i]), "%s:%d", file, i+1)
		var want []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, strings.TrimSpace(lines[i]))
		}
		st.want = strings.Join(want, "\n")
		out = append(out, st)
	}
	return out
}

func scriptSpec(st scriptStep) writeSpec {
	level, err := quorum.ParseLevel(st.args["level"])
	if err != nil {
		level = quorum.Quorum
	}
	keyed := st.flag("keyed")
	return writeSpec{key: "k", level: level, idemKey: keyed, claimed: keyed, retry: st.flag("retry"),
		named: st.args["named"], maxSkew: 250 * time.Millisecond}
}

// scriptEvent turns a table line into the event the driver would feed.
func scriptEvent(t *testing.T, st scriptStep, view ringView) writeEvent {
	node := st.node()
	ev := writeEvent{node: node}
	switch st.cmd {
	case "placed":
		ev.kind, ev.view = evPlaced, scriptView(t, st)
	case "place-failed":
		ev.kind, ev.err = evPlaceFailed, status.Errorf(st.code(), "scripted: the key cannot be placed")
	case "applied":
		ev.kind, ev.existing, ev.forwards = evApplied, st.flag("existing"), scriptList(st.args["forwards"])
	case "refused-node":
		ev.kind, ev.deadlinePassed = evRefusedNode, st.flag("deadline-passed")
		ev.err = errors.Newf("scripted: no responders at %s", node)
		if _, ok := st.args["code"]; ok {
			ev.err = status.Errorf(st.code(), "scripted: %s refused", node)
		}
	case "refused-request":
		ev.kind, ev.err = evRefusedRequest, status.Errorf(st.code(), "scripted: %s refused the request", node)
	case "stale":
		ev.kind, ev.epoch = evRefusedStale, st.epoch(t)
	case "unknown":
		ev.kind, ev.err = evUnknown, errors.Newf("scripted: no reply from %s in time", node)
	case "reassigned":
		ev.kind = evReassigned
	case "reassign-failed":
		ev.kind, ev.err = evReassignFailed, errors.New("scripted: the record changed")
	case "survivors":
		ev.kind, ev.found, ev.holds, ev.complete = evSurvivors, st.flag("found"), st.flag("holds"), st.flag("complete")
		ev.candidates = view.candidates
		if c, ok := st.args["candidates"]; ok {
			ev.candidates = scriptList(c)
		}
	case "ack":
		ev.kind = evMergeAck
	case "fail":
		ev.kind = evMergeFail
	case "merge-stale":
		ev.kind, ev.epoch = evMergeStale, st.epoch(t)
	case "deadline":
		ev.kind = evDeadline
	case "caught-up":
		ev.kind = evCaughtUp
	case "catch-up-failed":
		ev.kind, ev.err = evCatchUpFailed, status.Errorf(pb.ErrorCode_UNAVAILABLE, "scripted: could not catch up")
	default:
		require.FailNow(t, "unknown event", "line %d: %s", st.line, st.cmd)
	}
	return ev
}

func scriptView(t *testing.T, st scriptStep) ringView {
	cur := scriptList(st.args["cur"])
	require.NotEmpty(t, cur, "line %d: placed needs cur", st.line)
	next := cur
	if n, ok := st.args["next"]; ok {
		next = scriptList(n)
	}
	all := slices.Clone(cur)
	for _, n := range next {
		if !slices.Contains(all, n) {
			all = append(all, n)
		}
	}
	v := ringView{epoch: st.epoch(t), joint: quorum.Joint{Cur: cur, Next: next}, all: all,
		candidates: all, namedMember: st.flag("named-member")}
	if c, ok := st.args["candidates"]; ok {
		v.candidates = scriptList(c)
	}
	return v
}

// scriptList reads "(a,b,c)"; "" and "()" are empty.
func scriptList(v string) []string {
	v = strings.TrimSuffix(strings.TrimPrefix(v, "("), ")")
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}
