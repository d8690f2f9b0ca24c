package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/client"
	"github.com/pairdb/pairdb/coordinator"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
)

// connectTo opens a NATS connection to the cluster, closed at cleanup.
func (c *cliCluster) connectTo(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.url, nats.Timeout(5*time.Second))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

func (c *cliCluster) testTenantSettings(t *testing.T) {
	// A zero given is refused, not replaced by the default.
	c.fails(t, exitError, "INVALID_REPLICATION_FACTOR: replication factor must be between 1 and 7, got 0",
		"tenant", "create", "ts-zero", "--replication-factor", "0")
	c.fails(t, exitError, "INVALID_ARGUMENT: max siblings must be between 1 and 1000, got 0",
		"tenant", "create", "ts-zero", "--max-siblings", "0")
	c.fails(t, exitError, "INVALID_ARGUMENT: max value bytes must be between 1 and 4194304",
		"tenant", "create", "ts-zero", "--max-value-bytes", "0")
	c.fails(t, exitError, "INVALID_ARGUMENT: max value bytes must be between 1 and 4194304",
		"tenant", "create", "ts-zero", "--max-value-bytes", "5MiB")
	c.fails(t, exitError, "TENANT_NOT_FOUND", "tenant", "get", "ts-zero")

	// Sizes take units, as --cache-bytes does.
	c.ok(t, "tenant", "create", "ts-a", "--max-value-bytes", "4MiB", "--replication-factor", "2")
	require.Regexp(t, `(?m)^max_value_bytes\s+4MiB$`, c.ok(t, "tenant", "get", "ts-a"))
	c.ok(t, "tenant", "update", "ts-a", "--max-value-bytes", "512KiB")
	require.Regexp(t, `(?m)^max_value_bytes\s+512KiB$`, c.ok(t, "tenant", "get", "ts-a"))
	require.Regexp(t, `(?m)^replication_factor\s+2$`, c.ok(t, "tenant", "get", "ts-a"), "update left the rest alone")

	// Rate limits: none by default, set and lifted by update.
	require.Regexp(t, `(?m)^writes_per_second\s+none$`, c.ok(t, "tenant", "get", "ts-a"))
	c.ok(t, "tenant", "update", "ts-a", "--writes-per-second", "5", "--reads-per-second", "50")
	out := c.ok(t, "tenant", "get", "ts-a")
	require.Regexp(t, `(?m)^writes_per_second\s+5/s$`, out)
	require.Regexp(t, `(?m)^reads_per_second\s+50/s$`, out)
	c.fails(t, exitError, "INVALID_ARGUMENT: writes per second must be at most 1000000",
		"tenant", "update", "ts-a", "--writes-per-second", "1000001")
	c.ok(t, "tenant", "update", "ts-a", "--writes-per-second", "0", "--reads-per-second", "0")

	// A tenant that holds data is deleted only with --force; --wait follows
	// the removal of its data until every node is done.
	c.ok(t, "--tenant", "ts-a", "put", "k", "v")
	line := c.fails(t, exitError, "TENANT_NOT_EMPTY", "tenant", "delete", "ts-a")
	require.Contains(t, line, "--force")
	require.Contains(t, c.ok(t, "tenant", "delete", "ts-a", "--force", "--wait"), "every storage node dropped tenant ts-a's data (2 keys)")
	c.fails(t, exitError, "TENANT_NOT_FOUND", "tenant", "get", "ts-a")
	c.ok(t, "tenant", "create", "ts-a")
	c.fails(t, exitError, "KEY_NOT_FOUND", "--tenant", "ts-a", "get", "k")

	// The same refusal, in the same words, from create and update: in the
	// CLI and from the coordinator itself.
	for _, rf := range []string{"9", "4"} {
		create := c.run(t, "", nil, "tenant", "create", "ts-b", "--replication-factor", rf)
		update := c.run(t, "", nil, "tenant", "update", "ts-a", "--replication-factor", rf)
		require.Equal(t, exitError, create.code, create.String())
		require.Equal(t, create.stderr, update.stderr, "RF %s", rf)
		require.Contains(t, create.stderr, "INVALID_REPLICATION_FACTOR")
	}
	cl := client.New(c.connectTo(t), client.WithTimeout(10*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	_, cerr := cl.CreateTenant(ctx, &pb.CreateTenantRequest{TenantId: "ts-b", ReplicationFactor: 9})
	_, uerr := cl.UpdateTenant(ctx, &pb.UpdateTenantRequest{TenantId: "ts-a", ReplicationFactor: proto.Uint32(9)})
	require.Error(t, cerr)
	require.Equal(t, cerr.Error(), uerr.Error())

	// Update's help does not claim create's defaults.
	help := c.ok(t, "tenant", "update", "--help")
	require.Contains(t, help, "(unchanged when omitted)")
	require.NotContains(t, help, "(default 3)")
	require.Contains(t, c.ok(t, "tenant", "create", "--help"), "(default 3)")
}

func (c *cliCluster) testJSON(t *testing.T) {
	put := jsonOf(t, c.ok(t, "put", "json-k", "v", "--json"))
	require.Equal(t, "json-k", put["key"])
	require.EqualValues(t, 2, put["replica_count"])
	require.NotEmpty(t, put["vector_clock"])
	del := jsonOf(t, c.ok(t, "delete", "json-k", "--json"))
	require.EqualValues(t, 2, del["replica_count"])
	missing := jsonOf(t, c.ok(t, "get", "json-k", "--json"))
	require.Nil(t, missing["found"], "false is left out, as in the API's JSON")

	tn := jsonOf(t, c.ok(t, "tenant", "get", "default", "--json"))
	require.Equal(t, "default", tn["tenant_id"])
	require.Equal(t, "1048576", tn["max_value_bytes"], "64-bit numbers are strings in protobuf JSON")
	list := jsonOf(t, c.ok(t, "tenant", "list", "--json"))
	require.NotEmpty(t, list["tenants"])
	created := jsonOf(t, c.ok(t, "tenant", "create", "json-t", "--json"))
	require.Equal(t, "json-t", created["tenant_id"])
	updated := jsonOf(t, c.ok(t, "tenant", "update", "json-t", "--max-siblings", "5", "--json"))
	require.EqualValues(t, 5, updated["tenant"].(map[string]any)["max_siblings"])

	nodes := jsonOf(t, c.ok(t, "node", "list", "--json"))
	require.Len(t, nodes["nodes"], 3)
	migrations := jsonOf(t, c.ok(t, "migration", "list", "--json"))
	first := migrations["migrations"].([]any)[0].(map[string]any)
	id := first["migration_id"].(string)
	m := jsonOf(t, c.ok(t, "migration", "get", id, "--json"))
	require.Equal(t, "completed", m["state"], "the migration itself, not wrapped")

	repair := jsonOf(t, c.ok(t, "repair", "--tenant", "default", "--json"))
	rounds := repair["rounds"].([]any)
	require.Len(t, rounds, 3)
	for _, r := range rounds {
		require.Equal(t, "done", r.(map[string]any)["state"])
	}
}

// testNodes adds a fourth storage node and removes it again: the progress
// of both, and the removed node hidden from `node list` unless --all.
func (c *cliCluster) testNodes(t *testing.T) {
	for i := range 40 {
		c.ok(t, "put", "nodes-"+strconv.Itoa(i), "v", "--blind")
	}
	node := startProcess(t, c.bin, "storagenode", "--server", c.url, "--id", "node-4", "--data", t.TempDir(),
		"--ops-addr", "127.0.0.1:0", "--log-level", "warn")
	deadline := time.Now().Add(e2eReady)
	for !strings.Contains(c.ok(t, "node", "list"), "node-4") {
		require.True(t, time.Now().Before(deadline), "node-4 did not register within %s", e2eReady)
		select {
		case <-node.done:
			t.Fatalf("node-4 exited: %v", node.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	r := c.run(t, "", nil, "node", "add", "node-4", "--wait")
	require.Equal(t, 0, r.code, r.String())
	require.Regexp(t, `^migration node_addition-\S+ completed: \d+ keys moved in `, r.stdout)
	// The first status line is shown at once; the migration may already
	// be over by then.
	require.Regexp(t, `: (in_progress|completed), \d+(/\d+ \(\d+%\))? keys, \d+ keys/s, `, r.stderr, "progress: keys, rate, time")
	require.Regexp(t, `(?m)^node-4\s+NORMAL\s`, c.ok(t, "node", "list"))

	r = c.run(t, "", nil, "node", "remove", "node-4", "--wait")
	require.Equal(t, 0, r.code, r.String())
	require.Contains(t, r.stdout, "completed")
	r = c.run(t, "", nil, "node", "list")
	require.Equal(t, 0, r.code, r.String())
	require.NotContains(t, r.stdout, "node-4")
	require.Contains(t, r.stderr, "1 removed node(s) not shown; --all shows them")
	require.Regexp(t, `(?m)^node-4\s+REMOVED\s.*\s-$`, c.ok(t, "node", "list", "--all"))
	node.stop(t)
}

// `nats micro stats` counts errors and the time until the reply.
func (c *cliCluster) testMicroStats(t *testing.T) {
	nc := c.connectTo(t)
	subject, err := micro.ControlSubject(micro.StatsVerb, coordinator.ServiceName, "")
	require.NoError(t, err)
	msg, err := nc.Request(subject, nil, 5*time.Second)
	require.NoError(t, err)
	var stats micro.Stats
	require.NoError(t, json.Unmarshal(msg.Data, &stats))
	byName := map[string]*micro.EndpointStats{}
	for _, e := range stats.Endpoints {
		byName[e.Name] = e
	}
	for _, name := range []string{"get", "put"} {
		e := byName[name]
		require.NotNil(t, e, name)
		require.Positive(t, e.NumRequests, name)
		require.Positive(t, e.NumErrors, "%s: the tests above had %s fail", name, name)
		require.NotEmpty(t, e.LastError, name)
		require.Positive(t, e.AverageProcessingTime, name)
	}
}
