package engine

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/pairdb/pairdb/dvv"
	"github.com/pairdb/pairdb/keyspace"
)

func TestDataKeyRoundTrip(t *testing.T) {
	k := dataKey("tenant-1", 0x0102030405060708, "some/key\x00with nul")
	tenant, h, key, err := decodeDataKey(k)
	require.NoError(t, err)
	require.Equal(t, "tenant-1", tenant)
	require.Equal(t, uint64(0x0102030405060708), h)
	require.Equal(t, "some/key\x00with nul", key)

	_, _, _, err = decodeDataKey([]byte("m-meta"))
	require.Error(t, err)
	_, _, _, err = decodeDataKey([]byte("dabc\x00123"))
	require.Error(t, err, "a hash shorter than 8 bytes is truncated")
}

// TestTenantSpansAreContiguousAndDisjoint writes keys for tenants that are
// prefixes of one another and checks that each tenant's span holds exactly
// its own keys, in ring-hash order.
func TestTenantSpansAreContiguousAndDisjoint(t *testing.T) {
	e, err := Open(t.TempDir(), Options{Sync: false, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	defer func() { require.NoError(t, e.Close()) }()

	// "a" is a prefix of "ab" and "a-"; '-' (0x2d) and '0' sort below 'b',
	// and all of them sort above the 0x00 terminator.
	tenants := []string{"a", "ab", "a-", "a0", "b", "A", "_"}
	keys := []string{"k1", "k2", "k3", "x"}
	for _, tn := range tenants {
		for _, k := range keys {
			_, err := e.Apply(tn, k, nil, []byte(tn+"/"+k), false, dvv.Siblings, 0, 1, nil)
			require.NoError(t, err)
		}
	}

	for _, tn := range tenants {
		lo, hi := tenantSpan(tn)
		it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		require.NoError(t, err)
		var seen []string
		var prevHash uint64
		for it.First(); it.Valid(); it.Next() {
			gotTenant, h, key, err := decodeDataKey(it.Key())
			require.NoError(t, err)
			require.Equal(t, tn, gotTenant, "span of tenant %q leaked a key of %q", tn, gotTenant)
			require.Equal(t, keyspace.Hash(tn, key), h)
			require.GreaterOrEqual(t, h, prevHash, "keys of a tenant are in ring order")
			prevHash = h
			seen = append(seen, key)
		}
		require.NoError(t, it.Close())
		require.ElementsMatch(t, keys, seen, "tenant %q", tn)
	}

	// A whole-data scan visits each tenant as one run.
	lo, hi := dataSpan()
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	require.NoError(t, err)
	var runs []string // tenants in scan order, one entry per run
	var prev []byte
	for it.First(); it.Valid(); it.Next() {
		require.Negative(t, bytes.Compare(prev, it.Key()))
		prev = append(prev[:0], it.Key()...)
		tn, _, _, err := decodeDataKey(it.Key())
		require.NoError(t, err)
		if len(runs) == 0 || runs[len(runs)-1] != tn {
			require.NotContains(t, runs, tn, "tenant %q appears in two separate runs", tn)
			runs = append(runs, tn)
		}
	}
	require.NoError(t, it.Close())
	require.ElementsMatch(t, tenants, runs)
	require.Equal(t, []string{"A", "_", "a", "a-", "a0", "ab", "b"}, runs, "tenants sort bytewise")
}

// TestDataWithoutIncarnationIsRefused simulates lost metadata: minting a
// fresh incarnation over existing data is refused.
func TestDataWithoutIncarnationIsRefused(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, Options{Sync: true, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	_, err = e.Apply("t", "k", nil, []byte("v"), false, dvv.Siblings, 0, 1, nil)
	require.NoError(t, err)
	require.NoError(t, e.db.Delete(metaIncarnation, pebble.Sync))
	require.NoError(t, e.Close())

	_, err = Open(dir, Options{Sync: true, Logger: zaptest.NewLogger(t)})
	require.ErrorContains(t, err, "no incarnation")
}
