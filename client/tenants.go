package client

import (
	"context"

	pb "github.com/pairdb/pairdb/schemas/pairdbpb"
	"github.com/pairdb/pairdb/status"
)

// CreateTenant creates a tenant; zero fields take the server's defaults.
func (c *Client) CreateTenant(ctx context.Context, req *pb.CreateTenantRequest) (*pb.Tenant, error) {
	resp := new(pb.TenantResponse)
	err := c.call(ctx, c.subjects.Admin("tenants", "create"), req, resp)
	return resp.GetTenant(), err
}

// GetTenant reads a tenant.
func (c *Client) GetTenant(ctx context.Context, id string) (*pb.Tenant, error) {
	resp := new(pb.TenantResponse)
	err := c.call(ctx, c.subjects.Admin("tenants", "get"), &pb.GetTenantRequest{TenantId: id}, resp)
	return resp.GetTenant(), err
}

// UpdateTenant changes the fields set in req.
func (c *Client) UpdateTenant(ctx context.Context, req *pb.UpdateTenantRequest) (*pb.TenantResponse, error) {
	resp := new(pb.TenantResponse)
	return resp, c.call(ctx, c.subjects.Admin("tenants", "update"), req, resp)
}

// ListTenants returns one page of tenants and the token of the next ("" at
// the end).
func (c *Client) ListTenants(ctx context.Context, pageSize uint32, pageToken string) ([]*pb.Tenant, string, error) {
	resp := new(pb.ListTenantsResponse)
	err := c.call(ctx, c.subjects.Admin("tenants", "list"), &pb.ListTenantsRequest{PageSize: pageSize, PageToken: pageToken}, resp)
	return resp.GetTenants(), resp.GetNextPageToken(), err
}

// DeleteTenant removes a tenant record.
// DeleteTenant deletes a tenant and, on every storage node, its data: the
// response's MigrationId follows the removal (GetMigration). A tenant that
// still holds data is TENANT_NOT_EMPTY unless req.Force.
func (c *Client) DeleteTenant(ctx context.Context, req *pb.DeleteTenantRequest) (*pb.TenantResponse, error) {
	resp := new(pb.TenantResponse)
	return resp, c.call(ctx, c.subjects.Admin("tenants", "delete"), req, resp)
}

// IsCode reports whether err is a PairDB error with the given code.
func IsCode(err error, code pb.ErrorCode) bool { return status.Is(err, code) }

// AddNodes adds registered storage nodes to the ring (several only when the
// ring is empty); the response names the migration that moves the data.
func (c *Client) AddNodes(ctx context.Context, ids ...string) (*pb.NodeChangeResponse, error) {
	resp := new(pb.NodeChangeResponse)
	return resp, c.call(ctx, c.subjects.Admin("nodes", "add"), &pb.AddNodesRequest{NodeIds: ids}, resp)
}

// RemoveNode removes a storage node; force gives up on a dead one.
func (c *Client) RemoveNode(ctx context.Context, id string, force bool) (*pb.NodeChangeResponse, error) {
	resp := new(pb.NodeChangeResponse)
	return resp, c.call(ctx, c.subjects.Admin("nodes", "remove"), &pb.RemoveNodeRequest{NodeId: id, Force: force}, resp)
}

// ListNodes lists the storage nodes the ring log knows.
func (c *Client) ListNodes(ctx context.Context) (*pb.ListNodesResponse, error) {
	resp := new(pb.ListNodesResponse)
	return resp, c.call(ctx, c.subjects.Admin("nodes", "list"), &pb.ListNodesRequest{}, resp)
}

// GetMigration reads one migration's state and progress.
func (c *Client) GetMigration(ctx context.Context, id string) (*pb.Migration, error) {
	resp := new(pb.MigrationResponse)
	err := c.call(ctx, c.subjects.Admin("migrations", "get"), &pb.GetMigrationRequest{MigrationId: id}, resp)
	return resp.GetMigration(), err
}

// ListMigrations lists migrations, the running one first.
func (c *Client) ListMigrations(ctx context.Context) ([]*pb.Migration, error) {
	resp := new(pb.ListMigrationsResponse)
	err := c.call(ctx, c.subjects.Admin("migrations", "list"), &pb.ListMigrationsRequest{}, resp)
	return resp.GetMigrations(), err
}
