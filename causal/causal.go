// Package causal seals causal contexts into tokens the cluster can
// authenticate (DESIGN.md §5: "a context is accepted only if the cluster
// issued it"). A get, put or delete answers its version vector twice: as
// readable `vector_clock` entries for people, and as a `context` token,
// which is what a later write passes back. The token carries the clock and
// an HMAC over it, the tenant and the key, under a key only coordinators
// hold, so a client can pass back only clocks some replica really produced
// for that key: no counter it could make jump (to wrap, or to cover a dot an
// actor has not minted yet, which would silently drop that future write),
// and no actor that never existed.
//
// It is pure: no I/O, nothing of PairDB's; the key comes from the caller.
package causal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"github.com/cockroachdb/errors"
)

const (
	// KeyBytes is the length of a sealing key.
	KeyBytes = 32
	// MaxTokenBytes bounds a token: a clock of a thousand actors fits.
	MaxTokenBytes = 96 << 10

	version = 1
	macLen  = 16 // 128 bits of HMAC-SHA256
	domain  = "pairdb.context.v1\x00"
)

// ErrInvalid marks every token that does not open: forged, damaged,
// sealed for another tenant or key, or under another key.
var ErrInvalid = errors.New("context was not issued by this cluster")

// Sealer seals and opens tokens under one key. It is safe for concurrent
// use.
type Sealer struct {
	key   []byte
	keyID byte
}

// NewSealer returns a sealer for key (KeyBytes long). keyID travels in the
// token so that a later key can be introduced beside this one.
func NewSealer(key []byte, keyID byte) (*Sealer, error) {
	if len(key) != KeyBytes {
		return nil, errors.Newf("causal: sealing key must be %d bytes, got %d", KeyBytes, len(key))
	}
	return &Sealer{key: slices.Clone(key), keyID: keyID}, nil
}

// Seal returns the token of clock for (tenant, key). An empty clock seals
// to nil: "no context".
func (s *Sealer) Seal(tenant, key string, clock map[string]uint64) []byte {
	if len(clock) == 0 {
		return nil
	}
	actors := make([]string, 0, len(clock))
	for a := range clock {
		actors = append(actors, a)
	}
	slices.Sort(actors)
	b := make([]byte, 0, 2+len(actors)*24+macLen)
	b = append(b, version, s.keyID)
	b = binary.AppendUvarint(b, uint64(len(actors)))
	for _, a := range actors {
		b = binary.AppendUvarint(b, uint64(len(a)))
		b = append(b, a...)
		b = binary.AppendUvarint(b, clock[a])
	}
	return append(b, s.mac(tenant, key, b)...)
}

// Open checks token for (tenant, key) and returns its clock. nil or empty
// opens to an empty clock. Anything else that fails is ErrInvalid, with
// the reason.
func (s *Sealer) Open(tenant, key string, token []byte) (map[string]uint64, error) {
	if len(token) == 0 {
		return nil, nil
	}
	if len(token) > MaxTokenBytes {
		return nil, errors.Wrapf(ErrInvalid, "token is %d bytes; the largest is %d", len(token), MaxTokenBytes)
	}
	if len(token) < 2+1+macLen {
		return nil, errors.Wrap(ErrInvalid, "token is truncated")
	}
	body, mac := token[:len(token)-macLen], token[len(token)-macLen:]
	if body[0] != version || body[1] != s.keyID {
		return nil, errors.Wrapf(ErrInvalid, "token version %d, key %d: unknown", body[0], body[1])
	}
	if !hmac.Equal(mac, s.mac(tenant, key, body)) {
		return nil, errors.Wrap(ErrInvalid, "token does not match this tenant, key and cluster")
	}
	return decodeClock(body[2:])
}

func (s *Sealer) mac(tenant, key string, body []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(domain))
	m.Write([]byte(tenant))
	m.Write([]byte{0})
	m.Write([]byte(key))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)[:macLen]
}

// decodeClock reads what Seal wrote after the version and key bytes. The
// MAC has been checked, so malformed input here means a bug, but it is
// still parsed defensively.
func decodeClock(b []byte) (map[string]uint64, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errors.Wrap(ErrInvalid, "bad entry count")
	}
	b = b[k:]
	out := make(map[string]uint64, n)
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, errors.Wrap(ErrInvalid, "bad actor")
		}
		actor := string(b[k : k+int(l)])
		b = b[k+int(l):]
		c, k2 := binary.Uvarint(b)
		if k2 <= 0 {
			return nil, errors.Wrap(ErrInvalid, "bad counter")
		}
		b = b[k2:]
		out[actor] = c
	}
	if len(b) != 0 {
		return nil, errors.Wrap(ErrInvalid, "trailing bytes")
	}
	return out, nil
}
