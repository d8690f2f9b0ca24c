package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

func TestReportPrintsOneLineWithTheCodeFirst(t *testing.T) {
	for _, tc := range []struct {
		err  error
		line string
		code int
	}{
		{nil, "", exitOK},
		{status.Errorf(pb.ErrorCode_TENANT_NOT_FOUND, `tenant "x" does not exist`), `pairdb: TENANT_NOT_FOUND: tenant "x" does not exist` + "\n", exitError},
		{errors.Wrap(status.Errorf(pb.ErrorCode_UNAVAILABLE, "nothing is serving s"), "start a repair round on node-1"),
			"pairdb: UNAVAILABLE: start a repair round on node-1: nothing is serving s\n", exitError},
		{errors.New("two\nlines"), "pairdb: two lines\n", exitError},
		{&exitStatus{code: exitSiblings, msg: "2 siblings"}, "pairdb: 2 siblings\n", exitSiblings},
	} {
		var w bytes.Buffer
		require.Equal(t, tc.code, report(&w, tc.err), "%v", tc.err)
		require.Equal(t, tc.line, w.String())
	}
}

func TestWriteValueAddsNothingOffATerminal(t *testing.T) {
	var w bytes.Buffer
	require.NoError(t, writeValue(&w, []byte("a\x00b"), false))
	require.Equal(t, "a\x00b", w.String())
	w.Reset()
	require.NoError(t, writeValue(&w, []byte("hello"), true))
	require.Equal(t, "hello\n", w.String(), "a terminal gets the prompt on a line of its own")
	w.Reset()
	require.NoError(t, writeValue(&w, []byte("line\n"), true))
	require.Equal(t, "line\n", w.String())
}

func TestMigrationStatus(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	m := &pb.Migration{MigrationId: "node_addition-x", State: "in_progress", KeysTransferred: 500, KeysTotal: 2000,
		Percentage: 25, StartedAtMs: start.UnixMilli(), PendingNodes: []string{"node-4"}}
	require.Equal(t, "node_addition-x: in_progress, 500/2000 (25%) keys, 250 keys/s, 2s, waiting for node-4",
		migrationStatus(m, start.Add(2*time.Second)))
	// Nothing copied yet, nothing counted: the time still moves.
	m = &pb.Migration{MigrationId: "m", State: "in_progress", StartedAtMs: start.UnixMilli()}
	require.Equal(t, "m: in_progress, 0 keys, 0 keys/s, 1.5s", migrationStatus(m, start.Add(1500*time.Millisecond)))
	// A coordinator clock ahead of ours gives no negative time.
	require.Equal(t, "m: in_progress, 0 keys, 0 keys/s, 0s", migrationStatus(m, start.Add(-time.Second)))
	// A finished migration's rate is over its whole run.
	m = &pb.Migration{MigrationId: "m", State: "completed", KeysTransferred: 300, KeysTotal: 300, Percentage: 100,
		StartedAtMs: start.UnixMilli(), EndedAtMs: start.Add(3 * time.Second).UnixMilli()}
	require.Equal(t, "m: completed, 300/300 (100%) keys, 100 keys/s, 3s", migrationStatus(m, start.Add(time.Hour)))
}
