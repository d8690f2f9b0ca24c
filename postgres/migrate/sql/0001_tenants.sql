-- 0001_tenants: tenant records, the backing table of postgres/tenantpg.
--
-- Every bound below is a copy of a constant in tenant/tenant.go
-- (MinReplicationFactor ... MaxMaxValueBytes, the tenant id alphabet of
-- keyspace.ValidateTenantID). postgres/migrate/schema_test.go inserts rows at
-- min-1, min, max and max+1 of each bound and fails if the database and
-- tenant.Validate disagree, so the API can never again accept a value the
-- database rejects (upstream: RF 1..10 in the API, 1..5 in the CHECK).
--
-- Constraints are named so that a violation in the server log or in an error
-- message says which rule broke.
CREATE TABLE tenants (
    -- COLLATE "C": List pages with "ORDER BY tenant_id" and "tenant_id > token".
    -- Byte order is what every other store (and the conformance suite) uses;
    -- a linguistic collation (en_US.UTF-8 sorts '-' and '_' as ignorable)
    -- would make page boundaries depend on the server's locale.
    tenant_id           text COLLATE "C" NOT NULL
        CONSTRAINT tenants_pkey PRIMARY KEY
        CONSTRAINT tenants_tenant_id_format CHECK (tenant_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    replication_factor  integer NOT NULL
        CONSTRAINT tenants_replication_factor_range CHECK (replication_factor BETWEEN 1 AND 7),
    default_consistency text NOT NULL
        CONSTRAINT tenants_default_consistency_valid CHECK (default_consistency IN ('one', 'quorum', 'all')),
    conflict_policy     text NOT NULL
        CONSTRAINT tenants_conflict_policy_valid CHECK (conflict_policy IN ('siblings', 'last_write_wins')),
    max_siblings        integer NOT NULL
        CONSTRAINT tenants_max_siblings_range CHECK (max_siblings BETWEEN 1 AND 1000),
    max_value_bytes     bigint NOT NULL
        CONSTRAINT tenants_max_value_bytes_range CHECK (max_value_bytes BETWEEN 1 AND 4194304),
    -- No defaults on the timestamps and the version: the application sets
    -- them (tenant.FromCreate / tenant.ApplyUpdate) so that a record
    -- round-trips exactly; a DEFAULT now() would silently paper over a
    -- caller that forgot them.
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    version             bigint NOT NULL
        CONSTRAINT tenants_version_positive CHECK (version >= 1)
);

COMMENT ON TABLE tenants IS 'PairDB tenant records; written by postgres/tenantpg, bounds mirror tenant/tenant.go';
COMMENT ON COLUMN tenants.replication_factor IS 'N: replicas per key (tenant.MinReplicationFactor..MaxReplicationFactor)';
COMMENT ON COLUMN tenants.default_consistency IS 'read/write level used when a request names none';
COMMENT ON COLUMN tenants.version IS 'optimistic-concurrency version: an update to v must find v-1 stored';
