-- Per-tenant request rates (tenant.MaxRate bounds them; 0 is no limit, the
-- default, so existing tenants keep the behaviour they had).
ALTER TABLE tenants
    ADD COLUMN reads_per_second  integer NOT NULL DEFAULT 0
        CONSTRAINT tenants_reads_per_second_range CHECK (reads_per_second BETWEEN 0 AND 1000000),
    ADD COLUMN writes_per_second integer NOT NULL DEFAULT 0
        CONSTRAINT tenants_writes_per_second_range CHECK (writes_per_second BETWEEN 0 AND 1000000);

COMMENT ON COLUMN tenants.reads_per_second IS 'reads a second across the coordinators (0: no limit)';
COMMENT ON COLUMN tenants.writes_per_second IS 'writes a second across the coordinators (0: no limit)';
