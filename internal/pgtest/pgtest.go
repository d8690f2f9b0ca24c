// Package pgtest gives tests a real PostgreSQL database: the server named by
// PAIRDB_TEST_POSTGRES_URL, and a fresh schema per test so tests never see
// each other's rows. Without the variable the tests skip, naming it; in CI
// (CI=true) a missing database fails the run instead.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// EnvURL is the variable the PostgreSQL tests read.
const EnvURL = "PAIRDB_TEST_POSTGRES_URL"

// URL returns the server URL, or skips (fails in CI) when it is not set.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; CI must run the PostgreSQL tests (see .ci/run)", EnvURL)
		}
		t.Skipf("PostgreSQL tests skipped: set %s, for example %s=postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
			EnvURL, EnvURL)
	}
	return u
}

// Schema creates an empty schema for this test, drops it at cleanup, and
// returns a URL whose connections use it (search_path).
func Schema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	require.NoError(t, err, "connect to %s", EnvURL)
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			_ = c.Close(ctx)
		}
	})
	return WithSearchPath(t, base, schema)
}

// WithSearchPath returns u with its connections' search_path set.
func WithSearchPath(t testing.TB, u, schema string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	require.NoError(t, err, "parse %s", EnvURL)
	q := parsed.Query()
	q.Set("search_path", schema)
	parsed.RawQuery = q.Encode()
	return parsed.String()
}
