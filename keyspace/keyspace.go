// Package keyspace holds the rules both coordinators and storage nodes must
// agree on: what a tenant id and a key may be, and the stable hash that
// places a (tenant, key) pair on the ring. It is pure.
package keyspace

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/errors"
)

const (
	// MaxTenantIDBytes bounds tenant ids ([A-Za-z0-9_-]{1,64}).
	MaxTenantIDBytes = 64
	// MaxKeyBytes bounds keys (1 KiB, as upstream storage nodes did).
	MaxKeyBytes = 1024
)

// ErrInvalid marks every validation failure from this package.
var ErrInvalid = errors.New("invalid")

// ValidateTenantID checks a tenant id against [A-Za-z0-9_-]{1,64}. The id is
// also a NATS subject token, so nothing else may appear in it.
func ValidateTenantID(id string) error {
	if id == "" || len(id) > MaxTenantIDBytes {
		return errors.Mark(errors.Newf("tenant id must be 1 to %d characters, got %d", MaxTenantIDBytes, len(id)), ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return errors.Mark(errors.Newf("tenant id %q may contain only letters, digits, '_' and '-'", id), ErrInvalid)
		}
	}
	return nil
}

// ValidateKey checks that a key is non-empty UTF-8 of at most MaxKeyBytes.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errors.Mark(errors.New("key must not be empty"), ErrInvalid)
	case len(key) > MaxKeyBytes:
		return errors.Mark(errors.Newf("key is %d bytes; the limit is %d", len(key), MaxKeyBytes), ErrInvalid)
	case !utf8.ValidString(key):
		return errors.Mark(errors.New("key must be valid UTF-8"), ErrInvalid)
	}
	return nil
}

// ValidateTarget checks the tenant id and key a request names, and says
// which of the two is wrong.
func ValidateTarget(tenant, key string) error {
	if err := ValidateTenantID(tenant); err != nil {
		return errors.Wrap(err, "invalid tenant_id")
	}
	if err := ValidateKey(key); err != nil {
		return errors.Wrap(err, "invalid key")
	}
	return nil
}

// Hash places (tenant, key) on the ring. Both parts are length-prefixed, so
// no two distinct pairs share an input ("a:b"+"c" vs "a"+"b:c"). xxHash64 is a
// fixed, documented algorithm: the value is stable across processes and
// releases, which the on-disk key layout depends on.
func Hash(tenant, key string) uint64 {
	var buf [2 * binary.MaxVarintLen64]byte
	d := xxhash.New()
	n := binary.PutUvarint(buf[:], uint64(len(tenant)))
	_, _ = d.Write(buf[:n])
	_, _ = d.WriteString(tenant)
	n = binary.PutUvarint(buf[:], uint64(len(key)))
	_, _ = d.Write(buf[:n])
	_, _ = d.WriteString(key)
	return d.Sum64()
}
