package engine

import (
	"bytes"
	"encoding/binary"

	"github.com/cockroachdb/errors"
)

// On-disk key layout (DESIGN.md §7).
//
//	data:     'd' | tenant | 0x00 | hash (8 bytes, big-endian) | key
//	origin:   'o' | tenant | 0x00 | origin (see origin.go)
//	metadata: 'm' | name
//
// Pebble orders keys bytewise, so data sorts by tenant, then ring position,
// then key: one tenant, or one tenant's slice of the ring, is a single
// contiguous span that a scan, a range transfer or a DeleteRange can cover.
// The 0x00 after the tenant is what keeps tenant "a" apart from tenant "ab":
// tenant ids never contain 0x00 (keyspace.ValidateTenantID), and 0x00 sorts
// below every byte a tenant id may contain, so "a\x00…" < "ab\x00…" and the
// span ["da\x00", "da\x01") holds exactly tenant "a". The hash is big-endian so
// that byte order equals numeric ring order.
const (
	prefixData   byte = 'd'
	prefixMeta   byte = 'm'
	prefixOrigin byte = 'o'

	tenantTerminator byte = 0x00
	hashLen               = 8
)

// metaIncarnation holds this data dir's incarnation id.
var metaIncarnation = []byte{prefixMeta, 'i', 'n', 'c', 'a', 'r', 'n', 'a', 't', 'i', 'o', 'n'}

// dataKey encodes the storage key of (tenant, key) whose ring hash is h.
func dataKey(tenant string, h uint64, key string) []byte {
	b := make([]byte, 0, 1+len(tenant)+1+hashLen+len(key))
	b = append(b, prefixData)
	b = append(b, tenant...)
	b = append(b, tenantTerminator)
	b = binary.BigEndian.AppendUint64(b, h)
	return append(b, key...)
}

// tenantSpan returns [start, end) covering every data key of tenant.
func tenantSpan(tenant string) (start, end []byte) {
	start = append(append([]byte{prefixData}, tenant...), tenantTerminator)
	end = append(append([]byte{prefixData}, tenant...), tenantTerminator+1)
	return start, end
}

// dataSpan returns [start, end) covering every data key of every tenant.
func dataSpan() (start, end []byte) { return []byte{prefixData}, []byte{prefixData + 1} }

// decodeDataKey splits a data key into its parts; it is the inverse of
// dataKey and is used by scans that must report what they found.
func decodeDataKey(k []byte) (tenant string, h uint64, key string, err error) {
	if len(k) == 0 || k[0] != prefixData {
		return "", 0, "", errors.Newf("not a data key: %q", k)
	}
	rest := k[1:]
	i := bytes.IndexByte(rest, tenantTerminator)
	if i < 0 || len(rest) < i+1+hashLen {
		return "", 0, "", errors.Newf("truncated data key: %q", k)
	}
	tenant = string(rest[:i])
	rest = rest[i+1:]
	h = binary.BigEndian.Uint64(rest[:hashLen])
	return tenant, h, string(rest[hashLen:]), nil
}
