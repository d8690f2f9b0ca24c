package keyspace

import (
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/require"
)

func TestValidateTenantID(t *testing.T) {
	for _, ok := range []string{"a", "default", "A-b_9", strings.Repeat("x", MaxTenantIDBytes)} {
		require.NoError(t, ValidateTenantID(ok), ok)
	}
	for _, bad := range []string{"", strings.Repeat("x", MaxTenantIDBytes+1), "a.b", "a*", "a>", "a b", "a:b", "é", "a\x00"} {
		err := ValidateTenantID(bad)
		require.Error(t, err, "%q", bad)
		require.True(t, errors.Is(err, ErrInvalid))
	}
}

func TestValidateKey(t *testing.T) {
	require.NoError(t, ValidateKey("k"))
	require.NoError(t, ValidateKey(strings.Repeat("k", MaxKeyBytes)))
	require.NoError(t, ValidateKey("key with spaces/and.dots:😀"))
	for _, bad := range []string{"", strings.Repeat("k", MaxKeyBytes+1), "\xff"} {
		err := ValidateKey(bad)
		require.Error(t, err)
		require.True(t, errors.Is(err, ErrInvalid))
	}
}

func TestHashSeparatesParts(t *testing.T) {
	// Without length prefixes these pairs would hash the same input.
	require.NotEqual(t, Hash("a", "bc"), Hash("ab", "c"))
	require.NotEqual(t, Hash("a:b", "c"), Hash("a", "b:c"))
	require.NotEqual(t, Hash("", "ab"), Hash("ab", ""))
	require.Equal(t, Hash("t", "k"), Hash("t", "k"))
}

// TestHashIsStable pins the placement hash: stored key layouts and ring
// positions depend on it, so it must never change between releases.
func TestHashIsStable(t *testing.T) {
	require.Equal(t, uint64(0xd44725ce72ebb34e), Hash("default", "hello"))
	// The documented input: uvarint(len) ‖ tenant ‖ uvarint(len) ‖ key.
	require.Equal(t, xxhash.Sum64([]byte("\x07default\x05hello")), Hash("default", "hello"))
}
