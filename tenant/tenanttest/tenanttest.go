// Package tenanttest is the conformance suite every tenant.Store must pass.
// It knows nothing about the backend: a JetStream KV store and a PostgreSQL
// store run the same cases, so they cannot drift apart in semantics.
package tenanttest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
	"github.com/pairdb/pairdb/tenant"
)

// opTimeout bounds every store call in the suite, so a hung backend fails
// the test instead of stalling it.
const opTimeout = 10 * time.Second

// Run runs the suite. newStore is called once per subtest and must return an
// empty store (List is checked for exact contents) that it cleans up itself
// via t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) tenant.Store) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s tenant.Store)
	}{
		{"CreateGetRoundTrip", testCreateGet},
		{"CreateDuplicate", testCreateDuplicate},
		{"CreateInvalid", testCreateInvalid},
		{"GetMissing", testGetMissing},
		{"GetInvalidID", testGetInvalidID},
		{"ReturnedRecordsAreOwnedByCaller", testOwnership},
		{"UpdateVersioned", testUpdate},
		{"UpdateMissing", testUpdateMissing},
		{"UpdateConcurrentSameVersion", testUpdateConcurrent},
		{"ListPaging", testListPaging},
		{"ListEmptyAndBadToken", testListEmpty},
		{"ListPageSizeDefaultsAndCap", testListPageSize},
		{"Delete", testDelete},
		{"DeleteMissing", testDeleteMissing},
		{"DeleteConcurrent", testDeleteConcurrent},
		{"RecreateAfterDelete", testRecreate},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, newStore(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newTenant builds a valid record through tenant.FromCreate with every field
// set away from its default, so a store that drops a field is caught.
func newTenant(t *testing.T, id string) *pb.Tenant {
	t.Helper()
	rec, err := tenant.FromCreate(&pb.CreateTenantRequest{
		TenantId: id, ReplicationFactor: 5, DefaultConsistency: "all",
		ConflictPolicy: tenant.PolicyLastWriteWins, MaxSiblings: 7, MaxValueBytes: 12345,
		ReadsPerSecond: 250, WritesPerSecond: 25,
	}, time.Now())
	require.NoError(t, err)
	return rec
}

func requireCode(t *testing.T, want pb.ErrorCode, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, status.CodeOf(err), "error: %v", err)
}

func requireEqual(t *testing.T, want, got *pb.Tenant) {
	t.Helper()
	require.True(t, proto.Equal(want, got), "want %v\ngot  %v", want, got)
}

func update(t *testing.T, rec *pb.Tenant, req *pb.UpdateTenantRequest) *pb.Tenant {
	t.Helper()
	req.TenantId = rec.GetTenantId()
	n, err := tenant.ApplyUpdate(rec, req, time.Now())
	require.NoError(t, err)
	return n
}

func u32(v uint32) *uint32 { return &v }

func testCreateGet(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	rec := newTenant(t, "acme")
	require.NoError(t, s.Create(ctx, rec))
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, rec, got)

	def, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: "defaults"}, time.Now())
	require.NoError(t, err)
	require.NoError(t, s.Create(ctx, def))
	got, err = s.Get(ctx, "defaults")
	require.NoError(t, err)
	requireEqual(t, def, got)
}

func testCreateDuplicate(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	rec := newTenant(t, "acme")
	require.NoError(t, s.Create(ctx, rec))
	other := newTenant(t, "acme")
	other.ReplicationFactor = 1
	requireCode(t, pb.ErrorCode_TENANT_EXISTS, s.Create(ctx, other))
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, rec, got) // the loser changed nothing
}

func testCreateInvalid(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	bad := newTenant(t, "acme")
	bad.ReplicationFactor = tenant.MaxReplicationFactor + 1
	requireCode(t, pb.ErrorCode_INVALID_REPLICATION_FACTOR, s.Create(ctx, bad))
	bad = newTenant(t, "acme")
	bad.TenantId = "not.valid"
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, s.Create(ctx, bad))
	_, err := s.Get(ctx, "acme")
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, err)
}

func testGetMissing(t *testing.T, s tenant.Store) {
	_, err := s.Get(ctxT(t), "nobody")
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, err)
}

func testGetInvalidID(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	for _, id := range []string{"", "a.b", "a*", "a>", "a b"} {
		_, err := s.Get(ctx, id)
		requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, err)
		requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, s.Delete(ctx, id))
	}
}

func testOwnership(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	rec := newTenant(t, "acme")
	want := proto.Clone(rec).(*pb.Tenant)
	require.NoError(t, s.Create(ctx, rec))
	rec.MaxSiblings = 999 // the store must not have kept our pointer
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, want, got)
	got.ReplicationFactor = 1 // nor hand out a shared one
	again, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, want, again)
}

func testUpdate(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	v1 := newTenant(t, "acme")
	require.NoError(t, s.Create(ctx, v1))

	v2 := update(t, v1, &pb.UpdateTenantRequest{ReplicationFactor: u32(3)})
	require.NoError(t, s.Update(ctx, v2))
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, v2, got)

	// A second update built from the stale v1 also claims version 2.
	stale := update(t, v1, &pb.UpdateTenantRequest{ReplicationFactor: u32(1)})
	requireCode(t, pb.ErrorCode_VERSION_CONFLICT, s.Update(ctx, stale))
	// Skipping a version is a conflict too.
	skip := update(t, update(t, v2, &pb.UpdateTenantRequest{}), &pb.UpdateTenantRequest{})
	requireCode(t, pb.ErrorCode_VERSION_CONFLICT, s.Update(ctx, skip))
	// Re-applying the update that already won is a conflict (stored is v2).
	requireCode(t, pb.ErrorCode_VERSION_CONFLICT, s.Update(ctx, v2))

	got, err = s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, v2, got)

	v3 := update(t, got, &pb.UpdateTenantRequest{MaxSiblings: u32(100)})
	require.NoError(t, s.Update(ctx, v3))
	got, err = s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, v3, got)

	bad := proto.Clone(v3).(*pb.Tenant)
	bad.Version++
	bad.MaxSiblings = 0
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, s.Update(ctx, bad))
}

func testUpdateMissing(t *testing.T, s tenant.Store) {
	rec := update(t, newTenant(t, "ghost"), &pb.UpdateTenantRequest{})
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, s.Update(ctxT(t), rec))
}

func testUpdateConcurrent(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	v1 := newTenant(t, "acme")
	require.NoError(t, s.Create(ctx, v1))

	const n = 10
	errs := make([]error, n)
	recs := make([]*pb.Tenant, n)
	for i := range recs {
		// Distinct payloads, so the test can tell which writer won.
		recs[i] = update(t, v1, &pb.UpdateTenantRequest{MaxSiblings: u32(uint32(100 + i))})
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Update(ctx, recs[i])
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "two concurrent updates from one version both won")
			winner = i
			continue
		}
		requireCode(t, pb.ErrorCode_VERSION_CONFLICT, err)
	}
	require.NotEqual(t, -1, winner, "no update won")
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, recs[winner], got)
}

func createN(t *testing.T, s tenant.Store, n int) []string {
	t.Helper()
	ctx := ctxT(t)
	ids := make([]string, n)
	// Created in reverse id order, so a store that lists in insertion order
	// fails.
	for i := range n {
		ids[i] = fmt.Sprintf("t-%03d", n-1-i)
		require.NoError(t, s.Create(ctx, newTenant(t, ids[i])))
	}
	sort.Strings(ids)
	return ids
}

func testListPaging(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	ids := createN(t, s, 25)

	var got []string
	var sizes []int
	token := ""
	for range 10 { // bounded: a store that never ends the list fails below
		page, next, err := s.List(ctx, 10, token)
		require.NoError(t, err)
		sizes = append(sizes, len(page))
		for _, rec := range page {
			got = append(got, rec.GetTenantId())
			require.NoError(t, tenant.Validate(rec))
		}
		if next == "" {
			break
		}
		token = next
	}
	require.Equal(t, []int{10, 10, 5}, sizes)
	require.Equal(t, ids, got)

	// Records on a page are complete, not just ids.
	page, _, err := s.List(ctx, 1, "")
	require.NoError(t, err)
	require.Len(t, page, 1)
	full, err := s.Get(ctx, page[0].GetTenantId())
	require.NoError(t, err)
	requireEqual(t, full, page[0])

	// An exact multiple of the page size ends with an empty token on the
	// last full page or with one trailing empty page; both are acceptable,
	// but the union must be exact.
	got = nil
	token = ""
	for range 10 {
		page, next, err := s.List(ctx, 5, token)
		require.NoError(t, err)
		for _, rec := range page {
			got = append(got, rec.GetTenantId())
		}
		if next == "" {
			break
		}
		token = next
	}
	require.Equal(t, ids, got)
}

func testListEmpty(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	page, next, err := s.List(ctx, 10, "")
	require.NoError(t, err)
	require.Empty(t, page)
	require.Empty(t, next)
	_, _, err = s.List(ctx, 10, "not a token!")
	requireCode(t, pb.ErrorCode_INVALID_ARGUMENT, err)
}

func testListPageSize(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	ids := createN(t, s, tenant.DefaultPageSize+5)
	page, next, err := s.List(ctx, 0, "")
	require.NoError(t, err)
	require.Len(t, page, tenant.DefaultPageSize)
	require.Equal(t, ids[tenant.DefaultPageSize-1], next)
	page, next, err = s.List(ctx, tenant.MaxPageSize+1, "")
	require.NoError(t, err)
	require.Len(t, page, len(ids)) // capped at 1000, which holds them all
	require.Empty(t, next)
}

func testDelete(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	createN(t, s, 3)
	require.NoError(t, s.Delete(ctx, "t-001"))
	_, err := s.Get(ctx, "t-001")
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, err)
	page, next, err := s.List(ctx, 10, "")
	require.NoError(t, err)
	require.Empty(t, next)
	var got []string
	for _, rec := range page {
		got = append(got, rec.GetTenantId())
	}
	require.Equal(t, []string{"t-000", "t-002"}, got)
	// An update of a deleted tenant finds nothing.
	rec := update(t, newTenant(t, "t-001"), &pb.UpdateTenantRequest{})
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, s.Update(ctx, rec))
}

func testDeleteMissing(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, s.Delete(ctx, "nobody"))
	require.NoError(t, s.Create(ctx, newTenant(t, "acme")))
	require.NoError(t, s.Delete(ctx, "acme"))
	requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, s.Delete(ctx, "acme"))
}

func testDeleteConcurrent(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	require.NoError(t, s.Create(ctx, newTenant(t, "acme")))
	const n = 8
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Delete(ctx, "acme")
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		requireCode(t, pb.ErrorCode_TENANT_NOT_FOUND, err)
	}
	require.Equal(t, 1, ok, "exactly one concurrent delete must succeed")
}

func testRecreate(t *testing.T, s tenant.Store) {
	ctx := ctxT(t)
	require.NoError(t, s.Create(ctx, newTenant(t, "acme")))
	require.NoError(t, s.Delete(ctx, "acme"))
	fresh, err := tenant.FromCreate(&pb.CreateTenantRequest{TenantId: "acme"}, time.Now())
	require.NoError(t, err)
	require.NoError(t, s.Create(ctx, fresh))
	got, err := s.Get(ctx, "acme")
	require.NoError(t, err)
	requireEqual(t, fresh, got)
	requireCode(t, pb.ErrorCode_TENANT_EXISTS, s.Create(ctx, fresh))
}
