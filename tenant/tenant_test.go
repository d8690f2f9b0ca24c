package tenant

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/pairdb/pairdb/quorum"
	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

var now = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }
func str(v string) *string { return &v }

func TestFromCreateDefaults(t *testing.T) {
	got, err := FromCreate(&pb.CreateTenantRequest{TenantId: "acme"}, now)
	require.NoError(t, err)
	require.Equal(t, "acme", got.GetTenantId())
	require.EqualValues(t, DefaultReplicationFactor, got.GetReplicationFactor())
	require.Equal(t, DefaultConsistency, got.GetDefaultConsistency())
	require.Equal(t, PolicySiblings, got.GetConflictPolicy())
	require.EqualValues(t, DefaultMaxSiblings, got.GetMaxSiblings())
	require.EqualValues(t, 1048576, got.GetMaxValueBytes())
	require.EqualValues(t, 1, got.GetVersion())
	// Truncated to microseconds so every backend round-trips it exactly.
	want := now.Truncate(time.Microsecond)
	require.True(t, got.GetCreatedAt().AsTime().Equal(want))
	require.True(t, got.GetUpdatedAt().AsTime().Equal(want))
	require.NotSame(t, got.GetCreatedAt(), got.GetUpdatedAt())
	require.Equal(t, quorum.Quorum, Level(got))
}

func TestFromCreateExplicitAndNormalised(t *testing.T) {
	got, err := FromCreate(&pb.CreateTenantRequest{
		TenantId: "a_B-9", ReplicationFactor: 5, DefaultConsistency: " ALL ",
		ConflictPolicy: "Last_Write_Wins", MaxSiblings: 3, MaxValueBytes: 42,
	}, now)
	require.NoError(t, err)
	require.EqualValues(t, 5, got.GetReplicationFactor())
	require.Equal(t, "all", got.GetDefaultConsistency())
	require.Equal(t, PolicyLastWriteWins, got.GetConflictPolicy())
	require.EqualValues(t, 3, got.GetMaxSiblings())
	require.EqualValues(t, 42, got.GetMaxValueBytes())
	require.Equal(t, quorum.All, Level(got))
}

func TestFromCreateBounds(t *testing.T) {
	base := func() *pb.CreateTenantRequest { return &pb.CreateTenantRequest{TenantId: "t"} }
	cases := []struct {
		name string
		mod  func(r *pb.CreateTenantRequest)
		code pb.ErrorCode // UNSPECIFIED = accepted
	}{
		{"rf min", func(r *pb.CreateTenantRequest) { r.ReplicationFactor = MinReplicationFactor }, 0},
		{"rf max", func(r *pb.CreateTenantRequest) { r.ReplicationFactor = MaxReplicationFactor }, 0},
		{"rf above", func(r *pb.CreateTenantRequest) { r.ReplicationFactor = MaxReplicationFactor + 1 }, pb.ErrorCode_INVALID_REPLICATION_FACTOR},
		{"siblings min", func(r *pb.CreateTenantRequest) { r.MaxSiblings = MinMaxSiblings }, 0},
		{"siblings max", func(r *pb.CreateTenantRequest) { r.MaxSiblings = MaxMaxSiblings }, 0},
		{"siblings above", func(r *pb.CreateTenantRequest) { r.MaxSiblings = MaxMaxSiblings + 1 }, pb.ErrorCode_INVALID_ARGUMENT},
		{"value min", func(r *pb.CreateTenantRequest) { r.MaxValueBytes = MinMaxValueBytes }, 0},
		{"value max", func(r *pb.CreateTenantRequest) { r.MaxValueBytes = MaxMaxValueBytes }, 0},
		{"value above", func(r *pb.CreateTenantRequest) { r.MaxValueBytes = MaxMaxValueBytes + 1 }, pb.ErrorCode_INVALID_ARGUMENT},
		{"consistency", func(r *pb.CreateTenantRequest) { r.DefaultConsistency = "most" }, pb.ErrorCode_INVALID_ARGUMENT},
		{"policy", func(r *pb.CreateTenantRequest) { r.ConflictPolicy = "first_write_wins" }, pb.ErrorCode_INVALID_ARGUMENT},
		{"empty id", func(r *pb.CreateTenantRequest) { r.TenantId = "" }, pb.ErrorCode_INVALID_ARGUMENT},
		{"id with dot", func(r *pb.CreateTenantRequest) { r.TenantId = "a.b" }, pb.ErrorCode_INVALID_ARGUMENT},
		{"id too long", func(r *pb.CreateTenantRequest) { r.TenantId = string(make([]byte, 65)) }, pb.ErrorCode_INVALID_ARGUMENT},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := base()
			c.mod(r)
			_, err := FromCreate(r, now)
			if c.code == pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Equal(t, c.code, status.CodeOf(err), "%v", err)
		})
	}
	_, err := FromCreate(nil, now)
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(err))
}

func TestApplyUpdate(t *testing.T) {
	orig, err := FromCreate(&pb.CreateTenantRequest{TenantId: "acme"}, now)
	require.NoError(t, err)
	snapshot := proto.Clone(orig)
	later := now.Add(time.Hour)

	got, err := ApplyUpdate(orig, &pb.UpdateTenantRequest{
		TenantId: "acme", ReplicationFactor: u32(5), DefaultConsistency: str("ONE"),
	}, later)
	require.NoError(t, err)
	require.True(t, proto.Equal(snapshot, orig), "ApplyUpdate must not modify its input")

	require.EqualValues(t, 5, got.GetReplicationFactor())
	require.Equal(t, "one", got.GetDefaultConsistency())
	// Unset fields are kept.
	require.Equal(t, orig.GetConflictPolicy(), got.GetConflictPolicy())
	require.Equal(t, orig.GetMaxSiblings(), got.GetMaxSiblings())
	require.Equal(t, orig.GetMaxValueBytes(), got.GetMaxValueBytes())
	require.EqualValues(t, 2, got.GetVersion())
	require.True(t, proto.Equal(orig.GetCreatedAt(), got.GetCreatedAt()))
	require.True(t, got.GetUpdatedAt().AsTime().Equal(later.Truncate(time.Microsecond)))
	require.NotSame(t, orig.GetCreatedAt(), got.GetCreatedAt())

	got2, err := ApplyUpdate(got, &pb.UpdateTenantRequest{
		TenantId: "acme", ConflictPolicy: str(PolicyLastWriteWins), MaxSiblings: u32(1), MaxValueBytes: u64(MaxMaxValueBytes),
		ExpectedVersion: 2,
	}, later)
	require.NoError(t, err)
	require.Equal(t, PolicyLastWriteWins, got2.GetConflictPolicy())
	require.EqualValues(t, 1, got2.GetMaxSiblings())
	require.EqualValues(t, MaxMaxValueBytes, got2.GetMaxValueBytes())
	require.EqualValues(t, 3, got2.GetVersion())
}

func TestApplyUpdateRejects(t *testing.T) {
	orig, err := FromCreate(&pb.CreateTenantRequest{TenantId: "acme"}, now)
	require.NoError(t, err)
	snapshot := proto.Clone(orig)
	cases := []struct {
		name string
		req  *pb.UpdateTenantRequest
		code pb.ErrorCode
	}{
		{"rf zero", &pb.UpdateTenantRequest{TenantId: "acme", ReplicationFactor: u32(0)}, pb.ErrorCode_INVALID_REPLICATION_FACTOR},
		{"rf above", &pb.UpdateTenantRequest{TenantId: "acme", ReplicationFactor: u32(MaxReplicationFactor + 1)}, pb.ErrorCode_INVALID_REPLICATION_FACTOR},
		{"siblings zero", &pb.UpdateTenantRequest{TenantId: "acme", MaxSiblings: u32(0)}, pb.ErrorCode_INVALID_ARGUMENT},
		{"value zero", &pb.UpdateTenantRequest{TenantId: "acme", MaxValueBytes: u64(0)}, pb.ErrorCode_INVALID_ARGUMENT},
		{"consistency empty", &pb.UpdateTenantRequest{TenantId: "acme", DefaultConsistency: str("")}, pb.ErrorCode_INVALID_ARGUMENT},
		{"policy", &pb.UpdateTenantRequest{TenantId: "acme", ConflictPolicy: str("x")}, pb.ErrorCode_INVALID_ARGUMENT},
		{"other tenant", &pb.UpdateTenantRequest{TenantId: "other"}, pb.ErrorCode_INVALID_ARGUMENT},
		{"stale expected version", &pb.UpdateTenantRequest{TenantId: "acme", ExpectedVersion: 7}, pb.ErrorCode_VERSION_CONFLICT},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ApplyUpdate(orig, c.req, now)
			require.Equal(t, c.code, status.CodeOf(err), "%v", err)
			require.True(t, proto.Equal(snapshot, orig))
		})
	}
}

func TestValidate(t *testing.T) {
	good, err := FromCreate(&pb.CreateTenantRequest{TenantId: "acme"}, now)
	require.NoError(t, err)
	require.NoError(t, Validate(good))

	mods := map[string]func(t *pb.Tenant){
		"upper-case consistency": func(t *pb.Tenant) { t.DefaultConsistency = "QUORUM" },
		"upper-case policy":      func(t *pb.Tenant) { t.ConflictPolicy = "SIBLINGS" },
		"version zero":           func(t *pb.Tenant) { t.Version = 0 },
		"no created_at":          func(t *pb.Tenant) { t.CreatedAt = nil },
		"no updated_at":          func(t *pb.Tenant) { t.UpdatedAt = nil },
		"rf zero":                func(t *pb.Tenant) { t.ReplicationFactor = 0 },
		"siblings zero":          func(t *pb.Tenant) { t.MaxSiblings = 0 },
		"value zero":             func(t *pb.Tenant) { t.MaxValueBytes = 0 },
	}
	for name, mod := range mods {
		t.Run(name, func(t *testing.T) {
			bad := proto.Clone(good).(*pb.Tenant)
			mod(bad)
			require.Error(t, Validate(bad))
		})
	}
	require.Error(t, Validate(nil))
}

func TestLevelFallsBackToQuorum(t *testing.T) {
	require.Equal(t, quorum.Quorum, Level(&pb.Tenant{DefaultConsistency: "bogus"}))
	require.Equal(t, quorum.One, Level(&pb.Tenant{DefaultConsistency: "one"}))
}

func TestPaging(t *testing.T) {
	require.Equal(t, DefaultPageSize, PageSize(0))
	require.Equal(t, DefaultPageSize, PageSize(-3))
	require.Equal(t, 7, PageSize(7))
	require.Equal(t, MaxPageSize, PageSize(MaxPageSize+1))
	require.NoError(t, CheckPageToken(""))
	require.NoError(t, CheckPageToken("acme"))
	require.Equal(t, pb.ErrorCode_INVALID_ARGUMENT, status.CodeOf(CheckPageToken("a.b")))
}
